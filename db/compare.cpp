#include "db/compare.h"

#include <map>
#include <tuple>

namespace sparsejit::db {
namespace {

using ProblemOnGpu = std::tuple<std::string, std::string, std::string>;  // fingerprint, family, problem

std::map<ProblemOnGpu, BestConfig> best_configs_by_problem(const Database& database) {
  std::map<std::int64_t, std::string> fingerprints;  // by GPU id
  for (const StoredGpu& gpu : database.list_gpus()) fingerprints.emplace(gpu.id, gpu.gpu.fingerprint());
  std::map<ProblemOnGpu, BestConfig> by_problem;
  for (BestConfig& best : database.list_best_configs()) {
    ProblemOnGpu key{fingerprints.at(best.gpu_id), best.family, best.problem_key};
    by_problem.emplace(std::move(key), std::move(best));
  }
  return by_problem;
}

}  // namespace

std::string_view to_string(BestConfigComparison comparison) {
  switch (comparison) {
    case BestConfigComparison::only_in_a: return "only_in_a";
    case BestConfigComparison::only_in_b: return "only_in_b";
    case BestConfigComparison::different_config: return "different";
    case BestConfigComparison::same_config: return "same";
  }
  return "unknown";
}

std::optional<double> BestConfigDifference::b_over_a() const {
  if (!a || !b) return std::nullopt;
  return b->median_ms / a->median_ms;
}

std::vector<BestConfigDifference> compare_best_configs(const Database& a, const Database& b) {
  const std::map<ProblemOnGpu, BestConfig> in_a = best_configs_by_problem(a);
  const std::map<ProblemOnGpu, BestConfig> in_b = best_configs_by_problem(b);
  std::map<ProblemOnGpu, BestConfigDifference> differences;
  const auto entry = [&differences](const ProblemOnGpu& key) -> BestConfigDifference& {
    BestConfigDifference& difference = differences[key];
    std::tie(difference.gpu_fingerprint, difference.family, difference.problem_key) = key;
    return difference;
  };
  for (const auto& [key, best] : in_a) entry(key).a = best;
  for (const auto& [key, best] : in_b) entry(key).b = best;
  std::vector<BestConfigDifference> ordered;
  for (auto& [key, difference] : differences) {
    if (!difference.b) difference.comparison = BestConfigComparison::only_in_a;
    else if (!difference.a) difference.comparison = BestConfigComparison::only_in_b;
    else if (difference.a->config_json != difference.b->config_json)
      difference.comparison = BestConfigComparison::different_config;
    else difference.comparison = BestConfigComparison::same_config;
    ordered.push_back(std::move(difference));
  }
  return ordered;
}

}  // namespace sparsejit::db
