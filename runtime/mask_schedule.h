#pragma once
// When a layer's sparse mask is built, reused, or not used (dense attention), across the
// steps of a diffusion sampler: DFSAttn's mask caching with adaptive ratio. Host only.
//
// Steps 0..dense_steps-1 run dense. From step dense_steps on, the steps fall into refresh
// windows of refresh_interval steps: window w = (step - dense_steps) / refresh_interval
// builds its mask at its first step at density densities[min(w, densities.size() - 1)] (the
// last density repeats) and reuses it for the rest of the window. The dense layers run dense
// at every step. The DFSAttn code's defaults: 50 steps, dense for 12, refresh every 12,
// densities 0.3, 0.2, 0.1, layer 0 dense; so the refreshes are at steps 12 (0.3), 24 (0.2),
// 36 (0.1) and 48 (0.1, the last repeated).
#include <string_view>
#include <vector>

namespace sparsejit::runtime {

struct MaskScheduleConfig {
  int steps = 50;             // the sampler's steps; decide() refuses a step at or past it
  int dense_steps = 12;       // warm-up steps run dense; 0..steps
  int refresh_interval = 12;  // steps per refresh window; >= 1
  std::vector<double> densities = {0.3, 0.2, 0.1};  // per window, each in (0, 1]; not empty
  std::vector<int> dense_layers = {0};              // layers always dense; >= 0, no repeats
};

enum class MaskAction {
  dense,    // run dense attention, no mask
  refresh,  // build the mask at `density`, then use it
  reuse,    // use the mask built at the window's refresh
};
std::string_view to_string(MaskAction action);

struct MaskDecision {
  MaskAction action = MaskAction::dense;
  double density = 0.0;  // the window's density for refresh and reuse; 0 for dense
  int window = -1;       // the refresh window for refresh and reuse; -1 for dense
  friend bool operator==(const MaskDecision&, const MaskDecision&) = default;
};

class MaskSchedule {
 public:
  // Throws std::invalid_argument, naming the field and its value, for an invalid config.
  explicit MaskSchedule(MaskScheduleConfig config = {});

  const MaskScheduleConfig& config() const { return config_; }
  // Throws std::invalid_argument for a negative step or layer, or a step at or past `steps`.
  MaskDecision decide(int step, int layer) const;
  // The highest density any window uses: what sizes a mask's row pitch for every refresh.
  double max_density() const;

 private:
  MaskScheduleConfig config_;
};

}  // namespace sparsejit::runtime
