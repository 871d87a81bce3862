// The float64 CPU reference of sparse_attention (the oracle of the GPU tests) against a naive
// dense attention under the boolean [tokens_q, tokens_kv] mask that the block mask spells out,
// and the half-precision helpers both rely on: conversions, random inputs, the error measure.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "templates/sparse_attention/attention_reference.h"
#include "templates/sparse_attention/block_mask.h"
#include "templates/common/half_precision.h"
#include "tests/support/gpu_test.h"
#include "tests/templates/permute_case.h"  // testing::Layout, Storage, make_storage

namespace sparsejit::templates {
namespace {

using testing::Layout;
constexpr double kInfinity = std::numeric_limits<double>::infinity();
constexpr HalfDtype kDtypes[] = {HalfDtype::bf16, HalfDtype::fp16};

// ---------------------------------------------------------------------------------------
// Half precision

std::uint16_t infinity_bits(HalfDtype dtype) { return dtype == HalfDtype::fp16 ? 0x7C00 : 0x7F80; }

// The value of a pattern from the textbook formula (not from the library):
// fp16 = (-1)^s * (e == 0 ? m * 2^-24 : (1024 + m) * 2^(e - 25)), 5-bit e, 10-bit m;
// bf16 = (-1)^s * (e == 0 ? m * 2^-133 : (128 + m) * 2^(e - 134)), 8-bit e, 7-bit m.
// Finite patterns only.
double textbook_value(std::uint16_t bits, HalfDtype dtype) {
  const bool fp16 = dtype == HalfDtype::fp16;
  const int mantissa_bits = fp16 ? 10 : 7;
  const int exponent = (bits & 0x7FFF) >> mantissa_bits;
  const int mantissa = bits & ((1 << mantissa_bits) - 1);
  const int bias = fp16 ? 15 : 127;
  const double magnitude =
      exponent == 0 ? std::ldexp(mantissa, 1 - bias - mantissa_bits)
                    : std::ldexp((1 << mantissa_bits) + mantissa, exponent - bias - mantissa_bits);
  return (bits & 0x8000) != 0 ? -magnitude : magnitude;
}

// Magnitude of pattern m (sign clear); the infinity pattern stands for the power of two just
// past the largest finite value, where round to nearest puts the overflow boundary.
double magnitude_value(std::uint16_t m, HalfDtype dtype) {
  if (m == infinity_bits(dtype)) return dtype == HalfDtype::fp16 ? 65536.0 : std::ldexp(1.0, 128);
  return textbook_value(m, dtype);
}

// Every pattern decodes to its textbook value; finite ones and infinities convert back to
// themselves (signed zeros and fp16 subnormals included); NaNs stay NaNs of the same sign.
TEST(HalfPrecision, EveryPatternDecodesExactlyAndRoundTrips) {
  for (HalfDtype dtype : kDtypes) {
    SCOPED_TRACE(std::string(to_string(dtype)));
    int nans = 0;
    for (std::uint32_t pattern = 0; pattern <= 0xFFFF; ++pattern) {
      const auto bits = static_cast<std::uint16_t>(pattern);
      const float value = half_bits_to_float(bits, dtype);
      const std::uint16_t magnitude = bits & 0x7FFF;
      if (magnitude > infinity_bits(dtype)) {
        ++nans;
        ASSERT_TRUE(std::isnan(value)) << std::hex << pattern;
        const std::uint16_t back = float_to_half_bits(value, dtype);
        ASSERT_GT(back & 0x7FFF, infinity_bits(dtype)) << std::hex << pattern << " -> " << back;
        ASSERT_EQ(back & 0x8000, bits & 0x8000);
        continue;
      }
      ASSERT_EQ(std::signbit(value), (bits & 0x8000) != 0) << std::hex << pattern;
      if (magnitude == infinity_bits(dtype))
        ASSERT_TRUE(std::isinf(value)) << std::hex << pattern;
      else
        ASSERT_EQ(static_cast<double>(value), textbook_value(bits, dtype)) << std::hex << pattern;
      ASSERT_EQ(float_to_half_bits(value, dtype), bits) << std::hex << pattern;
    }
    EXPECT_EQ(nans, dtype == HalfDtype::fp16 ? 2 * 1023 : 2 * 127);
  }
}

// For random floats over the whole range of each type (fp16: 2^-30..2^17, overflow and
// underflow included), the result is a nearest pattern, and on a tie the even one. Exact
// halfway points between every kind of neighbour are checked on purpose.
TEST(HalfPrecision, RoundsToNearestEven) {
  std::mt19937_64 generator = testing::fresh_generator();
  for (HalfDtype dtype : kDtypes) {
    SCOPED_TRACE(std::string(to_string(dtype)));
    const bool fp16 = dtype == HalfDtype::fp16;
    const std::uint16_t infinity = infinity_bits(dtype);
    std::uniform_int_distribution<std::uint32_t> exponent(fp16 ? 127 - 30 : 0, fp16 ? 127 + 16 : 254);
    std::uniform_int_distribution<std::uint32_t> mantissa(0, (1u << 23) - 1);
    for (int trial = 0; trial < 200000; ++trial) {
      const std::uint32_t sign = trial % 2 == 0 ? 0 : 0x80000000u;
      const float x = std::bit_cast<float>(sign | (exponent(generator) << 23) | mantissa(generator));
      const std::uint16_t h = float_to_half_bits(x, dtype);
      ASSERT_EQ((h & 0x8000) != 0, sign != 0) << x;
      const std::uint16_t m = h & 0x7FFF;
      ASSERT_LE(m, infinity) << x;
      const double a = std::fabs(static_cast<double>(x));
      const double error = std::fabs(a - magnitude_value(m, dtype));
      bool tie = false;
      for (int step : {-1, 1}) {
        if ((m == 0 && step < 0) || (m == infinity && step > 0)) continue;
        const double other = std::fabs(a - magnitude_value(static_cast<std::uint16_t>(m + step), dtype));
        ASSERT_LE(error, other) << x << " -> 0x" << std::hex << h << " is not a nearest pattern";
        tie = tie || error == other;
      }
      if (tie) {
        ASSERT_EQ(m % 2, 0) << x << " is a tie and 0x" << std::hex << h << " is odd";
      }
    }
    // Exact midpoints (exact in float): the even neighbour wins.
    std::uniform_int_distribution<int> pattern(0, infinity - 1);
    for (int trial = 0; trial < 20000; ++trial) {
      const auto low = static_cast<std::uint16_t>(trial < 2 ? (trial == 0 ? 0 : infinity - 1) : pattern(generator));
      const double midpoint = (magnitude_value(low, dtype) + magnitude_value(low + 1, dtype)) / 2;
      const auto x = static_cast<float>(midpoint);
      ASSERT_EQ(static_cast<double>(x), midpoint);
      const std::uint16_t even = low % 2 == 0 ? low : static_cast<std::uint16_t>(low + 1);
      ASSERT_EQ(float_to_half_bits(x, dtype), even) << "midpoint above 0x" << std::hex << low;
      ASSERT_EQ(float_to_half_bits(-x, dtype), even | 0x8000) << "midpoint above -0x" << std::hex << low;
    }
  }
  // Named cases.
  const auto fp16 = [](float x) { return float_to_half_bits(x, HalfDtype::fp16); };
  const auto bf16 = [](float x) { return float_to_half_bits(x, HalfDtype::bf16); };
  EXPECT_EQ(fp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00) << "tie 1 | 1+2^-10 goes to even 1";
  EXPECT_EQ(fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02) << "tie goes up to even";
  EXPECT_EQ(fp16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)), 0x3C01) << "above the tie";
  EXPECT_EQ(fp16(65519.0f), 0x7BFF);
  EXPECT_EQ(fp16(65520.0f), 0x7C00) << "65520 ties 65504 (odd) and 65536 (even: infinity)";
  EXPECT_EQ(fp16(-1e6f), 0xFC00);
  EXPECT_EQ(bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  EXPECT_EQ(bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  EXPECT_EQ(bf16(std::numeric_limits<float>::max()), 0x7F80) << "rounds past the top to infinity";
  EXPECT_EQ(bf16(-2.0f), 0xC000);
}

TEST(HalfPrecision, Fp16SubnormalsInfinitiesAndNaN) {
  const auto to_fp16 = [](float x) { return float_to_half_bits(x, HalfDtype::fp16); };
  const auto from_fp16 = [](std::uint16_t bits) { return half_bits_to_float(bits, HalfDtype::fp16); };
  const float smallest = std::ldexp(1.0f, -24);  // the smallest fp16 subnormal
  EXPECT_EQ(from_fp16(0x0001), smallest);
  EXPECT_EQ(from_fp16(0x03FF), 1023 * smallest);
  EXPECT_EQ(from_fp16(0x0400), std::ldexp(1.0f, -14));
  EXPECT_EQ(from_fp16(0x8001), -smallest);
  EXPECT_EQ(from_fp16(0x7BFF), 65504.0f);
  EXPECT_TRUE(std::signbit(from_fp16(0x8000)) && from_fp16(0x8000) == 0.0f);
  EXPECT_EQ(to_fp16(smallest), 0x0001);
  EXPECT_EQ(to_fp16(5 * smallest), 0x0005);
  EXPECT_EQ(to_fp16(smallest / 2), 0x0000) << "tie between 0 (even) and the smallest subnormal";
  EXPECT_EQ(to_fp16(-smallest / 2), 0x8000) << "keeps the sign of a zero";
  EXPECT_EQ(to_fp16(std::nextafter(smallest / 2, 1.0f)), 0x0001);
  EXPECT_EQ(to_fp16(1.5f * smallest), 0x0002) << "tie between 1 (odd) and 2";
  EXPECT_EQ(to_fp16(2.5f * smallest), 0x0002) << "tie between 2 (even) and 3";
  EXPECT_EQ(to_fp16(1023.5f * smallest), 0x0400) << "the largest subnormal rounds up into the normals";
  EXPECT_EQ(to_fp16(1e-10f), 0x0000);
  EXPECT_EQ(to_fp16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(to_fp16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(to_fp16(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_TRUE(std::isinf(from_fp16(0x7C00)) && from_fp16(0x7C00) > 0);
  EXPECT_TRUE(std::isinf(from_fp16(0xFC00)) && from_fp16(0xFC00) < 0);
  for (std::uint16_t nan : {0x7C01, 0x7E00, 0x7FFF, 0xFD00}) EXPECT_TRUE(std::isnan(from_fp16(nan))) << nan;
  const std::uint16_t nan = to_fp16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
  // A signalling NaN whose payload lies below the kept bits stays a NaN (not infinity), in both.
  const float signalling = std::bit_cast<float>(0x7F800001u);
  EXPECT_NE(to_fp16(signalling) & 0x03FF, 0);
  EXPECT_TRUE(std::isnan(half_bits_to_float(float_to_half_bits(signalling, HalfDtype::bf16),
                                            HalfDtype::bf16)));
}

// Values are normal(0, 1) * scale, rounded: none zero or infinite, about the right mean and
// spread; scales that cannot work are refused.
TEST(HalfPrecision, RandomHalfIsScaledNormalAndNeverZero) {
  std::mt19937_64 generator = testing::fresh_generator();
  for (HalfDtype dtype : kDtypes)
    for (float scale : {1.0f, 0.01f, 300.0f}) {
      SCOPED_TRACE(std::string(to_string(dtype)) + " scale " + std::to_string(scale));
      const std::vector<std::uint16_t> values = random_half(100000, dtype, generator, scale);
      ASSERT_EQ(values.size(), 100000u);
      double sum = 0, squares = 0;
      for (std::uint16_t bits : values) {
        const double x = half_bits_to_float(bits, dtype);
        ASSERT_NE(x, 0.0);
        ASSERT_TRUE(std::isfinite(x));
        sum += x;
        squares += x * x;
      }
      const double mean = sum / 1e5, deviation = std::sqrt(squares / 1e5 - mean * mean);
      EXPECT_NEAR(mean / scale, 0.0, 0.02);  // the standard error is 0.003
      EXPECT_NEAR(deviation / scale, 1.0, 0.02);
    }
  EXPECT_TRUE(random_half(0, HalfDtype::bf16, generator).empty());
  for (float bad : {0.0f, -1.0f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()})
    EXPECT_THROW(random_half(4, HalfDtype::bf16, generator, bad), std::invalid_argument) << bad;
  EXPECT_THROW(random_half(4, HalfDtype::fp16, generator, 1e-30f), std::invalid_argument) << "all underflow";
  EXPECT_THROW(random_half(4, HalfDtype::fp16, generator, 1e30f), std::invalid_argument) << "all overflow";
  EXPECT_EQ(random_half(4, HalfDtype::bf16, generator, 1e-30f).size(), 4u) << "bf16 has the range";
  EXPECT_EQ(to_string(HalfDtype::bf16), "bf16");
  EXPECT_EQ(to_string(HalfDtype::fp16), "fp16");
}

TEST(RelativeL2Error, MeasuresTheNormOfTheDifference) {
  const std::vector<double> reference = {3.0, 4.0, -kInfinity};
  EXPECT_EQ(relative_l2_error(reference, reference), 0.0);
  EXPECT_DOUBLE_EQ(relative_l2_error(std::vector<double>{3.0, 5.0, -kInfinity}, reference), 0.2);
  EXPECT_EQ(relative_l2_error(std::vector<double>{3.0, 4.0, 0.0}, reference), kInfinity)
      << "a finite value where -inf is expected";
  EXPECT_EQ(relative_l2_error(std::vector<double>{3.0, -kInfinity, -kInfinity}, reference), kInfinity);
  EXPECT_EQ(relative_l2_error(std::vector<double>{0.0, 0.0}, std::vector<double>{0.0, 0.0}), 0.0);
  EXPECT_EQ(relative_l2_error(std::vector<double>{0.0, 1e-9}, std::vector<double>{0.0, 0.0}), kInfinity);
  EXPECT_EQ(relative_l2_error(std::vector<double>{}, std::vector<double>{}), 0.0);
  EXPECT_THROW(relative_l2_error(std::vector<double>{1.0}, reference), std::invalid_argument);
}

// One NaN anywhere (an unwritten, poisoned output) makes the error NaN, which fails every
// bound, even an infinite one.
TEST(RelativeL2Error, NaNInTheOutputFailsEveryBound) {
  std::mt19937_64 generator = testing::fresh_generator();
  std::normal_distribution<double> normal;
  std::vector<double> reference(1000);
  for (double& x : reference) x = normal(generator);
  for (std::size_t position : {std::size_t{0}, std::size_t{999},
                               std::uniform_int_distribution<std::size_t>(0, 999)(generator)}) {
    std::vector<double> actual = reference;
    actual[position] = std::numeric_limits<double>::quiet_NaN();
    const double error = relative_l2_error(actual, reference);
    EXPECT_TRUE(std::isnan(error)) << position;
    EXPECT_FALSE(error <= 1e-2);
    EXPECT_FALSE(error <= kInfinity);
    EXPECT_TRUE(std::isnan(relative_l2_error(reference, actual))) << "NaN in the reference too";
  }
}

// ---------------------------------------------------------------------------------------
// Attention

// One of Q, K, V: `stored` holds it in `storage` (the padding holds random values too, so a
// reader that strays into it gets a wrong result); `logical` holds the same values decoded,
// [batch, heads, tokens, head_dim] contiguous, for the naive side.
struct Tensor {
  testing::Storage storage;
  std::vector<std::uint16_t> stored;
  std::vector<double> logical;
};

Tensor make_tensor(Layout layout, int batch, int heads, int tokens, int head_dim, int padding,
                   HalfDtype dtype, std::mt19937_64& generator) {
  Tensor t;
  t.storage = testing::make_storage(layout, testing::PermuteShape{batch, heads, tokens, head_dim, 1}, padding);
  t.stored = random_half(t.storage.elements, dtype, generator);
  const std::vector<std::uint16_t> values =
      random_half(static_cast<std::size_t>(batch) * heads * tokens * head_dim, dtype, generator);
  t.logical.resize(values.size());
  std::size_t i = 0;
  for (long long b = 0; b < batch; ++b)
    for (long long h = 0; h < heads; ++h)
      for (long long n = 0; n < tokens; ++n)
        for (long long d = 0; d < head_dim; ++d, ++i) {
          t.stored[static_cast<std::size_t>(b * t.storage.batch_stride + h * t.storage.head_stride +
                                            n * t.storage.token_stride + d)] = values[i];
          t.logical[i] = half_bits_to_float(values[i], dtype);
        }
  return t;
}

struct AttentionCase {
  int batch = 2, heads = 3, tokens_q = 1, tokens_kv = 1, head_dim = 64;
  HalfDtype dtype = HalfDtype::bf16;
  Layout layout = Layout::bhnd;
  int padding = 0;
  float softmax_scale = 0.125f;
  Tensor q, k, v;

  std::string name() const {
    return "B" + std::to_string(batch) + " H" + std::to_string(heads) + " Nq" + std::to_string(tokens_q) +
           " Nkv" + std::to_string(tokens_kv) + " D" + std::to_string(head_dim) + " " +
           std::string(to_string(dtype)) + " " + testing::layout_name(layout) + " pad" + std::to_string(padding);
  }

  // Host params over this case's tensors; o, lse and the mask pointers stay null (the
  // reference takes the mask separately).
  SparseAttentionParams params() const {
    SparseAttentionParams p{};
    p.q = q.stored.data();
    p.k = k.stored.data();
    p.v = v.stored.data();
    p.q_batch_stride = q.storage.batch_stride;
    p.q_head_stride = q.storage.head_stride;
    p.q_token_stride = q.storage.token_stride;
    p.k_batch_stride = k.storage.batch_stride;
    p.k_head_stride = k.storage.head_stride;
    p.k_token_stride = k.storage.token_stride;
    p.v_batch_stride = v.storage.batch_stride;
    p.v_head_stride = v.storage.head_stride;
    p.v_token_stride = v.storage.token_stride;
    p.batch = batch;
    p.heads = heads;
    p.tokens_q = tokens_q;
    p.tokens_kv = tokens_kv;
    p.softmax_scale = softmax_scale;
    return p;
  }
};

// A case with fresh random Q, K, V and a softmax scale of (0.5..1.5) / sqrt(head_dim).
AttentionCase make_case(int tokens_q, int tokens_kv, int head_dim, HalfDtype dtype, Layout layout,
                        int padding, std::mt19937_64& generator) {
  AttentionCase c;
  c.tokens_q = tokens_q;
  c.tokens_kv = tokens_kv;
  c.head_dim = head_dim;
  c.dtype = dtype;
  c.layout = layout;
  c.padding = padding;
  c.softmax_scale = static_cast<float>(std::uniform_real_distribution<double>(0.5, 1.5)(generator) /
                                       std::sqrt(static_cast<double>(head_dim)));
  c.q = make_tensor(layout, c.batch, c.heads, tokens_q, head_dim, padding, dtype, generator);
  c.k = make_tensor(layout, c.batch, c.heads, tokens_kv, head_dim, padding, dtype, generator);
  c.v = make_tensor(layout, c.batch, c.heads, tokens_kv, head_dim, padding, dtype, generator);
  return c;
}

// allowed[((b * H + h) * Nq + n) * Nkv + j]: whether query n may see key j, written out from
// the mask format (attention_params.h) pair by pair, straight from the raw arrays.
std::vector<char> boolean_mask(const BlockMask& mask, int tokens_q, int tokens_kv) {
  std::vector<char> allowed(static_cast<std::size_t>(mask.batch) * mask.heads * tokens_q * tokens_kv, 0);
  for (int b = 0; b < mask.batch; ++b)
    for (int h = 0; h < mask.heads; ++h)
      for (int qb = 0; qb < mask.q_blocks; ++qb) {
        const int row = (b * mask.heads + h) * mask.q_blocks + qb;
        for (int i = 0; i < mask.count[static_cast<std::size_t>(row)]; ++i) {
          const std::size_t entry = static_cast<std::size_t>(row) * mask.max_kv_blocks + i;
          const int kb = mask.index[entry];
          for (int n = qb * mask.block_q; n < std::min((qb + 1) * mask.block_q, tokens_q); ++n)
            for (int j = kb * mask.block_kv; j < std::min((kb + 1) * mask.block_kv, tokens_kv); ++j) {
              if (mask.fine_n != 0) {
                const int query_subtile = (n - qb * mask.block_q) / 16;
                const int key_subtile = (j - kb * mask.block_kv) / mask.fine_n;
                const int bit = query_subtile * (mask.block_kv / mask.fine_n) + key_subtile;
                if (((mask.fine_bits[entry] >> bit) & 1u) == 0) continue;
              }
              allowed[((static_cast<std::size_t>(b) * mask.heads + h) * tokens_q + n) * tokens_kv + j] = 1;
            }
        }
      }
  return allowed;
}

// Plain dense attention in float64 over the logical tensors: every score computed, disallowed
// ones set to -inf, then softmax. A row with no allowed key: O = 0, LSE = -inf.
AttentionReference naive_attention(const AttentionCase& c, const std::vector<char>& allowed) {
  const std::size_t Nq = c.tokens_q, Nkv = c.tokens_kv, D = c.head_dim;
  AttentionReference out;
  out.o.assign(c.batch * c.heads * Nq * D, 0.0);
  out.lse.assign(c.batch * c.heads * Nq, -kInfinity);
  std::vector<double> scores(Nkv);
  for (std::size_t bh = 0; bh < static_cast<std::size_t>(c.batch * c.heads); ++bh)
    for (std::size_t n = 0; n < Nq; ++n) {
      double max_score = -kInfinity;
      for (std::size_t j = 0; j < Nkv; ++j) {
        double dot = 0;
        for (std::size_t d = 0; d < D; ++d)
          dot += c.q.logical[(bh * Nq + n) * D + d] * c.k.logical[(bh * Nkv + j) * D + d];
        scores[j] = allowed[(bh * Nq + n) * Nkv + j] ? dot * static_cast<double>(c.softmax_scale) : -kInfinity;
        max_score = std::max(max_score, scores[j]);
      }
      if (max_score == -kInfinity) continue;
      double sum = 0;
      std::vector<double> numerator(D, 0.0);
      for (std::size_t j = 0; j < Nkv; ++j) {
        const double weight = std::exp(scores[j] - max_score);  // 0 for disallowed keys
        sum += weight;
        for (std::size_t d = 0; d < D; ++d) numerator[d] += weight * c.v.logical[(bh * Nkv + j) * D + d];
      }
      for (std::size_t d = 0; d < D; ++d) out.o[(bh * Nq + n) * D + d] = numerator[d] / sum;
      out.lse[bh * Nq + n] = max_score + std::log(sum);
    }
  return out;
}

// O and LSE within 1e-12 relative L2 of the expected ones, -inf LSE exactly where expected.
void expect_matches(const AttentionReference& actual, const AttentionReference& expected) {
  ASSERT_EQ(actual.o.size(), expected.o.size());
  ASSERT_EQ(actual.lse.size(), expected.lse.size());
  EXPECT_LT(relative_l2_error(actual.o, expected.o), 1e-12);
  EXPECT_LT(relative_l2_error(actual.lse, expected.lse), 1e-12);
  for (std::size_t i = 0; i < expected.lse.size(); ++i)
    ASSERT_EQ(std::isinf(actual.lse[i]), std::isinf(expected.lse[i])) << "row " << i;
}

std::size_t finite_rows(const AttentionReference& result) {
  return static_cast<std::size_t>(
      std::count_if(result.lse.begin(), result.lse.end(), [](double x) { return std::isfinite(x); }));
}

class SparseAttentionReference
    : public ::testing::TestWithParam<std::tuple<int, HalfDtype, Layout>> {};

// Ragged shapes (q and kv lengths differ, 1 included), mixed block sizes, every fine_n the
// blocks allow (and none), a fifth of the rows empty, padded and unpadded strides.
TEST_P(SparseAttentionReference, MatchesNaiveDenseAttentionUnderTheMask) {
  const auto [head_dim, dtype, layout] = GetParam();
  std::mt19937_64 generator = testing::fresh_generator();
  struct Shape {
    int tokens_q, tokens_kv, block_q, block_kv;
  };
  int cases = 0;
  for (const Shape s : {Shape{1, 7, 64, 64}, Shape{7, 1, 128, 64}, Shape{37, 200, 64, 128},
                        Shape{200, 37, 128, 64}, Shape{200, 200, 64, 64}, Shape{130, 260, 128, 128}})
    for (int fine_n : {0, 8, 16, 32}) {
      if (fine_n != 0 && !fine_granularity_valid(s.block_q, s.block_kv, fine_n)) continue;
      const int padding = cases % 2 == 0 ? 0 : 3;
      const AttentionCase c = make_case(s.tokens_q, s.tokens_kv, head_dim, dtype, layout, padding, generator);
      const BlockMask mask = with_empty_rows(
          random_block_mask(c.batch, c.heads, s.tokens_q, s.tokens_kv, s.block_q, s.block_kv, 0.5, generator,
                            true, fine_n, 0.5),
          0.2, generator);
      SCOPED_TRACE(c.name() + " blocks " + std::to_string(s.block_q) + "x" + std::to_string(s.block_kv) +
                   " fine_n " + std::to_string(fine_n));
      const AttentionReference expected = naive_attention(c, boolean_mask(mask, s.tokens_q, s.tokens_kv));
      // Tiny cases may lose their few tokens to fine bits; the others surely attend somewhere.
      if (s.tokens_q >= 37 && s.tokens_kv >= 37) {
        EXPECT_GT(finite_rows(expected), 0u) << "the case attends to something";
      }
      EXPECT_LT(finite_rows(expected), expected.lse.size()) << "the case has empty rows";
      expect_matches(sparse_attention_reference(c.params(), dtype, head_dim, mask), expected);
      ++cases;
    }
  EXPECT_GE(cases, 18);
}

// At density 1 without fine bits the sparse reference is plain dense attention.
TEST_P(SparseAttentionReference, FullDensityIsDenseAttention) {
  const auto [head_dim, dtype, layout] = GetParam();
  std::mt19937_64 generator = testing::fresh_generator();
  for (auto [tokens_q, tokens_kv, block] : {std::tuple{37, 200, 64}, {200, 37, 128}, {1, 129, 128}}) {
    const AttentionCase c = make_case(tokens_q, tokens_kv, head_dim, dtype, layout, 1, generator);
    SCOPED_TRACE(c.name());
    const BlockMask mask = random_block_mask(c.batch, c.heads, tokens_q, tokens_kv, block, block, 1.0, generator);
    const std::vector<char> everything(static_cast<std::size_t>(c.batch * c.heads * tokens_q * tokens_kv), 1);
    const AttentionReference expected = naive_attention(c, everything);
    EXPECT_EQ(finite_rows(expected), expected.lse.size());
    expect_matches(sparse_attention_reference(c.params(), dtype, head_dim, mask), expected);
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllCases, SparseAttentionReference,
    ::testing::Combine(::testing::Values(64, 96, 128), ::testing::ValuesIn(kDtypes),
                       ::testing::Values(Layout::bhnd, Layout::bnhd)),
    [](const auto& info) {
      return "D" + std::to_string(std::get<0>(info.param)) + "_" + std::string(to_string(std::get<1>(info.param))) +
             "_" + testing::layout_name(std::get<2>(info.param));
    });

// Rows of query blocks with count 0 are exactly 0 with LSE -inf; the others are not; a mask
// with nothing kept gives zeros and -inf everywhere.
TEST(SparseAttentionReferenceEmptyRows, WriteZerosAndMinusInfinity) {
  std::mt19937_64 generator = testing::fresh_generator();
  const AttentionCase c = make_case(200, 150, 96, HalfDtype::fp16, Layout::bnhd, 0, generator);
  const BlockMask mask =
      with_empty_rows(random_block_mask(2, 3, 200, 150, 64, 64, 0.4, generator), 0.5, generator);
  const AttentionReference result = sparse_attention_reference(c.params(), c.dtype, c.head_dim, mask);
  std::size_t empty_queries = 0;
  for (int b = 0; b < 2; ++b)
    for (int h = 0; h < 3; ++h)
      for (int n = 0; n < 200; ++n) {
        const std::size_t row = (static_cast<std::size_t>(b) * 3 + h) * 200 + n;
        const bool empty = mask.count[mask.row(b, h, n / 64)] == 0;
        empty_queries += empty;
        double norm = 0;
        for (int d = 0; d < 96; ++d) norm += std::fabs(result.o[row * 96 + d]);
        if (empty) {
          EXPECT_EQ(norm, 0.0) << "row " << row;
          EXPECT_EQ(result.lse[row], -kInfinity) << "row " << row;
        } else {
          EXPECT_GT(norm, 0.0) << "row " << row;
          EXPECT_TRUE(std::isfinite(result.lse[row])) << "row " << row;
        }
      }
  EXPECT_GT(empty_queries, 0u);
  const BlockMask nothing = random_block_mask(2, 3, 200, 150, 64, 64, 0.0, generator);
  const AttentionReference none = sparse_attention_reference(c.params(), c.dtype, c.head_dim, nothing);
  EXPECT_EQ(std::count(none.o.begin(), none.o.end(), 0.0), static_cast<std::ptrdiff_t>(none.o.size()));
  EXPECT_EQ(std::count(none.lse.begin(), none.lse.end(), -kInfinity), static_cast<std::ptrdiff_t>(none.lse.size()));
}

// Fine words with every sub-tile set keep the whole pair: the result equals block mode bit
// for bit; clearing sub-tiles changes it.
TEST(SparseAttentionReferenceFineBits, AllBitsSetEqualsBlockMode) {
  std::mt19937_64 generator = testing::fresh_generator();
  const AttentionCase c = make_case(150, 300, 128, HalfDtype::bf16, Layout::bhnd, 0, generator);
  const BlockMask fine = random_block_mask(2, 3, 150, 300, 64, 128, 0.6, generator, true, 16, 1.0);
  BlockMask block = fine;
  block.fine_n = 0;
  block.fine_bits.clear();
  const AttentionReference with_bits = sparse_attention_reference(c.params(), c.dtype, c.head_dim, fine);
  EXPECT_EQ(with_bits.o, sparse_attention_reference(c.params(), c.dtype, c.head_dim, block).o);
  BlockMask thinned = fine;
  for (std::uint64_t& word : thinned.fine_bits) word &= 0x5555555555555555ull;
  EXPECT_GT(relative_l2_error(sparse_attention_reference(c.params(), c.dtype, c.head_dim, thinned).o, with_bits.o),
            1e-3);
}

// One query block's reference, computed sub-tile by sub-tile on threads, is exactly that
// block's rows of the whole reference: first, middle and ragged last blocks, fine bits of every
// granularity the blocks allow, both layouts with padded strides.
TEST(QueryBlockReference, IsTheBlocksRowsOfTheWholeReference) {
  std::mt19937_64 generator = testing::fresh_generator();
  for (const Layout layout : {Layout::bhnd, Layout::bnhd})
    for (const auto& [block_q, block_kv, fine_n] : {std::tuple{64, 128, 16}, std::tuple{128, 64, 8},
                                                    std::tuple{128, 128, 32}, std::tuple{64, 64, 0}}) {
      const AttentionCase c = make_case(300, 333, 64, HalfDtype::bf16, layout, 3, generator);
      const BlockMask mask = random_block_mask(2, 3, 300, 333, block_q, block_kv, 0.6, generator, true, fine_n, 0.5);
      const AttentionReference whole = sparse_attention_reference(c.params(), c.dtype, c.head_dim, mask);
      for (const auto& [b, h, q_block] : {std::tuple{0, 0, 0}, std::tuple{1, 1, mask.q_blocks / 2},
                                          std::tuple{1, 2, mask.q_blocks - 1}}) {
        const int first_row = q_block * block_q, rows = std::min(block_q, 300 - first_row);
        const std::size_t offset = ((static_cast<std::size_t>(b) * 3 + h) * 300 + first_row) * 64;
        const std::vector<double> expected(whole.o.begin() + static_cast<long>(offset),
                                           whole.o.begin() + static_cast<long>(offset + rows * 64));
        EXPECT_EQ(query_block_reference(c.params(), c.dtype, c.head_dim, mask, b, h, q_block), expected)
            << c.name() << " blocks " << block_q << "x" << block_kv << " fine " << fine_n << " (b, h, qb) = ("
            << b << ", " << h << ", " << q_block << ")";
      }
      EXPECT_THROW(query_block_reference(c.params(), c.dtype, c.head_dim, mask, 0, 3, 0), std::invalid_argument);
      EXPECT_THROW(query_block_reference(c.params(), c.dtype, c.head_dim, mask, 0, 0, mask.q_blocks),
                   std::invalid_argument);
    }
}

// The comparison with the naive side can fail: dropping one kept block of one row gives an
// error far above the bound.
TEST(SparseAttentionReferenceSensitivity, OneDroppedBlockFailsTheComparison) {
  std::mt19937_64 generator = testing::fresh_generator();
  const AttentionCase c = make_case(100, 300, 64, HalfDtype::fp16, Layout::bhnd, 0, generator);
  const BlockMask mask = random_block_mask(2, 3, 100, 300, 64, 64, 0.6, generator);
  BlockMask dropped = mask;
  const std::size_t row = std::uniform_int_distribution<std::size_t>(0, dropped.count.size() - 1)(generator);
  dropped.count[row] -= 1;  // 3 of 5 blocks kept: one goes
  const AttentionReference actual = sparse_attention_reference(c.params(), c.dtype, c.head_dim, mask);
  EXPECT_GT(relative_l2_error(actual.o, naive_attention(c, boolean_mask(dropped, 100, 300)).o), 1e-4);
  EXPECT_LT(relative_l2_error(actual.o, naive_attention(c, boolean_mask(mask, 100, 300)).o), 1e-12);
}

TEST(SparseAttentionReferenceErrors, RejectsBadInputsWithTheReason) {
  std::mt19937_64 generator = testing::fresh_generator();
  const AttentionCase c = make_case(37, 70, 64, HalfDtype::bf16, Layout::bhnd, 0, generator);
  const BlockMask mask = random_block_mask(2, 3, 37, 70, 64, 64, 0.5, generator);
  const auto message = [&](const SparseAttentionParams& p, int head_dim, const BlockMask& m) -> std::string {
    try {
      sparse_attention_reference(p, HalfDtype::bf16, head_dim, m);
      return "";
    } catch (const std::invalid_argument& error) {
      return error.what();
    }
  };
  EXPECT_EQ(message(c.params(), 64, mask), "");
  EXPECT_EQ(message(c.params(), 0, mask), "sparse_attention_reference: head_dim = 0 must be positive");
  SparseAttentionParams p = c.params();
  p.k = nullptr;
  EXPECT_EQ(message(p, 64, mask), "sparse_attention_reference: k is null");
  p = c.params();
  p.tokens_q = 0;
  EXPECT_EQ(message(p, 64, mask),
            "sparse_attention_reference: batch, heads, tokens_q, tokens_kv = 2, 3, 0, 70 must all be positive");
  p = c.params();
  p.heads = 2;
  EXPECT_EQ(message(p, 64, mask),
            "sparse_attention_reference: the mask is for batch 2 x heads 3, the params for 2 x 2");
  p = c.params();
  p.tokens_kv = 200;  // 4 key blocks, the mask has 2
  EXPECT_EQ(message(p, 64, mask), "block mask: kv_blocks = 2, expected ceil(tokens_kv 200 / block_kv 64) = 4");
  BlockMask bad = mask;
  bad.count[mask.row(0, 2, 0)] = 3;
  EXPECT_EQ(message(c.params(), 64, bad),
            "block mask: count[b=0, h=2, qb=0] = 3 is outside 0..1 (max_kv_blocks = 1, kv_blocks = 2)");
}

}  // namespace
}  // namespace sparsejit::templates
