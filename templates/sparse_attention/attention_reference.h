#pragma once
// CPU reference of sparse_attention, in float64: the oracle of the GPU tests and of the
// tuner's correctness gate.
#include <vector>

#include "templates/sparse_attention/attention_params.h"
#include "templates/sparse_attention/block_mask.h"
#include "templates/common/half_precision.h"

namespace sparsejit::templates {

struct AttentionReference {
  std::vector<double> o;    // [batch, heads, tokens_q, head_dim], contiguous
  std::vector<double> lse;  // [batch, heads, tokens_q], natural log; -inf where nothing is kept
};

// Sparse attention of the Q, K, V that `host_params` points at, under `mask`:
//  - host_params.q/k/v are HOST pointers to 16-bit patterns of `dtype`, logical
//    [batch, heads, tokens, head_dim] with the params' batch/head/token strides (elements;
//    the last dim contiguous); q has tokens_q tokens, k and v tokens_kv.
//  - o, lse and the mask fields of host_params (kv_block_count, kv_block_index, fine_bits,
//    max_kv_blocks) are ignored: the mask is `mask`.
// For query row n of (b, h), in query block qb = n / block_q and 16-query sub-tile
// qs = (n % block_q) / 16, key j < tokens_kv takes part iff its block kb = j / block_kv is
// among the kept blocks of (b, h, qb) and, with fine bits, bit qs * (block_kv / fine_n) +
// (j % block_kv) / fine_n of that pair's word is set. Over those keys, s_j = (q . k_j) *
// softmax_scale, O = sum_j softmax(s)_j v_j and LSE = log sum_j exp(s_j); a row with no such
// key gets O = 0 and LSE = -inf.
// Throws std::invalid_argument for head_dim < 1, null q/k/v, non-positive batch/heads/tokens,
// a mask whose batch or heads differ from the params', or an invalid mask
// (validate_block_mask for tokens_q x tokens_kv).
AttentionReference sparse_attention_reference(const SparseAttentionParams& host_params,
                                              HalfDtype dtype, int head_dim,
                                              const BlockMask& mask);

// O of one query block of sparse_attention_reference: rows q_block * block_q .. (ragged at
// the end) of (b, h), [rows, head_dim] contiguous; the same values. Each 16-query sub-tile is
// an independent sub-problem (its fine bits shifted to sub-tile 0) computed on its own thread:
// 8 threads for a block of 128, where the block alone took 3.6 s at 119,056 keys dense.
// Throws std::invalid_argument as sparse_attention_reference does, and for (b, h, q_block)
// outside the mask.
std::vector<double> query_block_reference(const SparseAttentionParams& host_params, HalfDtype dtype,
                                          int head_dim, const BlockMask& mask, int b, int h, int q_block);

}  // namespace sparsejit::templates
