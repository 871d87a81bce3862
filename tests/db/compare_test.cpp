// compare_best_configs: the four categories, GPUs matched by fingerprint and not by id.
#include "db/compare.h"

#include <gtest/gtest.h>

#include "tests/db/sample_records.h"
#include "tests/support/test_support.h"

namespace sparsejit::db {
namespace {

using testing::h100;
using testing::h100_pcie;
using testing::ok_trial;

void record(Database& database, std::int64_t gpu, const std::string& problem, const std::string& config,
            double ms) {
  TrialRecord trial = ok_trial(gpu, config, ms);
  trial.problem_key = problem;
  database.record_trial(trial);
}

TEST(CompareBestConfigs, SortsEveryProblemIntoOnlyInAOnlyInBDifferentOrSame) {
  testing::TempDirectory directory;
  Database a = Database::open(directory / "a.db");
  Database b = Database::open(directory / "b.db");
  const std::int64_t a_sxm = a.upsert_gpu(h100());
  const std::int64_t b_pcie = b.upsert_gpu(h100_pcie());  // first, so the SXM's id differs between A and B
  const std::int64_t b_sxm = b.upsert_gpu(h100());
  ASSERT_NE(a_sxm, b_sxm);
  record(a, a_sxm, "p1", R"({"vec":8})", 2.0);  // only in A
  record(a, a_sxm, "p2", R"({"vec":8})", 2.0);  // different: B is faster
  record(b, b_sxm, "p2", R"({"vec":16})", 1.5);
  record(a, a_sxm, "p3", R"({"vec":4})", 1.0);  // same config, other time
  record(b, b_sxm, "p3", R"({"vec":4})", 1.1);
  record(b, b_pcie, "p1", R"({"vec":8})", 3.0);  // only in B: A has p1 on the SXM only

  const std::vector<BestConfigDifference> differences = compare_best_configs(a, b);
  ASSERT_EQ(differences.size(), 4u);
  EXPECT_EQ(differences[0].gpu_fingerprint, h100().fingerprint());
  EXPECT_EQ(differences[0].problem_key, "p1");
  EXPECT_EQ(differences[0].comparison, BestConfigComparison::only_in_a);
  EXPECT_FALSE(differences[0].b_over_a().has_value());
  EXPECT_EQ(differences[1].problem_key, "p2");
  EXPECT_EQ(differences[1].comparison, BestConfigComparison::different_config);
  EXPECT_EQ(differences[1].a->config_json, R"({"vec":8})");
  EXPECT_EQ(differences[1].b->config_json, R"({"vec":16})");
  EXPECT_DOUBLE_EQ(*differences[1].b_over_a(), 0.75);
  EXPECT_EQ(differences[2].problem_key, "p3");
  EXPECT_EQ(differences[2].comparison, BestConfigComparison::same_config);
  EXPECT_DOUBLE_EQ(*differences[2].b_over_a(), 1.1);
  EXPECT_EQ(differences[3].gpu_fingerprint, h100_pcie().fingerprint());
  EXPECT_EQ(differences[3].comparison, BestConfigComparison::only_in_b);
  EXPECT_EQ(differences[3].b->gpu_id, b_pcie);

  // Swapping the databases swaps the categories.
  const std::vector<BestConfigDifference> swapped = compare_best_configs(b, a);
  ASSERT_EQ(swapped.size(), 4u);
  EXPECT_EQ(swapped[0].comparison, BestConfigComparison::only_in_b);
  EXPECT_EQ(swapped[3].comparison, BestConfigComparison::only_in_a);
  const std::vector<BestConfigDifference> itself = compare_best_configs(a, a);
  ASSERT_EQ(itself.size(), 3u);
  for (const BestConfigDifference& difference : itself)
    EXPECT_EQ(difference.comparison, BestConfigComparison::same_config) << difference.problem_key;
}

}  // namespace
}  // namespace sparsejit::db
