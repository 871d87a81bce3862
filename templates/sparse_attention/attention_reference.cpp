#include "templates/sparse_attention/attention_reference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <future>
#include <limits>
#include <stdexcept>
#include <string>

namespace sparsejit::templates {
namespace {

// One (b, h) slice of a 16-bit tensor as doubles, [tokens, head_dim] contiguous.
std::vector<double> load_slice(const void* data, long long batch_stride, long long head_stride,
                               long long token_stride, int b, int h, int tokens, int head_dim,
                               HalfDtype dtype) {
  const auto* elements = static_cast<const std::uint16_t*>(data);
  std::vector<double> slice(static_cast<std::size_t>(tokens) * static_cast<std::size_t>(head_dim));
  for (int n = 0; n < tokens; ++n) {
    const std::uint16_t* row = elements + b * batch_stride + h * head_stride + n * token_stride;
    for (int d = 0; d < head_dim; ++d)
      slice[static_cast<std::size_t>(n) * static_cast<std::size_t>(head_dim) + static_cast<std::size_t>(d)] =
          half_bits_to_float(row[d], dtype);
  }
  return slice;
}

}  // namespace

AttentionReference sparse_attention_reference(const SparseAttentionParams& p, HalfDtype dtype,
                                              int head_dim, const BlockMask& mask) {
  if (head_dim < 1)
    throw std::invalid_argument("sparse_attention_reference: head_dim = " + std::to_string(head_dim) +
                                " must be positive");
  if (p.q == nullptr || p.k == nullptr || p.v == nullptr)
    throw std::invalid_argument(std::string("sparse_attention_reference: ") +
                                (p.q == nullptr ? "q" : p.k == nullptr ? "k" : "v") + " is null");
  if (p.batch < 1 || p.heads < 1 || p.tokens_q < 1 || p.tokens_kv < 1)
    throw std::invalid_argument(
        "sparse_attention_reference: batch, heads, tokens_q, tokens_kv = " + std::to_string(p.batch) +
        ", " + std::to_string(p.heads) + ", " + std::to_string(p.tokens_q) + ", " +
        std::to_string(p.tokens_kv) + " must all be positive");
  if (mask.batch != p.batch || mask.heads != p.heads)
    throw std::invalid_argument("sparse_attention_reference: the mask is for batch " +
                                std::to_string(mask.batch) + " x heads " + std::to_string(mask.heads) +
                                ", the params for " + std::to_string(p.batch) + " x " +
                                std::to_string(p.heads));
  validate_block_mask(mask, p.tokens_q, p.tokens_kv);

  const auto D = static_cast<std::size_t>(head_dim);
  const auto Nq = static_cast<std::size_t>(p.tokens_q);
  const double scale = p.softmax_scale;
  const int keys_per_subtile = mask.fine_n;
  const int key_subtiles = mask.fine_n == 0 ? 0 : mask.block_kv / mask.fine_n;

  AttentionReference result;
  result.o.assign(static_cast<std::size_t>(p.batch) * static_cast<std::size_t>(p.heads) * Nq * D, 0.0);
  result.lse.assign(static_cast<std::size_t>(p.batch) * static_cast<std::size_t>(p.heads) * Nq,
                    -std::numeric_limits<double>::infinity());

  std::vector<int> keys;       // the keys of the current row
  std::vector<double> scores;  // their scaled scores
  for (int b = 0; b < p.batch; ++b)
    for (int h = 0; h < p.heads; ++h) {
      const std::vector<double> q = load_slice(p.q, p.q_batch_stride, p.q_head_stride, p.q_token_stride,
                                               b, h, p.tokens_q, head_dim, dtype);
      const std::vector<double> k = load_slice(p.k, p.k_batch_stride, p.k_head_stride, p.k_token_stride,
                                               b, h, p.tokens_kv, head_dim, dtype);
      const std::vector<double> v = load_slice(p.v, p.v_batch_stride, p.v_head_stride, p.v_token_stride,
                                               b, h, p.tokens_kv, head_dim, dtype);
      const std::size_t slice_row = (static_cast<std::size_t>(b) * static_cast<std::size_t>(p.heads) +
                                     static_cast<std::size_t>(h)) * Nq;
      for (int n = 0; n < p.tokens_q; ++n) {
        const int qb = n / mask.block_q;
        const int query_subtile = (n % mask.block_q) / 16;
        keys.clear();
        const std::span<const int> kept = mask.kept_blocks(b, h, qb);
        for (std::size_t i = 0; i < kept.size(); ++i) {
          const int first = kept[i] * mask.block_kv;
          const int last = std::min(first + mask.block_kv, p.tokens_kv);
          const std::uint64_t word =
              mask.fine_n == 0 ? 0 : mask.fine_word(b, h, qb, static_cast<int>(i));
          for (int j = first; j < last; ++j) {
            if (mask.fine_n != 0) {
              const int bit = query_subtile * key_subtiles + (j - first) / keys_per_subtile;
              if (((word >> bit) & 1u) == 0) continue;
            }
            keys.push_back(j);
          }
        }
        if (keys.empty()) continue;  // O stays 0, LSE -inf

        const double* q_row = q.data() + static_cast<std::size_t>(n) * D;
        scores.resize(keys.size());
        double max_score = -std::numeric_limits<double>::infinity();
        for (std::size_t i = 0; i < keys.size(); ++i) {
          const double* k_row = k.data() + static_cast<std::size_t>(keys[i]) * D;
          double dot = 0.0;
          for (std::size_t d = 0; d < D; ++d) dot += q_row[d] * k_row[d];
          scores[i] = dot * scale;
          max_score = std::max(max_score, scores[i]);
        }
        double sum = 0.0;
        for (double& score : scores) {
          score = std::exp(score - max_score);  // now the unnormalized probability
          sum += score;
        }
        double* o_row = result.o.data() + (slice_row + static_cast<std::size_t>(n)) * D;
        for (std::size_t i = 0; i < keys.size(); ++i) {
          const double weight = scores[i] / sum;
          const double* v_row = v.data() + static_cast<std::size_t>(keys[i]) * D;
          for (std::size_t d = 0; d < D; ++d) o_row[d] += weight * v_row[d];
        }
        result.lse[slice_row + static_cast<std::size_t>(n)] = max_score + std::log(sum);
      }
    }
  return result;
}

std::vector<double> query_block_reference(const SparseAttentionParams& p, HalfDtype dtype, int head_dim,
                                          const BlockMask& mask, int b, int h, int q_block) {
  if (b < 0 || b >= mask.batch || h < 0 || h >= mask.heads || q_block < 0 || q_block >= mask.q_blocks)
    throw std::invalid_argument("query_block_reference: (b, h, q_block) = (" + std::to_string(b) + ", " +
                                std::to_string(h) + ", " + std::to_string(q_block) + ") is outside the mask's " +
                                std::to_string(mask.batch) + " x " + std::to_string(mask.heads) + " x " +
                                std::to_string(mask.q_blocks));
  constexpr int kSubTileRows = 16;  // a fine sub-tile's queries
  // The row of the mask as a mask of one query block.
  BlockMask row_mask;
  row_mask.batch = row_mask.heads = row_mask.q_blocks = 1;
  row_mask.kv_blocks = mask.kv_blocks;
  row_mask.max_kv_blocks = mask.max_kv_blocks;
  row_mask.block_q = mask.block_q;
  row_mask.block_kv = mask.block_kv;
  row_mask.fine_n = mask.fine_n;
  const std::size_t row = mask.row(b, h, q_block);
  const auto width = static_cast<std::ptrdiff_t>(mask.max_kv_blocks);
  const auto first = static_cast<std::ptrdiff_t>(row) * width;
  row_mask.count = {mask.count.at(row)};
  row_mask.index.assign(mask.index.begin() + first, mask.index.begin() + first + width);
  if (mask.fine_n > 0) row_mask.fine_bits.assign(mask.fine_bits.begin() + first, mask.fine_bits.begin() + first + width);

  const int block_first_row = q_block * mask.block_q;
  const int block_rows = std::min(mask.block_q, p.tokens_q - block_first_row);
  const auto* q = static_cast<const std::uint16_t*>(p.q);
  const auto* k = static_cast<const std::uint16_t*>(p.k);
  const auto* v = static_cast<const std::uint16_t*>(p.v);
  std::vector<std::future<std::vector<double>>> slices;
  for (int slice_row = 0; slice_row < block_rows; slice_row += kSubTileRows)
    slices.push_back(std::async(std::launch::async, [&, row_mask, slice_row]() mutable {
      SparseAttentionParams sub = p;
      sub.q = q + b * p.q_batch_stride + h * p.q_head_stride + (block_first_row + slice_row) * p.q_token_stride;
      sub.k = k + b * p.k_batch_stride + h * p.k_head_stride;
      sub.v = v + b * p.v_batch_stride + h * p.v_head_stride;
      sub.batch = sub.heads = 1;
      sub.tokens_q = std::min(kSubTileRows, block_rows - slice_row);
      // Bit qs * (block_kv / fine_n) + ks of a pair: this sub-tile becomes qs = 0.
      if (row_mask.fine_n > 0) {
        const int shift = slice_row / kSubTileRows * (row_mask.block_kv / row_mask.fine_n);
        for (std::uint64_t& bits : row_mask.fine_bits) bits >>= shift;
      }
      return sparse_attention_reference(sub, dtype, head_dim, row_mask).o;
    }));
  std::vector<double> o;
  o.reserve(static_cast<std::size_t>(block_rows) * static_cast<std::size_t>(head_dim));
  for (auto& slice : slices) {
    const std::vector<double> part = slice.get();
    o.insert(o.end(), part.begin(), part.end());
  }
  return o;
}

}  // namespace sparsejit::templates
