#include "templates/block_score/block_score_reference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace sparsejit::templates {

std::vector<double> pool_tiles_reference(const void* data, long long batch_stride, long long head_stride,
                                         long long token_stride, int batch, int heads, int tokens,
                                         int head_dim, int tile, HalfDtype dtype) {
  const auto* elements = static_cast<const std::uint16_t*>(data);
  const int tiles = (tokens + tile - 1) / tile;
  const auto D = static_cast<std::size_t>(head_dim);
  std::vector<double> pooled(static_cast<std::size_t>(batch) * heads * tiles * D, 0.0);
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < tiles; ++i) {
        double* mean = pooled.data() + ((static_cast<std::size_t>(b) * heads + h) * tiles + i) * D;
        const int first = i * tile, last = std::min(first + tile, tokens);
        for (int n = first; n < last; ++n) {
          const std::uint16_t* row = elements + b * batch_stride + h * head_stride + n * token_stride;
          for (std::size_t d = 0; d < D; ++d) mean[d] += half_bits_to_float(row[d], dtype);
        }
        for (std::size_t d = 0; d < D; ++d) mean[d] /= static_cast<double>(last - first);
      }
  return pooled;
}

BlockScoreReference block_score_reference(const BlockScoreParams& p, HalfDtype dtype, int head_dim, int tile,
                                          int block_q, int block_kv) {
  const auto fail = [](const std::string& why) {
    throw std::invalid_argument("block_score_reference: " + why);
  };
  if (p.q == nullptr || p.k == nullptr) fail(p.q == nullptr ? "q is null" : "k is null");
  if (p.batch < 1 || p.heads < 1 || p.tokens_q < 1 || p.tokens_kv < 1)
    fail("batch, heads, tokens_q and tokens_kv must be positive");
  if (head_dim < 1 || tile < 1) fail("head_dim and tile must be positive");
  if (block_q < tile || block_q % tile != 0 || block_kv < tile || block_kv % tile != 0)
    fail("block sizes " + std::to_string(block_q) + "x" + std::to_string(block_kv) +
         " must be multiples of the tile " + std::to_string(tile));

  BlockScoreReference result;
  result.pooled_q = pool_tiles_reference(p.q, p.q_batch_stride, p.q_head_stride, p.q_token_stride, p.batch,
                                         p.heads, p.tokens_q, head_dim, tile, dtype);
  result.pooled_k = pool_tiles_reference(p.k, p.k_batch_stride, p.k_head_stride, p.k_token_stride, p.batch,
                                         p.heads, p.tokens_kv, head_dim, tile, dtype);
  const int tiles_q = (p.tokens_q + tile - 1) / tile, tiles_k = (p.tokens_kv + tile - 1) / tile;
  const int q_blocks = (p.tokens_q + block_q - 1) / block_q, kv_blocks = (p.tokens_kv + block_kv - 1) / block_kv;
  const int rows_per_block = block_q / tile, cols_per_block = block_kv / tile;
  const auto D = static_cast<std::size_t>(head_dim);
  result.tile_lse.assign(static_cast<std::size_t>(p.batch) * p.heads * tiles_q, 0.0);
  result.scores.assign(static_cast<std::size_t>(p.batch) * p.heads * q_blocks * kv_blocks, 0.0);

  std::vector<double> logits(static_cast<std::size_t>(tiles_k));
  for (int b = 0; b < p.batch; ++b)
    for (int h = 0; h < p.heads; ++h) {
      const std::size_t slice = static_cast<std::size_t>(b) * p.heads + h;
      const double* q = result.pooled_q.data() + slice * tiles_q * D;
      const double* k = result.pooled_k.data() + slice * tiles_k * D;
      for (int i = 0; i < tiles_q; ++i) {
        double max_logit = -std::numeric_limits<double>::infinity();
        for (int j = 0; j < tiles_k; ++j) {
          double dot = 0.0;
          for (std::size_t d = 0; d < D; ++d) dot += q[i * D + d] * k[j * D + d];
          logits[j] = dot * p.softmax_scale;
          max_logit = std::max(max_logit, logits[j]);
        }
        double sum = 0.0;
        for (int j = 0; j < tiles_k; ++j) sum += std::exp(logits[j] - max_logit);
        const double lse = max_logit + std::log(sum);
        result.tile_lse[slice * tiles_q + i] = lse;
        double* score_row = result.scores.data() + (slice * q_blocks + i / rows_per_block) * kv_blocks;
        for (int j = 0; j < tiles_k; ++j) score_row[j / cols_per_block] += std::exp(logits[j] - lse);
      }
    }
  return result;
}

}  // namespace sparsejit::templates
