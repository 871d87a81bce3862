#include "runtime/sparsity_profile.h"

#include <algorithm>
#include <iterator>
#include <stdexcept>

#include "runtime/mask_quality.h"

namespace sparsejit::runtime {
namespace {

[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument("sparsity profile: " + why); }

}  // namespace

std::vector<double> profiled_head_densities(std::span<const float> masses, int batch, int heads, int q_blocks,
                                            int kv_blocks, int tokens_q, double tau) {
  if (!(tau > 0.0 && tau <= 1.0)) fail("tau = " + std::to_string(tau) + " is outside (0, 1]");
  if (batch < 1 || heads < 1) fail("batch and heads must be positive");
  const std::vector<std::vector<double>> curves =
      oracle_recall_curves(masses, batch * heads, q_blocks, kv_blocks, tokens_q);
  std::vector<double> densities(static_cast<std::size_t>(heads), 0.0);
  for (int slice = 0; slice < batch * heads; ++slice) {
    double& density = densities[static_cast<std::size_t>(slice % heads)];
    density = std::max(density, density_for_recall(curves[static_cast<std::size_t>(slice)], tau));
  }
  return densities;
}

void keep_densest(std::vector<double>& densities, std::span<const double> more) {
  if (densities.empty()) {
    densities.assign(more.begin(), more.end());
    return;
  }
  if (densities.size() != more.size())
    fail("cannot aggregate " + std::to_string(more.size()) + " heads into " + std::to_string(densities.size()));
  for (std::size_t h = 0; h < densities.size(); ++h) densities[h] = std::max(densities[h], more[h]);
}

HeadDensityProfile::HeadDensityProfile(const std::vector<db::SparsityProfile>& rows, DensityLimits limits)
    : limits_(limits) {
  if (!(limits.min_density > 0.0 && limits.min_density <= limits.max_density && limits.max_density <= 1.0))
    fail("limits [" + std::to_string(limits.min_density) + ", " + std::to_string(limits.max_density) +
         "] must satisfy 0 < min <= max <= 1");
  if (rows.empty()) fail("no rows");
  model_ = rows.front().model;
  std::map<std::pair<int, int>, std::map<int, double>> heads_of;  // (layer, step) -> head -> density
  for (const db::SparsityProfile& row : rows) {
    if (row.model != model_) fail("rows of two models, '" + model_ + "' and '" + row.model + "'");
    const std::string where = "step " + std::to_string(row.step) + ", layer " + std::to_string(row.layer);
    if (row.step < 0 || row.layer < 0 || row.head < 0) fail(where + ", head " + std::to_string(row.head) + ": negative");
    if (!heads_of[{row.layer, row.step}].emplace(row.head, row.density).second)
      fail(where + ": head " + std::to_string(row.head) + " twice");
  }
  for (const auto& [key, by_head] : heads_of) {
    const std::string where = "step " + std::to_string(key.second) + ", layer " + std::to_string(key.first);
    const int count = static_cast<int>(by_head.size());
    if (by_head.rbegin()->first != count - 1)
      fail(where + ": heads are not 0.." + std::to_string(count - 1) + " (head " +
           std::to_string(by_head.rbegin()->first) + " is there)");
    if (heads_ == 0) heads_ = count;
    if (count != heads_)
      fail(where + " has " + std::to_string(count) + " heads, other keys " + std::to_string(heads_));
    std::vector<double>& densities = densities_[key];
    for (const auto& [head, density] : by_head)
      densities.push_back(std::clamp(density, limits.min_density, limits.max_density));
  }
}

HeadDensityProfile HeadDensityProfile::load(const db::Database& database, const std::string& model,
                                            DensityLimits limits) {
  const std::vector<db::SparsityProfile> rows = database.list_sparsity_profiles(model);
  if (rows.empty())
    fail("the database " + database.path().string() + " has no profile of model '" + model +
         "' (sparsejit profile --model " + model + " writes one)");
  return HeadDensityProfile(rows, limits);
}

std::optional<std::vector<double>> HeadDensityProfile::head_densities(int step, int layer) const {
  if (step < 0 || layer < 0)
    fail("step " + std::to_string(step) + " and layer " + std::to_string(layer) + " must not be negative");
  // The first key after (layer, step), then one back: the latest profiled step <= step.
  auto after = densities_.upper_bound({layer, step});
  if (after == densities_.begin()) return std::nullopt;
  const auto& [key, densities] = *std::prev(after);
  if (key.first != layer) return std::nullopt;
  return densities;
}

}  // namespace sparsejit::runtime
