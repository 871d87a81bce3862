// Compares the best configs of two tuning databases, problem by problem.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "db/database.h"

namespace sparsejit::db {

enum class BestConfigComparison {
  only_in_a,        // a best config in A, none in B
  only_in_b,
  different_config, // both have one, with different config JSON
  same_config,      // both have one with the same config JSON (the times may differ)
};

std::string_view to_string(BestConfigComparison comparison);  // "only_in_a", "only_in_b", "different", "same"

// One (GPU fingerprint, family, problem) that has a best config in A, in B or in both.
struct BestConfigDifference {
  std::string gpu_fingerprint;
  std::string family;
  std::string problem_key;
  BestConfigComparison comparison = BestConfigComparison::same_config;
  std::optional<BestConfig> a;  // its gpu_id and trial_id are A's row ids
  std::optional<BestConfig> b;  // B's
  // B's median over A's when both have one: below 1, B's best is faster.
  std::optional<double> b_over_a() const;
};

// Every (GPU fingerprint, family, problem) with a best config in A or B, ordered by them.
// GPUs are matched by fingerprint, never by row id.
std::vector<BestConfigDifference> compare_best_configs(const Database& a, const Database& b);

}  // namespace sparsejit::db
