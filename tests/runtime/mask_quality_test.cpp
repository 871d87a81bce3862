// The host side of the mask-quality measure: the oracle's recall curves and the density for
// a recall, by hand and against a brute force over every k-subset; the report's sums.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>

#include "runtime/mask_quality.h"
#include "tests/support/gpu_test.h"

namespace sparsejit::runtime {
namespace {

// One slice, 2 query blocks of 2 rows, 3 key blocks: each block row sums to its 2 rows.
TEST(OracleRecall, CurvesAndDensityByHand) {
  const std::vector<float> masses = {1.2f, 0.5f, 0.3f, 0.1f, 0.4f, 1.5f};
  const auto curves = oracle_recall_curves(masses, 1, 2, 3, 4);
  ASSERT_EQ(curves.size(), 1u);
  ASSERT_EQ(curves[0].size(), 4u);
  EXPECT_DOUBLE_EQ(curves[0][0], 0.0);
  EXPECT_NEAR(curves[0][1], (1.2 + 1.5) / 4, 1e-7);
  EXPECT_NEAR(curves[0][2], (1.7 + 1.9) / 4, 1e-7);
  EXPECT_NEAR(curves[0][3], 1.0, 1e-7);
  EXPECT_DOUBLE_EQ(density_for_recall(curves[0], 0.5), 1.0 / 3);
  EXPECT_DOUBLE_EQ(density_for_recall(curves[0], 0.9), 2.0 / 3);
  EXPECT_DOUBLE_EQ(density_for_recall(curves[0], 0.95), 1.0);
  EXPECT_THROW(oracle_recall_curves(masses, 1, 2, 4, 4), std::invalid_argument);
  EXPECT_THROW(density_for_recall(std::vector<double>{0.0}, 0.5), std::invalid_argument);
}

// Random masses: for every k the curve is the best sum over all k-subsets of each row.
TEST(OracleRecall, MatchesBruteForceOverSubsets) {
  std::mt19937_64 generator = testing::fresh_generator();
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  const int slices = 3, q_blocks = 5, kv_blocks = 7, tokens_q = 70;
  std::vector<float> masses(static_cast<std::size_t>(slices) * q_blocks * kv_blocks);
  for (float& mass : masses) mass = uniform(generator);
  const auto curves = oracle_recall_curves(masses, slices, q_blocks, kv_blocks, tokens_q);
  for (int slice = 0; slice < slices; ++slice)
    for (int k = 0; k <= kv_blocks; ++k) {
      double total = 0.0;
      for (int qb = 0; qb < q_blocks; ++qb) {
        double best = 0.0;
        for (unsigned subset = 0; subset < (1u << kv_blocks); ++subset) {
          if (std::popcount(subset) != k) continue;
          double sum = 0.0;
          for (int kb = 0; kb < kv_blocks; ++kb)
            if (subset & (1u << kb)) sum += masses[(static_cast<std::size_t>(slice) * q_blocks + qb) * kv_blocks + kb];
          best = std::max(best, sum);
        }
        total += best;
      }
      EXPECT_NEAR(curves[slice][k], total / tokens_q, 1e-9) << "slice " << slice << " k " << k;
    }
}

TEST(MaskQualityReport, AveragesRecallAndAddsSquaresOverSlices) {
  MaskQualityReport report;
  report.recall = {0.9, 0.7};
  report.squared_error = {1.0, 3.0};
  report.squared_reference = {100.0, 300.0};
  EXPECT_DOUBLE_EQ(report.mean_recall(), 0.8);
  EXPECT_DOUBLE_EQ(report.relative_error(), std::sqrt(4.0 / 400.0));
  EXPECT_DOUBLE_EQ(report.slice_relative_error(1), std::sqrt(3.0 / 300.0));
}

}  // namespace
}  // namespace sparsejit::runtime
