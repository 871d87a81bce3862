#pragma once
// Parameters of the block_score kernels (pool_tiles, score_blocks). Shared by the host (g++)
// and the device (NVRTC): plain fixed-size fields, no includes, so both compilers see the
// same layout.
//
// DFSAttn's hierarchical block scoring. Q and K are logical [batch, heads, tokens, head_dim]
// of 16-bit elements (bf16 or fp16, fixed by the specialization); the last dim is contiguous,
// the other strides are free (in elements), so [B,H,N,D] and [B,N,H,D] storage both work.
//
// With tiles of t tokens (fixed by the specialization), Tq = ceil(tokens_q / t) query tiles
// and Tk = ceil(tokens_kv / t) key tiles per (batch, head):
//  1. pool_tiles writes the tile means Qp [B,H,Tq,D] and Kp [B,H,Tk,D] (dense, in the input
//     dtype; the last tile of a ragged length is the mean over its real tokens only).
//  2. score_blocks computes, per query tile i, the tile probabilities
//     P[i, j] = softmax_j(Qp[i] . Kp[j] * softmax_scale) over ALL key tiles j (never stored:
//     a first sweep finds each row's maximum and normalizer, a second one sums P), writes
//     tile_lse[i] = log sum_j exp(Qp[i] . Kp[j] * softmax_scale) (natural log), and the
//     score of each (query block, key block) pair: the mass of P inside it,
//     scores[qb, kb] = sum over query tiles i in qb, key tiles j in kb of P[i, j],
//     a block holding block / t tiles. Each query tile's row sums to 1 over kb, so a query
//     block's scores sum to its number of tiles (fewer in a ragged last block).
// QB = ceil(tokens_q / block_q), KB = ceil(tokens_kv / block_kv).

namespace sparsejit {

struct BlockScoreParams {
  const void* q;
  const void* k;
  long long q_batch_stride, q_head_stride, q_token_stride;  // elements
  long long k_batch_stride, k_head_stride, k_token_stride;

  void* pooled_q;   // [batch, heads, Tq, head_dim] dense; written by pool_tiles
  void* pooled_k;   // [batch, heads, Tk, head_dim] dense; written by pool_tiles
  float* tile_lse;  // [batch, heads, Tq]; written by score_blocks
  float* scores;    // [batch, heads, QB, KB]; written by score_blocks

  int batch;
  int heads;
  int tokens_q;
  int tokens_kv;
  float softmax_scale;  // usually 1 / sqrt(head_dim); positive
};

}  // namespace sparsejit
