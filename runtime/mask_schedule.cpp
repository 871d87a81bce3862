#include "runtime/mask_schedule.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace sparsejit::runtime {
namespace {

[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument("mask schedule: " + why); }

}  // namespace

std::string_view to_string(MaskAction action) {
  switch (action) {
    case MaskAction::dense: return "dense";
    case MaskAction::refresh: return "refresh";
    case MaskAction::reuse: return "reuse";
  }
  return "unknown";
}

MaskSchedule::MaskSchedule(MaskScheduleConfig config) : config_(std::move(config)) {
  const MaskScheduleConfig& c = config_;
  if (c.steps < 1) fail("steps = " + std::to_string(c.steps) + " must be at least 1");
  if (c.dense_steps < 0 || c.dense_steps > c.steps)
    fail("dense_steps = " + std::to_string(c.dense_steps) + " is outside 0.." + std::to_string(c.steps) + " (steps)");
  if (c.refresh_interval < 1) fail("refresh_interval = " + std::to_string(c.refresh_interval) + " must be at least 1");
  if (c.densities.empty() == c.thresholds.empty())
    fail(c.densities.empty() ? "densities and thresholds are both empty: each refresh window needs a density or a "
                               "threshold (the last repeats)"
                             : "densities and thresholds are both given: a schedule keeps top-k blocks by density "
                               "or a cumulative share by threshold; clear one");
  for (const auto& [name, values] : {std::pair{"densities", &c.densities}, std::pair{"thresholds", &c.thresholds}})
    for (std::size_t i = 0; i < values->size(); ++i)
      if (!((*values)[i] > 0.0 && (*values)[i] <= 1.0))
        fail(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string((*values)[i]) +
             " is outside (0, 1]");
  std::vector<int> layers = c.dense_layers;
  std::sort(layers.begin(), layers.end());
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] < 0) fail("dense_layers holds the negative layer " + std::to_string(layers[i]));
    if (i > 0 && layers[i] == layers[i - 1]) fail("dense_layers lists layer " + std::to_string(layers[i]) + " twice");
  }
}

MaskDecision MaskSchedule::decide(int step, int layer) const {
  if (step < 0 || step >= config_.steps)
    fail("step " + std::to_string(step) + " is outside the schedule's steps 0.." + std::to_string(config_.steps - 1));
  if (layer < 0) fail("layer " + std::to_string(layer) + " is negative");
  const bool dense_layer =
      std::find(config_.dense_layers.begin(), config_.dense_layers.end(), layer) != config_.dense_layers.end();
  if (dense_layer || step < config_.dense_steps) return {};
  const int since_warm_up = step - config_.dense_steps;
  const int window = since_warm_up / config_.refresh_interval;
  const std::vector<double>& values = by_threshold() ? config_.thresholds : config_.densities;
  const double value = values[std::min<std::size_t>(window, values.size() - 1)];
  const MaskAction action = since_warm_up % config_.refresh_interval == 0 ? MaskAction::refresh : MaskAction::reuse;
  if (by_threshold()) return {.action = action, .density = 0.0, .window = window, .threshold = value};
  return {.action = action, .density = value, .window = window};
}

double MaskSchedule::max_density() const {
  if (by_threshold()) return 1.0;
  return *std::max_element(config_.densities.begin(), config_.densities.end());
}

}  // namespace sparsejit::runtime
