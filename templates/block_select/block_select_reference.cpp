#include "templates/block_select/block_select_reference.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "templates/common/ceil_div.h"
#include "templates/common/half_precision.h"

namespace sparsejit::templates {
namespace {

// Real tokens of the tile starting at first_token inside [from, from + width), over the
// tile's real tokens.
double share_of_tile(int first_token, int tile, int tokens, int from, int width) {
  const int real = std::min(tile, tokens - first_token);
  const int inside = std::min({first_token + tile, tokens, from + width}) - std::max(first_token, from);
  return inside > 0 ? static_cast<double>(inside) / real : 0.0;
}

std::vector<double> pooled_row(const void* pooled, HalfDtype dtype, long long row, int head_dim) {
  const auto* elements = static_cast<const std::uint16_t*>(pooled) + row * head_dim;
  std::vector<double> values(static_cast<std::size_t>(head_dim));
  for (int d = 0; d < head_dim; ++d) values[static_cast<std::size_t>(d)] = half_bits_to_float(elements[d], dtype);
  return values;
}

}  // namespace

std::vector<double> fine_subtile_masses(const BlockSelectParams& p, const BlockSelectConfig& c, int b, int h,
                                        int qb, int kb) {
  if (c.fine_n <= 0) throw std::invalid_argument("fine_subtile_masses: the config has no fine bits");
  const int tiles_q = ceil_div(p.tokens_q, c.tile), tiles_k = ceil_div(p.tokens_kv, c.tile);
  const long long slice = static_cast<long long>(b) * p.heads + h;
  const int key_subtiles = c.block_kv / c.fine_n;
  std::vector<double> masses(static_cast<std::size_t>(fine_subtiles(c.block_q, c.block_kv, c.fine_n)), 0.0);
  for (int i = qb * c.block_q / c.tile; i < std::min((qb + 1) * c.block_q / c.tile, tiles_q); ++i) {
    const std::vector<double> q = pooled_row(p.pooled_q, c.dtype, slice * tiles_q + i, c.head_dim);
    const double lse = p.tile_lse[slice * tiles_q + i];
    for (int j = kb * c.block_kv / c.tile; j < std::min((kb + 1) * c.block_kv / c.tile, tiles_k); ++j) {
      const std::vector<double> k = pooled_row(p.pooled_k, c.dtype, slice * tiles_k + j, c.head_dim);
      const double probability =
          std::exp(std::inner_product(q.begin(), q.end(), k.begin(), 0.0) * p.softmax_scale - lse);
      for (std::size_t s = 0; s < masses.size(); ++s) {
        const int qs = static_cast<int>(s) / key_subtiles, ks = static_cast<int>(s) % key_subtiles;
        masses[s] += probability *
                     share_of_tile(i * c.tile, c.tile, p.tokens_q, qb * c.block_q + qs * 16, 16) *
                     share_of_tile(j * c.tile, c.tile, p.tokens_kv, kb * c.block_kv + ks * c.fine_n, c.fine_n);
      }
    }
  }
  return masses;
}

std::uint64_t fine_word_for(const std::vector<double>& masses, double share) {
  std::vector<int> order(masses.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return masses[a] > masses[b]; });
  double total = 0.0;
  for (double mass : masses) total += mass;
  std::uint64_t word = 0;
  double before = 0.0;
  for (std::size_t rank = 0; rank < order.size(); ++rank) {
    if (rank > 0 && before >= share * total) break;
    word |= std::uint64_t{1} << order[rank];
    before += masses[static_cast<std::size_t>(order[rank])];
  }
  return word;
}

BlockMask block_select_reference(const BlockSelectParams& p, const BlockSelectConfig& c) {
  BlockSelectFamily::validate(c, p);
  if (p.top_k_per_head != nullptr)
    for (int h = 0; h < p.heads; ++h)
      if (p.top_k_per_head[h] < 1 || p.top_k_per_head[h] > p.top_k)
        throw std::invalid_argument("block_select_reference: top_k_per_head[" + std::to_string(h) + "] = " +
                                    std::to_string(p.top_k_per_head[h]) + " is outside 1.." +
                                    std::to_string(p.top_k) + " (top_k)");
  BlockMask mask;
  mask.batch = p.batch;
  mask.heads = p.heads;
  mask.q_blocks = ceil_div(p.tokens_q, c.block_q);
  mask.kv_blocks = ceil_div(p.tokens_kv, c.block_kv);
  mask.max_kv_blocks = p.max_kv_blocks;
  mask.block_q = c.block_q;
  mask.block_kv = c.block_kv;
  mask.fine_n = c.fine_n;
  const std::size_t rows = static_cast<std::size_t>(p.batch) * p.heads * mask.q_blocks;
  mask.count.assign(rows, 0);
  mask.index.assign(rows * p.max_kv_blocks, -1);
  if (c.fine_n > 0) mask.fine_bits.assign(rows * p.max_kv_blocks, 0);
  const int KB = mask.kv_blocks;
  const std::uint64_t full_word = fine_subtiles(c.block_q, c.block_kv, c.fine_n) == 64
                                      ? ~std::uint64_t{0}
                                      : (std::uint64_t{1} << fine_subtiles(c.block_q, c.block_kv, c.fine_n)) - 1;

  std::vector<int> order(static_cast<std::size_t>(KB));
  for (int b = 0; b < p.batch; ++b)
    for (int h = 0; h < p.heads; ++h)
      for (int qb = 0; qb < mask.q_blocks; ++qb) {
        const std::size_t row = mask.row(b, h, qb);
        const float* scores = p.scores + row * KB;
        const int diagonal = std::min(static_cast<int>(static_cast<long long>(qb) * c.block_q / c.block_kv), KB - 1);
        const auto always = [&](int kb) {
          return (p.first_block_by_score == 0 && kb == 0) || kb == diagonal || kb >= KB - p.text_blocks;
        };
        // Non-positive (or NaN) scores rank as 0, like the kernel's keys.
        const auto rank_score = [&](int kb) { return scores[kb] > 0.f ? static_cast<double>(scores[kb]) : 0.0; };
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int x, int y) {
          if (always(x) != always(y)) return always(x);
          return !always(x) && rank_score(x) > rank_score(y);
        });
        const int always_count = static_cast<int>(std::count_if(order.begin(), order.end(), always));
        int wanted = p.top_k_per_head != nullptr ? p.top_k_per_head[h] : p.top_k;
        if (p.top_k == 0) {
          double total = 0.0;
          for (int kb : order) total += scores[kb];
          double before = 0.0;
          wanted = 0;
          for (int kb : order) {
            if (before < p.threshold * total) ++wanted;
            before += scores[kb];
          }
        }
        const int kept = std::min({std::max(wanted, always_count), KB, p.max_kv_blocks});
        std::vector<int> chosen(order.begin(), order.begin() + kept);
        std::sort(chosen.begin(), chosen.end());
        mask.count[row] = kept;
        for (int i = 0; i < kept; ++i) {
          const std::size_t entry = row * p.max_kv_blocks + i;
          mask.index[entry] = chosen[static_cast<std::size_t>(i)];
          if (c.fine_n == 0) continue;
          mask.fine_bits[entry] = always(chosen[static_cast<std::size_t>(i)])
                                      ? full_word
                                      : fine_word_for(fine_subtile_masses(p, c, b, h, qb, chosen[static_cast<std::size_t>(i)]),
                                                      p.fine_share);
        }
      }
  return mask;
}

}  // namespace sparsejit::templates
