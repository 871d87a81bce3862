#pragma once
// Parameters of the attention_quality kernels (block_mass, output_error). Shared by the host
// (g++) and the device (NVRTC): plain fixed-size fields, no includes, so both compilers see
// the same layout.
//
// They measure a sparse mask against exact dense attention (issue 4, "Quality, measured").
// Q, K, O are logical [batch, heads, tokens, head_dim] of 16-bit elements (bf16 or fp16, fixed
// by the specialization); the last dim is contiguous, the other strides are free (elements).
//
// block_mass: the exact softmax mass of every (query block, key block) pair,
//   mass[b, h, qb, kb] = sum over rows i of qb and keys j < tokens_kv of kb of
//                        exp((q_i . k_j) * softmax_scale - lse[b, h, i]),
// where lse is each row's natural-log normalizer over ALL keys (sparse_attention with every
// block kept and an LSE output writes it). A row's masses sum to 1 over kb, so a query
// block's sum to its number of rows (fewer in a ragged last block). lse must be finite.
// QB = ceil(tokens_q / block_q), KB = ceil(tokens_kv / block_kv), blocks fixed by the
// specialization.
//
// output_error: per chunk of kOutputErrorRows query rows of (b, h), three sums comparing a
// sparse attention's output (o, lse) with the dense one (o_reference, lse_reference):
//   partials[((b * heads + h) * chunks + c) * 3 + 0] = sum of (o - o_reference)^2
//                                                + 1 = sum of o_reference^2
//                                                + 2 = sum over rows of exp(lse - lse_reference)
// over the chunk's rows (and every head dim), chunks = ceil(tokens / kOutputErrorRows). The
// last is the attention recall of those rows: the share of each row's softmax mass that the
// sparse attention kept (exp(-inf) = 0 for a row that kept nothing). lse_reference must be
// finite. The host adds the chunks up (deterministic: no atomics).

namespace sparsejit {

constexpr int kOutputErrorRows = 64;      // query rows per output_error CTA
constexpr int kOutputErrorThreads = 256;

struct BlockMassParams {
  const void* q;
  const void* k;
  long long q_batch_stride, q_head_stride, q_token_stride;  // elements
  long long k_batch_stride, k_head_stride, k_token_stride;
  const float* lse;  // [batch, heads, tokens_q], contiguous, natural log
  float* mass;       // [batch, heads, QB, KB], contiguous

  int batch;
  int heads;
  int tokens_q;
  int tokens_kv;
  float softmax_scale;  // the attention's scale, usually 1 / sqrt(head_dim); positive
};

struct OutputErrorParams {
  const void* o;
  const void* o_reference;
  long long o_batch_stride, o_head_stride, o_token_stride;  // elements, both outputs
  const float* lse;            // [batch, heads, tokens], contiguous
  const float* lse_reference;  // [batch, heads, tokens], contiguous
  double* partials;            // [batch, heads, chunks, 3]

  int batch;
  int heads;
  int tokens;
};

}  // namespace sparsejit
