#pragma once
// CPU reference of block_score, in float64: exact tile means (not rounded to 16 bits), the
// softmax over all key tiles of each query tile, and its mass per block pair.
#include <vector>

#include "templates/block_score/block_score_params.h"
#include "templates/common/half_precision.h"

namespace sparsejit::templates {

struct BlockScoreReference {
  std::vector<double> pooled_q;  // [batch, heads, Tq, head_dim]
  std::vector<double> pooled_k;  // [batch, heads, Tk, head_dim]
  std::vector<double> tile_lse;  // [batch, heads, Tq], natural log
  std::vector<double> scores;    // [batch, heads, QB, KB]
};

// The tile means of one 16-bit tensor (HOST pointer to `dtype` patterns), logical
// [batch, heads, tokens, head_dim] with the given strides in elements: [batch, heads,
// ceil(tokens / tile), head_dim], the last tile's mean over its real tokens.
std::vector<double> pool_tiles_reference(const void* data, long long batch_stride, long long head_stride,
                                         long long token_stride, int batch, int heads, int tokens,
                                         int head_dim, int tile, HalfDtype dtype);

// block_score of the Q and K that host_params.q/k point at (HOST pointers; the output
// pointers are ignored). P[i, j] = exp(Qp[i] . Kp[j] * scale - tile_lse[i]);
// scores[qb, kb] = sum of P over the query tiles of qb and the key tiles of kb.
// Throws std::invalid_argument for null q/k, non-positive sizes, head_dim or tile < 1, or
// block sizes that are not multiples of the tile.
BlockScoreReference block_score_reference(const BlockScoreParams& host_params, HalfDtype dtype, int head_dim,
                                          int tile, int block_q, int block_kv);

}  // namespace sparsejit::templates
