#pragma once
// Parameters of the sparse_attention kernels. Shared by the host (g++) and the device
// (NVRTC): plain fixed-size fields, no includes, so both compilers see the same layout.
//
// O = softmax(Q K^T * softmax_scale) V per (batch, head), restricted to a block mask.
// Q, K, V, O are logical [batch, heads, tokens, head_dim] of 16-bit elements (bf16 or fp16,
// fixed by the specialization); the last dim is contiguous, the other strides are free (in
// elements), so [B,H,N,D] and [B,N,H,D] storage both work without copies.
//
// The mask is block-CSR over sparse blocks of block_q queries x block_kv keys (both fixed by
// the specialization): for query block qb of (b, h), kv_block_count[(b*H + h)*QB + qb] key
// blocks are kept, listed in ascending order in kv_block_index[((b*H + h)*QB + qb)*max_kv_blocks
// + i], i < count, where QB = ceil(tokens_q / block_q), KB = ceil(tokens_kv / block_kv).
// Optional fine bits (FG-Attn) refine each kept pair: fine_bits[same index as kv_block_index]
// holds one bit per sub-tile of 16 queries x fine_n keys, bit (qs * (block_kv / fine_n) + ks)
// for query sub-tile qs and key sub-tile ks inside the pair; a 0 bit removes those keys for
// those queries (their scores count as -inf); fine_n is 8, 16 or 32 with
// (block_q / 16) * (block_kv / fine_n) <= 64. A query row with no kept key writes zeros to O
// and -inf to LSE. Q, K, V, O and their token strides (in bytes) must be multiples of 16
// bytes, and so must Q's, K's and V's head and batch strides where there is more than one
// head or batch (O's: multiples of 4 bytes); fine_bits is 64-bit words (std::uint64_t on the
// host: cast the pointer).
//
// The block bitmask form (compact at densities above ~1/16: the form for masks cached across
// steps and layers) stores row (b, h, qb) as kv_block_words = ceil(KB / 64) words, bit k % 64 of
// word k / 64 set when key block k is kept; bits at or above KB must be 0. Fine bits then
// follow the kept blocks in ascending order: the i-th kept block of a row has
// fine_bits[row * max_kv_blocks + i], so max_kv_blocks must bound every row's kept count.
// Zero-initialized parameters (kv_block_bits null) select the CSR form.

namespace sparsejit {

struct SparseAttentionParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  long long q_batch_stride, q_head_stride, q_token_stride;  // elements
  long long k_batch_stride, k_head_stride, k_token_stride;
  long long v_batch_stride, v_head_stride, v_token_stride;
  long long o_batch_stride, o_head_stride, o_token_stride;
  // Optional [batch, heads, tokens_q] float32, contiguous, natural-log LSE of each row's
  // scaled scores; null: not written.
  float* lse;

  // The mask in one of two forms: block-CSR (kv_block_count and kv_block_index, with
  // kv_block_bits null) or block bitmask (kv_block_bits, with the CSR pointers null).
  const int* kv_block_count;                // [batch, heads, QB]
  const int* kv_block_index;                // [batch, heads, QB, max_kv_blocks]
  const unsigned long long* fine_bits;      // [batch, heads, QB, max_kv_blocks] or null
  int max_kv_blocks;
  const unsigned long long* kv_block_bits;  // [batch, heads, QB, kv_block_words] or null
  int kv_block_words;                       // ceil(KB / 64) with a bitmask, else unused

  int batch;
  int heads;
  int tokens_q;
  int tokens_kv;
  float softmax_scale;                      // usually 1 / sqrt(head_dim)

  // The wgmma kernel's dynamic tile scheduler, set by SparseAttentionFamily::launch (callers
  // leave it null): two zeroed counters (items handed out, CTAs finished) that the launch's
  // CTAs take work items from, left zeroed at its end (jit/work_counters.h). Null: CTA c
  // walks the items c, c + gridDim.x, ... (a CTA per item, or any grid).
  unsigned int* work_counter;
  // Also set by SparseAttentionFamily::launch (callers leave it 0): 1 where the wgmma kernel
  // stores O by TMA through shared memory (its specialization has room to stage O, and O's
  // head and batch strides are whole 16 bytes, below 2^40 bytes), else 0: each thread stores
  // its own elements.
  int o_tensor_map;
};

}  // namespace sparsejit
