#include "templates/attention_quality/attention_quality_reference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace sparsejit::templates {
namespace {

// Row n of head (b, h) of a 16-bit tensor, as doubles.
void read_row(const void* data, long long batch_stride, long long head_stride, long long token_stride, int b, int h,
              int n, int head_dim, HalfDtype dtype, double* row) {
  const auto* elements = static_cast<const std::uint16_t*>(data) + b * batch_stride + h * head_stride +
                         static_cast<long long>(n) * token_stride;
  for (int d = 0; d < head_dim; ++d) row[d] = half_bits_to_float(elements[d], dtype);
}

}  // namespace

BlockMassReference block_mass_reference(const BlockMassParams& p, HalfDtype dtype, int head_dim, int block_q,
                                        int block_kv) {
  const auto fail = [](const std::string& why) { throw std::invalid_argument("block_mass_reference: " + why); };
  if (p.q == nullptr || p.k == nullptr) fail(p.q == nullptr ? "q is null" : "k is null");
  if (p.batch < 1 || p.heads < 1 || p.tokens_q < 1 || p.tokens_kv < 1)
    fail("batch, heads, tokens_q and tokens_kv must be positive");
  if (head_dim < 1 || block_q < 1 || block_kv < 1) fail("head_dim and the block sizes must be positive");

  const int q_blocks = (p.tokens_q + block_q - 1) / block_q, kv_blocks = (p.tokens_kv + block_kv - 1) / block_kv;
  const auto D = static_cast<std::size_t>(head_dim);
  BlockMassReference result;
  result.lse.assign(static_cast<std::size_t>(p.batch) * p.heads * p.tokens_q, 0.0);
  result.mass.assign(static_cast<std::size_t>(p.batch) * p.heads * q_blocks * kv_blocks, 0.0);
  std::vector<double> keys(static_cast<std::size_t>(p.tokens_kv) * D), query(D), logits(p.tokens_kv);
  for (int b = 0; b < p.batch; ++b)
    for (int h = 0; h < p.heads; ++h) {
      for (int j = 0; j < p.tokens_kv; ++j)
        read_row(p.k, p.k_batch_stride, p.k_head_stride, p.k_token_stride, b, h, j, head_dim, dtype, &keys[j * D]);
      const std::size_t slice = static_cast<std::size_t>(b) * p.heads + h;
      for (int i = 0; i < p.tokens_q; ++i) {
        read_row(p.q, p.q_batch_stride, p.q_head_stride, p.q_token_stride, b, h, i, head_dim, dtype, query.data());
        double maximum = -std::numeric_limits<double>::infinity();
        for (int j = 0; j < p.tokens_kv; ++j) {
          double dot = 0.0;
          for (std::size_t d = 0; d < D; ++d) dot += query[d] * keys[j * D + d];
          logits[j] = dot * static_cast<double>(p.softmax_scale);
          maximum = std::max(maximum, logits[j]);
        }
        double sum = 0.0;
        for (int j = 0; j < p.tokens_kv; ++j) sum += std::exp(logits[j] - maximum);
        const double lse = maximum + std::log(sum);
        result.lse[slice * p.tokens_q + i] = lse;
        double* mass_row = &result.mass[(slice * q_blocks + i / block_q) * kv_blocks];
        for (int j = 0; j < p.tokens_kv; ++j) mass_row[j / block_kv] += std::exp(logits[j] - lse);
      }
    }
  return result;
}

std::vector<double> output_error_reference(const OutputErrorParams& p, HalfDtype dtype, int head_dim) {
  const auto fail = [](const std::string& why) { throw std::invalid_argument("output_error_reference: " + why); };
  if (p.o == nullptr || p.o_reference == nullptr || p.lse == nullptr || p.lse_reference == nullptr)
    fail("o, o_reference, lse and lse_reference must not be null");
  if (p.batch < 1 || p.heads < 1 || p.tokens < 1 || head_dim < 1) fail("sizes must be positive");
  const auto D = static_cast<std::size_t>(head_dim);
  std::vector<double> sums(static_cast<std::size_t>(p.batch) * p.heads * 3, 0.0);
  std::vector<double> actual(D), expected(D);
  for (int b = 0; b < p.batch; ++b)
    for (int h = 0; h < p.heads; ++h) {
      const std::size_t slice = static_cast<std::size_t>(b) * p.heads + h;
      double* out = &sums[slice * 3];
      for (int n = 0; n < p.tokens; ++n) {
        read_row(p.o, p.o_batch_stride, p.o_head_stride, p.o_token_stride, b, h, n, head_dim, dtype, actual.data());
        read_row(p.o_reference, p.o_batch_stride, p.o_head_stride, p.o_token_stride, b, h, n, head_dim, dtype,
                 expected.data());
        for (std::size_t d = 0; d < D; ++d) {
          out[0] += (actual[d] - expected[d]) * (actual[d] - expected[d]);
          out[1] += expected[d] * expected[d];
        }
        const std::size_t row = slice * p.tokens + n;
        out[2] += std::exp(static_cast<double>(p.lse[row]) - static_cast<double>(p.lse_reference[row]));
      }
    }
  return sums;
}

}  // namespace sparsejit::templates
