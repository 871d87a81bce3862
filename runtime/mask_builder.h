#pragma once
// Builds DFSAttn block masks on the GPU from Q and K: block_score (tile means, tile softmax
// mass per block pair) then block_select (top-k by density or cumulative threshold, always-kept
// blocks, optional fine bits) into block-CSR, and converts block-CSR into the block bitmask
// (mask_convert). Everything runs on the caller's stream; nothing is copied to the host.
//
// The builder owns the workspace of a build (pooled Q/K [B,H,T,D], tile LSE [B,H,Tq], scores
// [B,H,QB,KB] float32: 56 MB at 40 heads x 75,600 tokens with blocks of 128; with per-head
// densities the per-head ks [H] int32) and, unless the
// caller gives its own, the output. Buffers only grow: after the first call of a shape (or a
// larger one) a build allocates nothing. One builder serves one stream at a time: a build's
// workspace is reused by the next build, so builds on different streams must be ordered by
// the caller; a builder is not thread-safe. Kernels are loaded once per configuration
// through the runtime's provider.
#include <cuda.h>

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "jit/device_memory.h"
#include "jit/module.h"
#include "runtime/runtime.h"
#include "templates/common/half_precision.h"

namespace sparsejit::runtime {

// Q and K of one attention call: device pointers, logical [batch, heads, tokens, head_dim]
// with free batch/head/token strides (elements; the last dim contiguous), as in
// SparseAttentionParams. Pointers and token strides must be multiples of 16 bytes.
struct QueryKeyInputs {
  const void* q = nullptr;
  const void* k = nullptr;
  long long q_batch_stride = 0, q_head_stride = 0, q_token_stride = 0;
  long long k_batch_stride = 0, k_head_stride = 0, k_token_stride = 0;
  int batch = 0;
  int heads = 0;
  int tokens_q = 0;
  int tokens_kv = 0;
  int head_dim = 128;
  templates::HalfDtype dtype = templates::HalfDtype::bf16;
  float softmax_scale = 0.f;  // the attention's scale, usually 1 / sqrt(head_dim)
};

// How a mask is built. Exactly one of density and threshold is positive: density d keeps
// k = ceil(d * KB) key blocks per query block (top-k), threshold tau keeps the fewest blocks
// whose scores reach tau of the row's mass. Or, with head_densities (SVOO's per-head
// densities, e.g. from a SparsityProfile), head h keeps k_h = max(1, ceil(head_densities[h] *
// KB)) blocks: then threshold must be 0 and density is ignored, and the row pitch is sized by
// the largest k_h. block_select always keeps the diagonal block and the first block
// (DFSAttn's attention sink; keep_first_block = false lets the first block compete by its
// score, for a model without a sink there); text_blocks adds the last key blocks (text
// tokens after the video tokens).
struct MaskBuildOptions {
  int block_q = 128;   // 64 or 128
  int block_kv = 128;  // 64 or 128
  int tile = 16;       // tokens per pooled tile: 8, 16 or 32
  double density = 0.3;
  double threshold = 0.0;
  int text_blocks = 0;
  int fine_n = 0;            // keys per fine sub-tile (8, 16, 32); 0: no fine bits
  double fine_share = 0.9;   // with fine bits: the share of a kept pair's mass its sub-tiles keep
  std::vector<double> head_densities = {};  // [heads], each in (0, 1]; empty: every head uses density
  bool keep_first_block = true;  // false: key block 0 is kept only for its score
};

// The geometry of a built mask: QB, KB, the row pitch of index and fine bits, and the
// element counts of its arrays (rows = batch * heads * QB).
struct MaskLayout {
  int q_blocks = 0;
  int kv_blocks = 0;
  int max_kv_blocks = 0;  // KB in threshold mode; with top-k, block_select_min_row_pitch
  int top_k = 0;          // 0 in threshold mode; the largest k_h with head densities
  std::vector<int> head_top_k;  // [heads]: k_h with head densities; else empty
  std::size_t rows = 0;
  std::size_t count_elements() const { return rows; }
  std::size_t index_elements() const { return rows * static_cast<std::size_t>(max_kv_blocks); }
  std::size_t bitmask_words() const;  // rows * ceil(KB / 64)
};

// Device pointers of a block-CSR mask (attention_params.h). fine_bits is null without fine
// bits. Non-owning.
struct DeviceBlockMask {
  int* kv_block_count = nullptr;              // [batch, heads, QB]
  int* kv_block_index = nullptr;              // [batch, heads, QB, max_kv_blocks]
  unsigned long long* fine_bits = nullptr;    // [batch, heads, QB, max_kv_blocks]
  MaskLayout layout;
};

// The intermediate results of the last build (block_score_params.h), on the device; valid
// until the next build. For measuring a mask's quality and for tests.
struct MaskWorkspace {
  const void* pooled_q = nullptr;  // [batch, heads, Tq, head_dim], the input dtype
  const void* pooled_k = nullptr;  // [batch, heads, Tk, head_dim]
  const float* tile_lse = nullptr;  // [batch, heads, Tq]
  const float* scores = nullptr;    // [batch, heads, QB, KB]
};

class MaskBuilder {
 public:
  explicit MaskBuilder(Runtime& runtime) : runtime_(runtime) {}
  Runtime& runtime() const { return runtime_; }

  // The layout a build of `inputs` with `options` produces (reads only the shape fields of
  // `inputs`, dtype and head dim included). Throws std::invalid_argument for an invalid
  // combination (the messages say which value and why): non-positive sizes, block sizes,
  // tile, fine_n or head dim block_select does not support, not exactly one of density and
  // threshold positive or either above 1, text_blocks outside 0..KB; with head_densities,
  // a count other than heads, a density outside (0, 1] or a positive threshold.
  static MaskLayout layout(const QueryKeyInputs& inputs, const MaskBuildOptions& options);

  // Builds the mask of `inputs` into builder-owned buffers, valid until the next build.
  DeviceBlockMask build(const QueryKeyInputs& inputs, const MaskBuildOptions& options, CUstream stream);

  // Builds into the caller's buffers, sized by layout(): kv_block_count and kv_block_index
  // are required, fine_bits with fine bits (else it must be null). A null count or index
  // pointer means the builder's own buffer.
  DeviceBlockMask build_into(const QueryKeyInputs& inputs, const MaskBuildOptions& options,
                             DeviceBlockMask output, CUstream stream);

  // Writes the bitmask of `mask` (block-CSR on the device) into `bits`, mask.layout.rows x
  // ceil(KB / 64) words. Asynchronous on `stream`.
  void to_bitmask(const DeviceBlockMask& mask, unsigned long long* bits, CUstream stream);

  MaskWorkspace last_workspace() const;
  // Bytes the builder holds on the device (workspace and owned outputs).
  std::size_t workspace_bytes() const;

 private:
  Runtime& runtime_;
  jit::DeviceBuffer pooled_q_, pooled_k_, tile_lse_, scores_, count_, index_, fine_bits_, head_top_k_;
  std::map<std::string, jit::Kernel> kernels_;  // name expression -> loaded kernel

  // The kernel named `name_expression`, rendered and loaded on its first use only.
  jit::Kernel kernel(const std::string& name_expression, const std::function<jit::KernelSpec()>& render);
  // `buffer`, reallocated only when smaller than `bytes`.
  void* reserve(jit::DeviceBuffer& buffer, std::size_t bytes);
};

}  // namespace sparsejit::runtime
