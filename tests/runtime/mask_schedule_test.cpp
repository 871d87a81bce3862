// MaskSchedule without a GPU: every step of the default (DFSAttn) schedule for a sparse and
// a dense layer, custom schedules, the edges (refresh every step, no warm-up, all warm-up,
// steps past the end), threshold schedules and the config's refusals.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "runtime/mask_schedule.h"

namespace sparsejit::runtime {
namespace {

MaskDecision dense() { return {}; }
MaskDecision refresh(double density, int window) { return {MaskAction::refresh, density, window}; }
MaskDecision reuse(double density, int window) { return {MaskAction::reuse, density, window}; }

// The default schedule, written out step by step from DFSAttn's rule (not from the code's
// formula): dense 0..11; refresh at 12 (0.3), 24 (0.2), 36 (0.1), 48 (0.1 again); reuse
// between.
TEST(MaskSchedule, EveryStepOfTheDefaultSchedule) {
  const MaskSchedule schedule;
  for (int step = 0; step < 50; ++step) {
    MaskDecision expected;
    if (step < 12) expected = dense();
    else if (step == 12) expected = refresh(0.3, 0);
    else if (step < 24) expected = reuse(0.3, 0);
    else if (step == 24) expected = refresh(0.2, 1);
    else if (step < 36) expected = reuse(0.2, 1);
    else if (step == 36) expected = refresh(0.1, 2);
    else if (step < 48) expected = reuse(0.1, 2);
    else if (step == 48) expected = refresh(0.1, 3);
    else expected = reuse(0.1, 3);
    for (int layer : {1, 17, 39}) EXPECT_EQ(schedule.decide(step, layer), expected) << "step " << step << " layer " << layer;
    EXPECT_EQ(schedule.decide(step, 0), dense()) << "layer 0 is always dense (step " << step << ")";
  }
  EXPECT_DOUBLE_EQ(schedule.max_density(), 0.3);
}

TEST(MaskSchedule, RefreshCountOfTheDefaultScheduleIsFourPerSparseLayer) {
  const MaskSchedule schedule;
  int refreshes = 0, reuses = 0, dense_steps = 0;
  for (int step = 0; step < 50; ++step) {
    const MaskAction action = schedule.decide(step, 5).action;
    refreshes += action == MaskAction::refresh;
    reuses += action == MaskAction::reuse;
    dense_steps += action == MaskAction::dense;
  }
  EXPECT_EQ(refreshes, 4);
  EXPECT_EQ(reuses, 34);
  EXPECT_EQ(dense_steps, 12);
}

TEST(MaskSchedule, CustomScheduleWithSeveralDenseLayers) {
  const MaskSchedule schedule({.steps = 30, .dense_steps = 5, .refresh_interval = 10,
                               .densities = {0.5, 0.25}, .dense_layers = {0, 3, 7}});
  for (int layer : {0, 3, 7})
    for (int step = 0; step < 30; ++step) EXPECT_EQ(schedule.decide(step, layer), dense());
  EXPECT_EQ(schedule.decide(4, 1), dense());
  EXPECT_EQ(schedule.decide(5, 1), refresh(0.5, 0));
  EXPECT_EQ(schedule.decide(14, 1), reuse(0.5, 0));
  EXPECT_EQ(schedule.decide(15, 1), refresh(0.25, 1));
  EXPECT_EQ(schedule.decide(25, 1), refresh(0.25, 2));  // the last density repeats
  EXPECT_EQ(schedule.decide(29, 1), reuse(0.25, 2));
  EXPECT_DOUBLE_EQ(schedule.max_density(), 0.5);
}

TEST(MaskSchedule, RefreshIntervalOfOneRefreshesEveryStep) {
  const MaskSchedule schedule({.steps = 6, .dense_steps = 2, .refresh_interval = 1,
                               .densities = {0.4, 0.3, 0.2}, .dense_layers = {}});
  EXPECT_EQ(schedule.decide(1, 0), dense());
  EXPECT_EQ(schedule.decide(2, 0), refresh(0.4, 0));
  EXPECT_EQ(schedule.decide(3, 0), refresh(0.3, 1));
  EXPECT_EQ(schedule.decide(4, 0), refresh(0.2, 2));
  EXPECT_EQ(schedule.decide(5, 0), refresh(0.2, 3));
}

TEST(MaskSchedule, NoWarmUpRefreshesAtTheFirstStep) {
  const MaskSchedule schedule({.steps = 4, .dense_steps = 0, .refresh_interval = 3, .densities = {0.1},
                               .dense_layers = {}});
  EXPECT_EQ(schedule.decide(0, 2), refresh(0.1, 0));
  EXPECT_EQ(schedule.decide(2, 2), reuse(0.1, 0));
  EXPECT_EQ(schedule.decide(3, 2), refresh(0.1, 1));
}

TEST(MaskSchedule, AllStepsWarmUpMeansAlwaysDense) {
  const MaskSchedule schedule({.steps = 3, .dense_steps = 3, .refresh_interval = 1, .densities = {0.2},
                               .dense_layers = {}});
  for (int step = 0; step < 3; ++step) EXPECT_EQ(schedule.decide(step, 1), dense());
}

TEST(MaskSchedule, StepsPastTheEndAndNegativeValuesAreRefused) {
  const MaskSchedule schedule;
  for (auto [step, layer] : {std::pair{50, 1}, std::pair{1000, 1}, std::pair{-1, 1}, std::pair{3, -1}}) {
    try {
      schedule.decide(step, layer);
      ADD_FAILURE() << "step " << step << " layer " << layer << " was accepted";
    } catch (const std::invalid_argument& error) {
      const std::string what = error.what();
      EXPECT_NE(what.find(step < 0 || step >= 50 ? "step " + std::to_string(step) : "layer -1"), std::string::npos)
          << what;
    }
  }
  EXPECT_NO_THROW(schedule.decide(49, 1));
}

TEST(MaskSchedule, InvalidConfigsSayWhichField) {
  const auto message = [](MaskScheduleConfig config) {
    try {
      MaskSchedule schedule(std::move(config));
    } catch (const std::invalid_argument& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message({.steps = 0}).find("steps = 0"), std::string::npos);
  EXPECT_NE(message({.steps = 10, .dense_steps = 11}).find("dense_steps = 11"), std::string::npos);
  EXPECT_NE(message({.dense_steps = -1}).find("dense_steps = -1"), std::string::npos);
  EXPECT_NE(message({.refresh_interval = 0}).find("refresh_interval = 0"), std::string::npos);
  EXPECT_NE(message({.densities = {}}).find("densities and thresholds are both empty"), std::string::npos);
  EXPECT_NE(message({.thresholds = {0.9}}).find("densities and thresholds are both given"), std::string::npos);
  EXPECT_NE(message({.densities = {}, .thresholds = {0.9, 1.5}}).find("thresholds[1] = 1.5"), std::string::npos);
  EXPECT_NE(message({.densities = {}, .thresholds = {0.0}}).find("thresholds[0]"), std::string::npos);
  EXPECT_NE(message({.densities = {0.3, 0.0}}).find("densities[1]"), std::string::npos);
  EXPECT_NE(message({.densities = {1.5}}).find("densities[0]"), std::string::npos);
  EXPECT_NE(message({.dense_layers = {2, -4}}).find("negative layer -4"), std::string::npos);
  EXPECT_NE(message({.dense_layers = {1, 5, 1}}).find("layer 1 twice"), std::string::npos);
  EXPECT_EQ(message({.steps = 1, .dense_steps = 1, .refresh_interval = 1, .densities = {1.0}}), "accepted");
}

// A threshold schedule: the same steps and windows, each window's threshold (the last
// repeats), density 0; the row pitch it needs is KB (max_density 1).
TEST(MaskSchedule, ThresholdScheduleGivesEachWindowItsThreshold) {
  const MaskSchedule schedule({.steps = 20, .dense_steps = 4, .refresh_interval = 5, .densities = {},
                               .dense_layers = {0}, .thresholds = {0.95, 0.9}});
  EXPECT_TRUE(schedule.by_threshold());
  const auto by_threshold = [](MaskAction action, double threshold, int window) {
    return MaskDecision{.action = action, .density = 0.0, .window = window, .threshold = threshold};
  };
  EXPECT_EQ(schedule.decide(3, 1), dense());
  EXPECT_EQ(schedule.decide(4, 1), by_threshold(MaskAction::refresh, 0.95, 0));
  EXPECT_EQ(schedule.decide(8, 1), by_threshold(MaskAction::reuse, 0.95, 0));
  EXPECT_EQ(schedule.decide(9, 1), by_threshold(MaskAction::refresh, 0.9, 1));
  EXPECT_EQ(schedule.decide(14, 1), by_threshold(MaskAction::refresh, 0.9, 2));  // the last repeats
  EXPECT_EQ(schedule.decide(18, 1), by_threshold(MaskAction::reuse, 0.9, 2));
  EXPECT_EQ(schedule.decide(19, 1), by_threshold(MaskAction::refresh, 0.9, 3));
  EXPECT_EQ(schedule.decide(9, 0), dense());
  EXPECT_TRUE(schedule.decide(9, 1).by_threshold());
  EXPECT_FALSE(schedule.decide(9, 0).by_threshold());
  EXPECT_DOUBLE_EQ(schedule.max_density(), 1.0);
  EXPECT_FALSE(MaskSchedule().by_threshold());
  EXPECT_FALSE(MaskSchedule().decide(12, 1).by_threshold());
}

TEST(MaskSchedule, ActionsHaveNames) {
  EXPECT_EQ(to_string(MaskAction::dense), "dense");
  EXPECT_EQ(to_string(MaskAction::refresh), "refresh");
  EXPECT_EQ(to_string(MaskAction::reuse), "reuse");
}

}  // namespace
}  // namespace sparsejit::runtime
