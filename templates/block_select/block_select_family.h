#pragma once
// Descriptor of the block_select family (device code: block_select.cuh).
//
// A specialization is fixed by the sparse block sizes and the fine granularity; with fine
// bits also by what the sub-tile masses are recomputed from: the dtype and head dim of the
// pooled tiles and the tile of t tokens. The top-k count, the threshold, the text blocks and
// the fine share are run-time values: k = ceil(density * KB) depends on the sequence length,
// and one CUBIN per density would multiply the space for nothing (the sort does not depend
// on k). No tunable part: one CTA of 256 threads per query block.
#include <array>
#include <string>

#include "jit/module.h"
#include "templates/block_select/block_select_params.h"
#include "templates/common/half_precision.h"
#include "templates/kernel_family.h"

namespace sparsejit::templates {

inline constexpr std::array<int, 2> kSelectBlockSizes = {64, 128};
// Fine sub-tile widths in keys (0: no fine bits), those of sparse_attention.
inline constexpr std::array<int, 4> kSelectFineN = {0, 8, 16, 32};
// With fine bits: the pooled tiles' head dims and tile sizes, those of block_score.
inline constexpr std::array<int, 3> kSelectHeadDims = {64, 96, 128};
inline constexpr std::array<int, 3> kSelectTileTokens = {8, 16, 32};

struct BlockSelectConfig {
  int block_q = 128;
  int block_kv = 128;
  int fine_n = 0;
  // With fine bits only; without, bf16, 0 and 0.
  HalfDtype dtype = HalfDtype::bf16;
  int head_dim = 0;
  int tile = 0;

  std::string name_expression() const;  // "sparsejit::block_select<128, 128, 16, 0, 128, 16>"
  std::string label() const;            // "block_select<128x128 fine 16 bf16 D=128 t=16>"
  friend bool operator==(const BlockSelectConfig&, const BlockSelectConfig&) = default;
};

// The config for a problem: without fine bits (fine_n = 0) dtype, head_dim and tile are
// dropped, so every such problem shares one specialization.
BlockSelectConfig block_select_config(int block_q, int block_kv, int fine_n, HalfDtype dtype = HalfDtype::bf16,
                                      int head_dim = 0, int tile = 0);

// Empty when `config` is a valid point; else why not.
std::string block_select_config_problem(const BlockSelectConfig& config);

// The fewest max_kv_blocks a call may give: every always-kept block (first, diagonal, text)
// and, with top_k > 0, the top_k blocks must fit; at most kv_blocks.
int block_select_min_row_pitch(int kv_blocks, int top_k, int text_blocks);

class BlockSelectFamily final : public KernelFamily {
 public:
  std::string_view name() const override { return "block_select"; }
  std::string_view summary() const override {
    return "DFSAttn selection: block-CSR mask by top-k or cumulative threshold, fine bits by mass";
  }
  std::vector<jit::KernelSpec> enumerate(const jit::Target& target) const override;
  // Nothing to tune: the space has no tunable part.
  std::vector<std::unique_ptr<TuningProblem>> tuning_problems() const override { return {}; }

  static jit::KernelSpec render(const BlockSelectConfig& config, const jit::Target& target);
  // Throws std::invalid_argument for: an invalid config, null pointers (fine-bit inputs
  // only with fine bits; fine_bits given without), non-positive sizes, more than
  // kMaxSelectKvBlocks key blocks, top_k < 0, top_k_per_head without top_k > 0, a threshold
  // outside [0, 1] in threshold mode,
  // text_blocks outside 0..KB, max_kv_blocks outside block_select_min_row_pitch..KB, with
  // fine bits a fine_share outside (0, 1], a softmax_scale not positive and finite, or a
  // pooled_k that is not 16-byte aligned. Does not read device memory (so it cannot check
  // the per-head ks: the kernel clips each to max_kv_blocks, the reference refuses any
  // outside 1..top_k).
  static void validate(const BlockSelectConfig& config, const BlockSelectParams& params);
  static jit::LaunchConfig geometry(const BlockSelectConfig& config, const BlockSelectParams& params,
                                    CUstream stream);
  static void launch(const jit::Kernel& kernel, const BlockSelectConfig& config,
                     const BlockSelectParams& params, CUstream stream);
};

}  // namespace sparsejit::templates
