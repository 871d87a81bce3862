#pragma once
// Descriptor of the block_score family (device code: block_score.cuh): pool_tiles (tile means
// of Q and K) and score_blocks (tile probabilities summed per block pair).
//
// A problem is fixed by dtype, head dim, the tile of t tokens and the sparse block sizes;
// the tunable part is score_blocks' CTA (warps x 16 query tiles) and its step (key tiles per
// shared-memory stage). pool_tiles depends on dtype, head dim and tile only.
#include <array>
#include <string>

#include "jit/module.h"
#include "templates/block_score/block_score_params.h"
#include "templates/common/half_precision.h"
#include "templates/kernel_family.h"

namespace sparsejit::templates {

// Head dims of the models (DESIGN.md).
inline constexpr std::array<int, 3> kScoreHeadDims = {64, 96, 128};
// Tiles of t tokens: DFSAttn's best setting is 16; 8 and 32 trade precision for cost.
inline constexpr std::array<int, 3> kScoreTileTokens = {8, 16, 32};
// Sparse block sizes, as in sparse_attention: a block holds block / t tiles (2..16).
inline constexpr std::array<int, 2> kScoreBlockSizes = {64, 128};
// score_blocks: 4 or 8 warps of 16 query tiles; 32 or 64 key tiles per step (a multiple of
// every key block's 2..16 tiles, so a block pair never spans two steps).
inline constexpr std::array<int, 2> kScoreWarps = {4, 8};
inline constexpr std::array<int, 2> kScoreStepTiles = {32, 64};
// pool_tiles: one 16-byte chunk per thread; 256 threads keep 4 KB in flight per CTA, and the
// kernel is a small part of the mask build (it reads Q and K once), so it is not tuned.
inline constexpr int kPoolThreads = 256;

struct BlockScoreConfig {
  HalfDtype dtype = HalfDtype::bf16;
  int head_dim = 128;
  int tile = 16;
  int block_q = 128;
  int block_kv = 128;
  int warps = 4;
  int step_tiles = 32;

  std::string pool_name_expression() const;   // "sparsejit::pool_tiles<0, 128, 16, 256>"
  std::string score_name_expression() const;  // "sparsejit::score_blocks<0, 128, 16, 128, 128, 4, 64>"
  std::string label() const;  // "block_score<bf16 D=128 t=16 blocks 128x128 w4 step 64>"
  int shared_bytes() const;   // dynamic shared memory of a score_blocks CTA
  std::string tuning_json() const;  // {"step_tiles":64,"warps":4}
  friend bool operator==(const BlockScoreConfig&, const BlockScoreConfig&) = default;
};

// Tiles and blocks of a problem: Tq, Tk, QB, KB.
struct BlockScoreShape {
  int tiles_q, tiles_k, q_blocks, kv_blocks;
};
BlockScoreShape block_score_shape(int tokens_q, int tokens_kv, int tile, int block_q, int block_kv);

// Empty when `config` is a valid point for a device with `max_shared_bytes`; else why not.
std::string block_score_config_problem(const BlockScoreConfig& config, int max_shared_bytes);

// The built-in default: 4 warps, 32 key tiles per step (the fastest on the H100). Throws std::invalid_argument when
// the problem is invalid (dtype/head dim/tile/block sizes) or no step fits the shared memory.
BlockScoreConfig default_block_score_config(HalfDtype dtype, int head_dim, int tile, int block_q,
                                            int block_kv, int max_shared_bytes);

class BlockScoreFamily final : public KernelFamily {
 public:
  std::string_view name() const override { return "block_score"; }
  std::string_view summary() const override {
    return "DFSAttn block scores: tile means of Q/K, tile softmax mass per block pair (mma.sync)";
  }
  // Every pool_tiles specialization once, then every valid score_blocks point.
  std::vector<jit::KernelSpec> enumerate(const jit::Target& target) const override;
  // Not tuned yet: a timing problem needs a mask-build shape (tens of ms of inputs per
  // candidate) and the tuner times one kernel per candidate, where this family launches two.
  std::vector<std::unique_ptr<TuningProblem>> tuning_problems() const override { return {}; }

  static jit::KernelSpec render_pool(const BlockScoreConfig& config, const jit::Target& target);
  static jit::KernelSpec render_score(const BlockScoreConfig& config, const jit::Target& target);
  // Throws std::invalid_argument for: an invalid config, null pointers, Q/K pointers or token
  // strides not multiples of 16 bytes, pooled buffers not 16-byte aligned, non-positive sizes,
  // a softmax_scale that is not positive and finite, more than 65535 heads or batches.
  static void validate(const BlockScoreConfig& config, const BlockScoreParams& params,
                       int max_shared_bytes);
  static jit::LaunchConfig pool_geometry(const BlockScoreConfig& config, const BlockScoreParams& params,
                                         CUstream stream);
  static jit::LaunchConfig score_geometry(const BlockScoreConfig& config, const BlockScoreParams& params,
                                          CUstream stream);
  // validate, then launch pool_tiles and score_blocks on `stream` (in that order).
  static void launch(const jit::Kernel& pool, const jit::Kernel& score, const BlockScoreConfig& config,
                     const BlockScoreParams& params, int max_shared_bytes, CUstream stream);
};

}  // namespace sparsejit::templates
