// attention_quality without a GPU: the float64 references on small odd sizes against cases
// worked out by hand and against the softmax's own invariants, the descriptor's space and
// validation, and NVRTC compiles of a stratified subset for sm_80 and sm_90.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "jit/nvrtc_compiler.h"
#include "templates/attention_quality/attention_quality_family.h"
#include "templates/attention_quality/attention_quality_reference.h"
#include "templates/sparse_attention/attention_family.h"
#include "tests/support/gpu_test.h"

namespace sparsejit::templates {
namespace {

constexpr int kHopperShared = 227 * 1024;

// [B, N, H, D] storage, the layout the models write.
BlockMassParams bnhd_mass_params(const std::vector<std::uint16_t>& q, const std::vector<std::uint16_t>& k, int batch,
                                 int heads, int tokens_q, int tokens_kv, int head_dim) {
  BlockMassParams p{};
  p.q = q.data();
  p.k = k.data();
  p.q_batch_stride = static_cast<long long>(tokens_q) * heads * head_dim;
  p.k_batch_stride = static_cast<long long>(tokens_kv) * heads * head_dim;
  p.q_head_stride = p.k_head_stride = head_dim;
  p.q_token_stride = p.k_token_stride = static_cast<long long>(heads) * head_dim;
  p.batch = batch;
  p.heads = heads;
  p.tokens_q = tokens_q;
  p.tokens_kv = tokens_kv;
  p.softmax_scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  return p;
}

// Q = 0: every row's softmax is uniform, so a pair's mass is (rows in qb) x (keys in kb) / N.
TEST(BlockMassReference, UniformRowsGiveAreaShares) {
  const int tokens_q = 37, tokens_kv = 29, head_dim = 8;
  std::mt19937_64 generator = testing::fresh_generator();
  const std::vector<std::uint16_t> q(2u * tokens_q * head_dim, 0);
  const std::vector<std::uint16_t> k = random_half(2u * tokens_kv * head_dim, HalfDtype::bf16, generator);
  const BlockMassParams p = bnhd_mass_params(q, k, 1, 2, tokens_q, tokens_kv, head_dim);
  const BlockMassReference ref = block_mass_reference(p, HalfDtype::bf16, head_dim, 16, 8);
  ASSERT_EQ(ref.mass.size(), 2u * 3 * 4);  // QB = ceil(37 / 16), KB = ceil(29 / 8)
  for (int h = 0; h < 2; ++h)
    for (int qb = 0; qb < 3; ++qb)
      for (int kb = 0; kb < 4; ++kb) {
        const int rows = std::min(16, tokens_q - qb * 16), keys = std::min(8, tokens_kv - kb * 8);
        EXPECT_NEAR(ref.mass[(h * 3 + qb) * 4 + kb], static_cast<double>(rows) * keys / tokens_kv, 1e-12);
      }
  for (double lse : ref.lse) EXPECT_NEAR(lse, std::log(29.0), 1e-12);
}

// Two keys, one query, head dim 1, by hand: s = q k * scale with scale = 1.
TEST(BlockMassReference, TwoKeysByHand) {
  const std::vector<std::uint16_t> q = {float_to_half_bits(2.0f, HalfDtype::fp16)};
  const std::vector<std::uint16_t> k = {float_to_half_bits(1.0f, HalfDtype::fp16),
                                        float_to_half_bits(-0.5f, HalfDtype::fp16)};
  BlockMassParams p = bnhd_mass_params(q, k, 1, 1, 1, 2, 1);
  p.softmax_scale = 1.0f;
  const BlockMassReference ref = block_mass_reference(p, HalfDtype::fp16, 1, 1, 1);
  const double first = std::exp(2.0) / (std::exp(2.0) + std::exp(-1.0));
  ASSERT_EQ(ref.mass.size(), 2u);
  EXPECT_NEAR(ref.mass[0], first, 1e-12);
  EXPECT_NEAR(ref.mass[1], 1.0 - first, 1e-12);
  EXPECT_NEAR(ref.lse[0], std::log(std::exp(2.0) + std::exp(-1.0)), 1e-12);
}

// Random inputs at odd sizes: each query block's masses sum to its number of rows.
TEST(BlockMassReference, RowsSumToOneOnOddSizes) {
  std::mt19937_64 generator = testing::fresh_generator();
  const int batch = 2, heads = 3, tokens_q = 45, tokens_kv = 53, head_dim = 24;
  const auto q = random_half(static_cast<std::size_t>(batch) * heads * tokens_q * head_dim, HalfDtype::bf16, generator, 2.f);
  const auto k = random_half(static_cast<std::size_t>(batch) * heads * tokens_kv * head_dim, HalfDtype::bf16, generator, 2.f);
  const BlockMassParams p = bnhd_mass_params(q, k, batch, heads, tokens_q, tokens_kv, head_dim);
  const BlockMassReference ref = block_mass_reference(p, HalfDtype::bf16, head_dim, 16, 7);
  const int q_blocks = 3, kv_blocks = 8;
  ASSERT_EQ(ref.mass.size(), static_cast<std::size_t>(batch) * heads * q_blocks * kv_blocks);
  for (int slice = 0; slice < batch * heads; ++slice)
    for (int qb = 0; qb < q_blocks; ++qb) {
      double sum = 0.0;
      for (int kb = 0; kb < kv_blocks; ++kb) sum += ref.mass[(slice * q_blocks + qb) * kv_blocks + kb];
      EXPECT_NEAR(sum, std::min(16, tokens_q - qb * 16), 1e-9);
    }
}

TEST(BlockMassReference, RefusesBadArguments) {
  const std::vector<std::uint16_t> data(64, 0);
  BlockMassParams p = bnhd_mass_params(data, data, 1, 1, 8, 8, 8);
  EXPECT_THROW(block_mass_reference(p, HalfDtype::bf16, 0, 16, 16), std::invalid_argument);
  EXPECT_THROW(block_mass_reference(p, HalfDtype::bf16, 8, 0, 16), std::invalid_argument);
  p.k = nullptr;
  EXPECT_THROW(block_mass_reference(p, HalfDtype::bf16, 8, 16, 16), std::invalid_argument);
}

// Two rows of head dim 2, by hand: errors (1, -1) and (0, 0.5) against (2, 0) and (1, 1).
TEST(OutputErrorReference, SumsByHand) {
  const HalfDtype dtype = HalfDtype::fp16;
  const auto bits = [dtype](std::initializer_list<float> values) {
    std::vector<std::uint16_t> out;
    for (float value : values) out.push_back(float_to_half_bits(value, dtype));
    return out;
  };
  const std::vector<std::uint16_t> o = bits({3, -1, 1, 1.5}), reference = bits({2, 0, 1, 1});
  const std::vector<float> lse = {-1.f, 0.f}, lse_reference = {0.f, 0.f};
  OutputErrorParams p{};
  p.o = o.data();
  p.o_reference = reference.data();
  p.o_batch_stride = p.o_head_stride = 4;
  p.o_token_stride = 2;
  p.lse = lse.data();
  p.lse_reference = lse_reference.data();
  p.batch = p.heads = 1;
  p.tokens = 2;
  const std::vector<double> sums = output_error_reference(p, dtype, 2);
  ASSERT_EQ(sums.size(), 3u);
  EXPECT_DOUBLE_EQ(sums[0], 1.0 + 1.0 + 0.0 + 0.25);
  EXPECT_DOUBLE_EQ(sums[1], 4.0 + 0.0 + 1.0 + 1.0);
  EXPECT_NEAR(sums[2], std::exp(-1.0) + 1.0, 1e-12);
  p.lse = nullptr;
  EXPECT_THROW(output_error_reference(p, dtype, 2), std::invalid_argument);
}

TEST(AttentionQualitySpace, EveryPointIsValidAndDistinct) {
  const std::vector<jit::KernelSpec> space = AttentionQualityFamily().enumerate(jit::Target::parse("sm_90"));
  EXPECT_EQ(space.size(), 24u + 6u);  // block_mass: dtype x head dim x 2 x 2 blocks; output_error: dtype x head dim
  std::set<std::string> keys;
  for (const jit::KernelSpec& spec : space) {
    EXPECT_EQ(spec.family, "attention_quality");
    keys.insert(spec.request.cache_key());
  }
  EXPECT_EQ(keys.size(), space.size());
  BlockMassConfig bad;
  bad.head_dim = 80;
  EXPECT_NE(block_mass_config_problem(bad, kHopperShared).find("head dim 80"), std::string::npos);
  bad = {};
  bad.block_kv = 32;
  EXPECT_NE(block_mass_config_problem(bad, kHopperShared).find("64 or 128"), std::string::npos);
  EXPECT_NE(block_mass_config_problem({}, 48 * 1024).find("shared memory"), std::string::npos);
  EXPECT_EQ(output_error_chunks(1), 1);
  EXPECT_EQ(output_error_chunks(kOutputErrorRows + 1), 2);
}

TEST(AttentionQualityValidate, RefusesBadParamsWithTheReason) {
  alignas(16) static char memory[64];
  BlockMassParams p{};
  p.q = p.k = memory;
  p.q_token_stride = p.k_token_stride = 128;
  p.lse = p.mass = reinterpret_cast<float*>(memory);
  p.batch = p.heads = 1;
  p.tokens_q = p.tokens_kv = 100;
  p.softmax_scale = 0.125f;
  const BlockMassConfig config;
  EXPECT_NO_THROW(AttentionQualityFamily::validate(config, p, kHopperShared));
  const auto expect_refused = [&](const auto& call, const std::string& words) {
    try {
      call();
      ADD_FAILURE() << "expected a refusal mentioning '" << words << "'";
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find(words), std::string::npos) << error.what();
    }
  };
  const auto mass_refused = [&](BlockMassParams bad, const std::string& words) {
    expect_refused([&] { AttentionQualityFamily::validate(config, bad, kHopperShared); }, words);
  };
  BlockMassParams bad = p;
  bad.k = memory + 2;
  mass_refused(bad, "k: the pointer and the token stride");
  bad = p;
  bad.batch = 3;
  bad.q_batch_stride = 100 * 128 + 2;
  mass_refused(bad, "q: the batch stride (12802 elements) must be a multiple of 16 bytes");
  bad = p;
  bad.tokens_kv = 0;
  mass_refused(bad, "tokens must be positive");
  bad = p;
  bad.softmax_scale = -1.f;
  mass_refused(bad, "softmax_scale");
  bad = p;
  bad.lse = nullptr;
  mass_refused(bad, "lse is null");

  OutputErrorParams e{};
  e.o = e.o_reference = memory;
  e.o_token_stride = 128;
  e.lse = e.lse_reference = reinterpret_cast<float*>(memory);
  e.partials = reinterpret_cast<double*>(memory);
  e.batch = e.heads = 1;
  e.tokens = 100;
  EXPECT_NO_THROW(AttentionQualityFamily::validate(OutputErrorConfig{}, e));
  OutputErrorParams bad_error = e;
  bad_error.o_reference = nullptr;
  expect_refused([&] { AttentionQualityFamily::validate(OutputErrorConfig{}, bad_error); }, "o_reference is null");
  bad_error = e;
  bad_error.partials = nullptr;
  expect_refused([&] { AttentionQualityFamily::validate(OutputErrorConfig{}, bad_error); }, "partials is null");
  expect_refused([&] { AttentionQualityFamily::validate(OutputErrorConfig{HalfDtype::bf16, 72}, e); }, "head dim 72");
}

// Every head dim, both block sizes on both sides, both dtypes at least once; output_error
// for both dtypes.
TEST(AttentionQualityCompile, StratifiedSubsetCompilesToCubins) {
  const std::vector<BlockMassConfig> masses = {{HalfDtype::bf16, 128, 128, 128},
                                               {HalfDtype::fp16, 64, 64, 128},
                                               {HalfDtype::bf16, 96, 128, 64}};
  for (const char* arch : {"sm_80", "sm_90"}) {
    const jit::Target target = jit::Target::parse(arch);
    std::vector<jit::KernelSpec> specs;
    for (const BlockMassConfig& config : masses) {
      ASSERT_EQ(block_mass_config_problem(config, max_shared_bytes_for(target)), "");
      specs.push_back(AttentionQualityFamily::render_block_mass(config, target));
    }
    specs.push_back(AttentionQualityFamily::render_output_error({HalfDtype::bf16, 128}, target));
    specs.push_back(AttentionQualityFamily::render_output_error({HalfDtype::fp16, 64}, target));
    for (const jit::KernelSpec& spec : specs) {
      SCOPED_TRACE(spec.label + " " + arch);
      const jit::CompiledBinary binary = jit::compile(spec.request);
      EXPECT_GT(binary.cubin.size(), 1000u);
      EXPECT_EQ(binary.lowered_names.count(spec.name_expression), 1u);
    }
  }
}

}  // namespace
}  // namespace sparsejit::templates
