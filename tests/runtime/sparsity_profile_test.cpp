// Sparsity profiles without a GPU: the per-head density from block masses (the least k of the
// oracle reaching tau, the maximum over batch entries), the aggregation over prompts (max),
// and the run-time profile: clipping to [min, max], the fallback to the nearest profiled step
// at or before, no answer for an unprofiled layer or an earlier step, the refusals, and the
// load from a database.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "db/database.h"
#include "runtime/sparsity_profile.h"
#include "tests/support/test_support.h"

namespace sparsejit::runtime {
namespace {

db::SparsityProfile row(int step, int layer, int head, double density, const std::string& model = "wan") {
  return {.model = model, .step = step, .layer = layer, .head = head, .density = density, .tau = 0.95};
}

std::string refusal(const std::vector<db::SparsityProfile>& rows, DensityLimits limits = {}) {
  try {
    HeadDensityProfile profile(rows, limits);
  } catch (const std::invalid_argument& error) {
    return error.what();
  }
  return "accepted";
}

// One query block of 10 rows and 4 key blocks (a row's masses sum to 10), 2 batch entries x
// 2 heads. The oracle keeps the heaviest blocks: tau 0.95 needs 3 of {7, 2, 1, 0} (0.7,
// 0.9, 1.0), 1 of {9.6, 0.4, 0, 0}, all 4 of an even row, 1 of {10, 0, 0, 0}.
TEST(ProfiledHeadDensities, LeastOracleDensityReachingTauMaxOverTheBatch) {
  const std::vector<float> masses = {7, 2, 1, 0,     2.5f, 2.5f, 2.5f, 2.5f,   // batch 0: heads 0, 1
                                     9.6f, 0.4f, 0, 0, 10, 0, 0, 0};             // batch 1
  EXPECT_EQ(profiled_head_densities(masses, 2, 2, 1, 4, 10, 0.95), (std::vector<double>{0.75, 1.0}));
  EXPECT_EQ(profiled_head_densities(masses, 2, 2, 1, 4, 10, 0.85), (std::vector<double>{0.5, 1.0}));
  EXPECT_EQ(profiled_head_densities(masses, 2, 2, 1, 4, 10, 0.5), (std::vector<double>{0.25, 0.5}));
  // One batch entry alone.
  const std::vector<float> second(masses.begin() + 8, masses.end());
  EXPECT_EQ(profiled_head_densities(second, 1, 2, 1, 4, 10, 0.95), (std::vector<double>{0.25, 0.25}));
  for (double tau : {0.0, -0.1, 1.01})
    EXPECT_THROW(profiled_head_densities(masses, 2, 2, 1, 4, 10, tau), std::invalid_argument) << tau;
  EXPECT_THROW(profiled_head_densities(masses, 2, 3, 1, 4, 10, 0.95), std::invalid_argument) << "sizes";
}

TEST(ProfiledHeadDensities, AggregationOverPromptsKeepsTheDensest) {
  std::vector<double> densities;
  keep_densest(densities, std::vector<double>{0.25, 0.5, 1.0});
  EXPECT_EQ(densities, (std::vector<double>{0.25, 0.5, 1.0}));
  keep_densest(densities, std::vector<double>{0.5, 0.125, 0.75});
  EXPECT_EQ(densities, (std::vector<double>{0.5, 0.5, 1.0}));
  EXPECT_THROW(keep_densest(densities, std::vector<double>{0.5}), std::invalid_argument);
}

TEST(HeadDensityProfile, ClipsToTheLimits) {
  const std::vector<db::SparsityProfile> rows = {row(0, 3, 0, 0.01), row(0, 3, 1, 0.4), row(0, 3, 2, 1.0)};
  EXPECT_EQ(HeadDensityProfile(rows).head_densities(0, 3), (std::vector<double>{0.05, 0.4, 1.0}));
  EXPECT_EQ(HeadDensityProfile(rows, {.min_density = 0.1, .max_density = 0.5}).head_densities(0, 3),
            (std::vector<double>{0.1, 0.4, 0.5}));
  EXPECT_EQ(HeadDensityProfile(rows).heads(), 3);
  EXPECT_EQ(HeadDensityProfile(rows).model(), "wan");
}

// Profiled at steps 12 and 24 for layer 1, step 24 only for layer 2.
TEST(HeadDensityProfile, FallsBackToTheNearestProfiledStepAtOrBefore) {
  const HeadDensityProfile profile({row(24, 1, 0, 0.3), row(24, 1, 1, 0.6), row(12, 1, 1, 0.2), row(12, 1, 0, 0.1),
                                    row(24, 2, 0, 0.9), row(24, 2, 1, 0.8)});
  EXPECT_EQ(profile.head_densities(12, 1), (std::vector<double>{0.1, 0.2}));
  EXPECT_EQ(profile.head_densities(23, 1), (std::vector<double>{0.1, 0.2}));
  EXPECT_EQ(profile.head_densities(24, 1), (std::vector<double>{0.3, 0.6}));
  EXPECT_EQ(profile.head_densities(49, 1), (std::vector<double>{0.3, 0.6}));
  EXPECT_EQ(profile.head_densities(11, 1), std::nullopt) << "before the first profiled step";
  EXPECT_EQ(profile.head_densities(30, 2), (std::vector<double>{0.9, 0.8}));
  EXPECT_EQ(profile.head_densities(20, 2), std::nullopt) << "layer 1's step 12 must not leak into layer 2";
  EXPECT_EQ(profile.head_densities(30, 0), std::nullopt) << "an unprofiled layer";
  EXPECT_EQ(profile.head_densities(30, 3), std::nullopt) << "past the last profiled layer";
  EXPECT_THROW(profile.head_densities(-1, 1), std::invalid_argument);
  EXPECT_THROW(profile.head_densities(1, -1), std::invalid_argument);
}

TEST(HeadDensityProfile, RefusalsSayWhy) {
  EXPECT_NE(refusal({}).find("no rows"), std::string::npos);
  EXPECT_NE(refusal({row(0, 0, 0, 0.5), row(0, 0, 1, 0.5, "cog")}).find("two models"), std::string::npos);
  EXPECT_NE(refusal({row(0, 0, 0, 0.5), row(0, 0, 0, 0.6)}).find("head 0 twice"), std::string::npos);
  EXPECT_NE(refusal({row(0, 0, 0, 0.5), row(0, 0, 2, 0.5)}).find("heads are not 0..1"), std::string::npos);
  EXPECT_NE(refusal({row(0, 0, 0, 0.5), row(0, 1, 0, 0.5), row(0, 1, 1, 0.5)}).find("2 heads, other keys 1"),
            std::string::npos);
  EXPECT_NE(refusal({row(0, 0, 0, 0.5)}, {.min_density = 0.0}).find("0 < min <= max <= 1"), std::string::npos);
  EXPECT_NE(refusal({row(0, 0, 0, 0.5)}, {.min_density = 0.6, .max_density = 0.5}).find("0 < min <= max <= 1"),
            std::string::npos);
  EXPECT_NE(refusal({row(0, 0, 0, 0.5)}, {.max_density = 1.5}).find("0 < min <= max <= 1"), std::string::npos);
}

TEST(HeadDensityProfile, LoadsOneModelFromTheDatabase) {
  testing::TempDirectory directory;
  db::Database database = db::Database::open(directory / "tuning.db");
  database.replace_sparsity_profiles({row(12, 1, 0, 0.2), row(12, 1, 1, 0.4), row(12, 1, 0, 0.9, "cog")});
  const HeadDensityProfile profile = HeadDensityProfile::load(database, "wan");
  EXPECT_EQ(profile.heads(), 2);
  EXPECT_EQ(profile.head_densities(13, 1), (std::vector<double>{0.2, 0.4}));
  try {
    HeadDensityProfile::load(database, "hunyuan");
    ADD_FAILURE() << "a model without rows must be refused";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("no profile of model 'hunyuan'"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace sparsejit::runtime
