#pragma once
// SVOO's offline sparsity profiles (issue 4): per (model, diffusion step, layer, head) the
// least density whose oracle selection keeps recall tau of the exact softmax mass, measured
// by `sparsejit profile` on a few prompts' Q/K dumps and stored in the tuning database; at
// run time the per-head densities of a mask build (MaskBuildOptions::head_densities). Host
// only.
//
// Recall here is the mean over a head's query rows of the share of each row's exact softmax
// mass kept when every query block keeps its k heaviest key blocks by exact mass (the
// oracle: oracle_recall_curves in mask_quality.h); the profiled density is k / KB for the
// least such k. A block-sparse mask built at that density by hierarchical scoring keeps a
// little less than the oracle (bench mask --quality measures how much).
#include <map>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "db/database.h"

namespace sparsejit::runtime {

// Per head, the least density at which the oracle keeps `tau` of the mass, the largest over
// the batch entries: `masses` is [batch, heads, QB, KB] (exact_block_masses) of query rows of
// tokens_q tokens. Throws std::invalid_argument for tau outside (0, 1] or sizes that do not
// match the masses.
std::vector<double> profiled_head_densities(std::span<const float> masses, int batch, int heads, int q_blocks,
                                            int kv_blocks, int tokens_q, double tau);

// Aggregation over prompts (SVOO: the maximum): densities[h] = max(densities[h], more[h]);
// an empty `densities` takes `more`. Throws std::invalid_argument for different head counts.
void keep_densest(std::vector<double>& densities, std::span<const double> more);

// The densities a profile may set, in (0, 1]: a profiled density is clipped to [min, max].
// The floor keeps a head that profiled nearly empty from losing content the few prompts did
// not show; a ceiling below 1 caps the cost of diffuse heads.
struct DensityLimits {
  double min_density = 0.05;
  double max_density = 1.0;
};

class HeadDensityProfile {
 public:
  // From one model's rows, in any order. Throws std::invalid_argument, saying which, for: no
  // rows, rows of several models, a (step, layer) whose heads are not 0..H-1 each once, head
  // counts that differ between (step, layer) keys, limits outside 0 < min <= max <= 1.
  HeadDensityProfile(const std::vector<db::SparsityProfile>& rows, DensityLimits limits = {});
  // The rows `model` has in `database`. Throws std::invalid_argument when it has none (the
  // message names the model and the database), else as the constructor.
  static HeadDensityProfile load(const db::Database& database, const std::string& model, DensityLimits limits = {});

  const std::string& model() const { return model_; }
  int heads() const { return heads_; }
  const DensityLimits& limits() const { return limits_; }

  // Per head, the profiled density of `layer` at `step`, clipped to the limits. A step that
  // was not profiled uses the nearest profiled step before it for that layer (profiles are
  // usually taken at a few steps: the refresh steps of the schedule); none when the layer has
  // no profiled step at or before `step` (or none at all): the caller then keeps its
  // schedule's density (MaskCache does). Throws std::invalid_argument for a negative step or
  // layer.
  std::optional<std::vector<double>> head_densities(int step, int layer) const;

 private:
  std::string model_;
  int heads_ = 0;
  DensityLimits limits_;
  std::map<std::pair<int, int>, std::vector<double>> densities_;  // (layer, step) -> per head
};

}  // namespace sparsejit::runtime
