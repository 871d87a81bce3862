#pragma once
// sparsejit bench mask --quality: the quality of the mask build against exact dense attention
// on this GPU (issue 4, "Quality, measured"). For each input (the synthetic video of
// tools/synthetic_video.h on each grid and head mix, or a user's Q/K dump), each token order
// (raster, Hilbert) and each density:
//  - the oracle: the mean recall of the k heaviest key blocks per query block by exact mass
//    (k = ceil(density x KB)), the best any k-block selection can do;
//  - hierarchical scoring (block_score + block_select, block-only): its recall, its ratio to
//    the oracle's, and the relative L2 error of its output;
//  - fine bits (fine_n keys per sub-tile, fine_share of each pair's mass): the most key
//    blocks whose kept sub-tiles are no more than block-only's (k x the sub-tiles of a block
//    per row), with their recall and output error;
// and per head the density the oracle needs for 95% recall. Then the targets, each
// said met or not. Recall is averaged over query rows (per head, then over heads); errors are
// over all heads' outputs.
#include <cstdint>
#include <string>
#include <vector>

#include "tools/cli_common.h"

namespace sparsejit::tools {

struct MaskQualityOptions {
  std::vector<std::string> grids = {"21x30x52", "21x45x80"};  // FxHxW (synthetic inputs)
  std::vector<std::string> mixes = {"diffuse", "mixed", "local"};
  std::vector<double> densities = {0.3, 0.2, 0.1, 0.05};
  int heads = 12;
  int head_dim = 128;
  int tile = 16;
  int block = 128;
  int fine_n = 16;  // 0: no fine-bit comparison
  double fine_share = 0.9;
  // The hierarchical and fine masks keep key block 0 only for its score (the oracle never
  // forces it); default: always, as DFSAttn does.
  bool first_block_by_score = false;
  std::string dtype = "bf16";
  std::uint64_t seed = 0;
  // A user's dump instead of the synthetic inputs: Q and K (and optionally V) .npy files,
  // [N, H, D] or [H, N, D] (layout "auto": the larger of the first two sizes is the tokens).
  // With grids, the dump's first F*H*W tokens are taken as the video in raster order and
  // the rest as text tokens, and both orders are measured; without, only its own order.
  // V of the synthetic inputs: "generator" (a projection of the smooth latent features) or
  // "random" (seeded i.i.d. per token, the same token for token in both orders): a diagnostic
  // that removes V's spatial smoothness from the output error.
  std::string synthetic_v = "generator";
  std::string q_file, k_file, v_file;
  std::string layout = "auto";  // auto, nhd, hnd
  bool no_database = false;
  bool json = false;
};

int run_mask_quality(const GlobalOptions& global, const MaskQualityOptions& options);

}  // namespace sparsejit::tools
