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
//
// Threshold schedules: with `thresholds` (and `densities` empty) each window builds its mask
// in threshold mode instead, keeping the fewest key blocks whose scores reach tau =
// thresholds[min(w, thresholds.size() - 1)] of each row's mass (MaskBuildOptions::threshold).
// A row may then keep every key block, so a mask's row pitch is KB: the cached bitmask is the
// same size, but fine bits (8 bytes per pitch entry) take rows x KB x 8 bytes per cached mask
// (mask_cache.h).
#include <string_view>
#include <vector>

namespace sparsejit::runtime {

struct MaskScheduleConfig {
  int steps = 50;             // the sampler's steps; decide() refuses a step at or past it
  int dense_steps = 12;       // warm-up steps run dense; 0..steps
  int refresh_interval = 12;  // steps per refresh window; >= 1
  std::vector<double> densities = {0.3, 0.2, 0.1};  // per window, each in (0, 1]
  std::vector<int> dense_layers = {0};              // layers always dense; >= 0, no repeats
  // Per window, each in (0, 1]: a threshold schedule. Exactly one of densities and
  // thresholds is non-empty (clear densities to use thresholds).
  std::vector<double> thresholds = {};
};

enum class MaskAction {
  dense,    // run dense attention, no mask
  refresh,  // build the mask at `density` (or `threshold`), then use it
  reuse,    // use the mask built at the window's refresh
};
std::string_view to_string(MaskAction action);

// A refresh or reuse has exactly one of density (top-k) and threshold (cumulative share)
// positive, as the schedule's mode says; a dense decision has both 0.
struct MaskDecision {
  MaskAction action = MaskAction::dense;
  double density = 0.0;    // the window's density in a density schedule; else 0
  int window = -1;         // the refresh window for refresh and reuse; -1 for dense
  double threshold = 0.0;  // the window's threshold in a threshold schedule; else 0
  bool by_threshold() const { return threshold > 0.0; }
  friend bool operator==(const MaskDecision&, const MaskDecision&) = default;
};

class MaskSchedule {
 public:
  // Throws std::invalid_argument, naming the field and its value, for an invalid config.
  explicit MaskSchedule(MaskScheduleConfig config = {});

  const MaskScheduleConfig& config() const { return config_; }
  // Throws std::invalid_argument for a negative step or layer, or a step at or past `steps`.
  MaskDecision decide(int step, int layer) const;
  bool by_threshold() const { return !config_.thresholds.empty(); }
  // The highest density any window uses: what sizes a mask's row pitch for every refresh.
  // 1 for a threshold schedule (a row may keep every key block: the pitch is KB).
  double max_density() const;

 private:
  MaskScheduleConfig config_;
};

}  // namespace sparsejit::runtime
