#pragma once
// Parameters of the block_select kernel. Shared by the host (g++) and the device (NVRTC):
// plain fixed-size fields, no includes, so both compilers see the same layout.
//
// DFSAttn's selection, per (batch, head, query block qb): from the block scores of
// block_score ([B, H, QB, KB] float32, each the probability mass of a block pair), keep
//  - always: the diagonal block min(qb * block_q / block_kv, KB - 1), the first block 0
//    (DFSAttn's attention sink; with first_block_by_score = 1 it competes by its score like
//    the others) and the last `text_blocks` blocks (text tokens sit after the video tokens);
//  - then, in the order of descending score (equal scores: the lower block index first), the
//    other blocks until the row keeps k blocks in all (top_k > 0: k = top_k, or
//    top_k_per_head[head] when that array is given, SVOO's per-head densities), or until the
//    kept blocks' scores reach `threshold` times the row's total score (top_k == 0; the
//    always-kept blocks count); never more than max_kv_blocks.
// Output: the block-CSR mask of sparse_attention (attention_params.h): kv_block_count
// [B, H, QB], kv_block_index [B, H, QB, max_kv_blocks] ascending (entries past the count are
// left as they were), and with fine sub-tiles of 16 queries x fine_n keys (fixed by the
// specialization) one uint64 per kept pair: the always-kept blocks keep every sub-tile; a
// block kept for its score keeps, in the order of descending mass (equal masses: the lower
// bit first), the fewest sub-tiles whose mass reaches fine_share of the pair's mass (at
// least one). A sub-tile's mass comes from the tile probabilities of block_score,
// P[i, j] = exp(Qp[i] . Kp[j] * softmax_scale - tile_lse[i]), recomputed here for the kept
// pairs: a tile that covers several sub-tiles gives each the share of its real tokens
// inside it.

namespace sparsejit {

// The most key blocks a row may have: the sort holds them in 16 KB of shared memory
// (131,072 keys at blocks of 64, 262,144 at 128).
constexpr int kMaxSelectKvBlocks = 2048;
constexpr int kSelectThreads = 256;  // one CTA per query block

struct BlockSelectParams {
  const float* scores;                // [batch, heads, QB, KB]
  int* kv_block_count;                // [batch, heads, QB]
  int* kv_block_index;                // [batch, heads, QB, max_kv_blocks]
  unsigned long long* fine_bits;      // [batch, heads, QB, max_kv_blocks]; null without fine bits

  // Read only with fine bits: block_score's pooled tiles and their log-normalizers.
  const void* pooled_q;               // [batch, heads, Tq, head_dim], 16-bit, dense
  const void* pooled_k;               // [batch, heads, Tk, head_dim]
  const float* tile_lse;              // [batch, heads, Tq]

  // Null: every head keeps top_k. Else [heads], each in 1..top_k: head h keeps
  // top_k_per_head[h] blocks, and top_k is the largest of them (it sizes max_kv_blocks).
  // Read only with top_k > 0.
  const int* top_k_per_head;

  int max_kv_blocks;
  int batch;
  int heads;
  int tokens_q;
  int tokens_kv;
  int top_k;         // > 0: blocks kept per row (the largest, with top_k_per_head); 0: threshold mode
  float threshold;   // threshold mode: the share of the row's score to keep, in [0, 1]
  int text_blocks;   // the last text_blocks key blocks are always kept (0 <= text_blocks <= KB)
  int first_block_by_score;  // 0 (DFSAttn): block 0 is always kept; 1: only for its score
  float fine_share;  // with fine bits: in (0, 1]
  float softmax_scale;  // with fine bits: the one block_score used
};

}  // namespace sparsejit
