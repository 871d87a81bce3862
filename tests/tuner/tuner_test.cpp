// tune_problem on the GPU: every candidate becomes a trial, the best is the fastest correct
// one, a second run resumes, and wrong or broken candidates are recorded without ending it;
// a pruned search and a stop leave the rest for a later run; a sparse_attention problem tuned
// end to end is what the runtime then runs.
#include <gtest/gtest.h>

#include "db/database.h"
#include "jit/device.h"
#include "jit/kernel_provider.h"
#include "runtime/database_cubin_store.h"
#include "runtime/gpu_record.h"
#include "runtime/runtime.h"
#include "templates/permute/permute_tuning.h"
#include "templates/sparse_attention/attention_tuning.h"
#include "tests/support/gpu_test.h"
#include "tests/support/test_support.h"
#include "tuner/tuner.h"

namespace sparsejit::tuner {
namespace {

using templates::PermuteDirection;
using templates::PermuteTuningProblem;

// Every vector width x threads x unroll of the permute space, for one head dim and direction.
constexpr int kCandidates = static_cast<int>(templates::kPermuteVectorBytes.size() *
                                             templates::kPermuteThreads.size() *
                                             templates::kPermuteUnroll.size());

// A permute problem with two planted faults: one candidate's gate result is reported wrong,
// and one extra candidate's source does not compile.
class FaultyPermuteProblem final : public templates::TuningProblem {
 public:
  FaultyPermuteProblem() : inner_(64, PermuteDirection::gather, {1, 2, 5000, 1}) {}
  std::string family() const override { return inner_.family(); }
  std::string key() const override { return inner_.key() + "|faulty"; }
  std::string description() const override { return inner_.description(); }
  std::vector<templates::TuningCandidate> candidates(const jit::Target& target) const override {
    std::vector<templates::TuningCandidate> all = inner_.candidates(target);
    templates::TuningCandidate broken = all.front();
    broken.config_json = R"({"broken":true})";
    broken.specialization.request.source += "\nthis does not compile;\n";
    all.push_back(broken);
    return all;
  }
  std::string default_config_json() const override { return inner_.default_config_json(); }
  void prepare() override { inner_.prepare(); }
  double check(const jit::Kernel& kernel, const templates::TuningCandidate& candidate,
               CUstream stream) override {
    const double error = inner_.check(kernel, candidate, stream);
    return candidate.config_json == wrong_config() ? 1.0 : error;
  }
  double error_bound() const override { return inner_.error_bound(); }
  void run(const jit::Kernel& kernel, const templates::TuningCandidate& candidate,
           CUstream stream) override {
    inner_.run(kernel, candidate, stream);
  }
  static std::string wrong_config() { return R"({"threads":128,"unroll":1,"vector_bytes":4})"; }

 private:
  PermuteTuningProblem inner_;
};

class TunerTest : public testing::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    database_.emplace(db::Database::open(directory_ / "tuning.db"));
    device_ = jit::query_device(0);
    gpu_id_ = database_->upsert_gpu(runtime::to_gpu_record(device_));
    store_ = std::make_unique<runtime::DatabaseCubinStore>(*database_);
    kernels_ = std::make_unique<jit::KernelProvider>(store_.get());
  }
  TuneEnvironment environment() {
    return {context(), jit::Target::for_compute_capability(device_.cc_major, device_.cc_minor),
            *kernels_, *database_, gpu_id_, device_.sm_clock_khz};
  }
  static TuneOptions quick() { return {.warmup_ms = 1, .measure_ms = 6, .rounds = 3}; }
  std::size_t stored_trials(const templates::TuningProblem& problem) {
    return database_->list_trials(gpu_id_, problem.family(), problem.key()).size();
  }

  testing::TempDirectory directory_;
  std::optional<db::Database> database_;
  jit::DeviceInfo device_;
  std::int64_t gpu_id_ = 0;
  std::unique_ptr<runtime::DatabaseCubinStore> store_;
  std::unique_ptr<jit::KernelProvider> kernels_;
};

TEST_F(TunerTest, MeasuresEveryCandidateAndKeepsTheFastest) {
  PermuteTuningProblem problem(128, PermuteDirection::gather, {1, 4, 20000, 3});
  int progress_calls = 0;
  const ProblemReport report = tune_problem(problem, environment(), quick(),
                                            [&](std::string_view, int, int) { ++progress_calls; });
  EXPECT_EQ(report.candidates, kCandidates);
  EXPECT_EQ(report.measured, kCandidates);
  EXPECT_EQ(report.resumed, 0);
  EXPECT_EQ(report.incorrect + report.failed, 0);
  EXPECT_EQ(progress_calls, kCandidates);
  ASSERT_TRUE(report.best.has_value());
  ASSERT_TRUE(report.default_ms.has_value());
  const auto trials = database_->list_trials(gpu_id_, "permute_tokens", problem.key());
  ASSERT_EQ(trials.size(), static_cast<std::size_t>(kCandidates));
  double fastest = 1e30;
  for (const db::StoredTrial& stored : trials) {
    ASSERT_EQ(stored.trial.status, db::TrialStatus::ok) << stored.trial.message;
    ASSERT_TRUE(stored.trial.median_ms.has_value());
    EXPECT_LE(*stored.trial.p20_ms, *stored.trial.median_ms);
    EXPECT_LE(*stored.trial.median_ms, *stored.trial.p80_ms);
    EXPECT_EQ(stored.trial.rel_error, 0.0);
    EXPECT_EQ(stored.trial.cubin_key.size(), 64u) << "the trial names the CUBIN it measured";
    fastest = std::min(fastest, *stored.trial.median_ms);
  }
  EXPECT_DOUBLE_EQ(report.best->median_ms, fastest);
  EXPECT_LE(report.best->median_ms, *report.default_ms);
}

// A permute problem whose one candidate runs its kernel four times per run: four times
// slower than its twin, it must be cut after the first round.
class OneSlowCandidateProblem final : public templates::TuningProblem {
 public:
  explicit OneSlowCandidateProblem(std::string key_suffix)
      : inner_(128, PermuteDirection::gather, {1, 4, 20000, 1}), key_suffix_(std::move(key_suffix)) {}
  std::string family() const override { return inner_.family(); }
  std::string key() const override { return inner_.key() + key_suffix_; }
  std::string description() const override { return inner_.description(); }
  std::vector<templates::TuningCandidate> candidates(const jit::Target& target) const override {
    return inner_.candidates(target);
  }
  std::string default_config_json() const override { return inner_.default_config_json(); }
  void prepare() override { inner_.prepare(); }
  double check(const jit::Kernel& kernel, const templates::TuningCandidate& candidate, CUstream stream) override {
    return inner_.check(kernel, candidate, stream);
  }
  double error_bound() const override { return inner_.error_bound(); }
  void run(const jit::Kernel& kernel, const templates::TuningCandidate& candidate, CUstream stream) override {
    for (int i = 0; i < (candidate.config_json == slow_config() ? 4 : 1); ++i) inner_.run(kernel, candidate, stream);
  }
  std::string slow_config() const { return inner_.default_config_json(); }

 private:
  PermuteTuningProblem inner_;
  std::string key_suffix_;
};

TEST_F(TunerTest, ClearlySlowerCandidatesAreCutAfterTheFirstRound) {
  OneSlowCandidateProblem problem("|one-slow");
  const ProblemReport report = tune_problem(problem, environment(), quick());
  EXPECT_EQ(report.measured, kCandidates);
  EXPECT_GE(report.cut, 1);
  EXPECT_LT(report.cut, kCandidates);
  for (const db::StoredTrial& stored : database_->list_trials(gpu_id_, problem.family(), problem.key())) {
    ASSERT_EQ(stored.trial.status, db::TrialStatus::ok);
    ASSERT_TRUE(stored.trial.median_ms.has_value());
    if (stored.trial.config_json == problem.slow_config()) {
      EXPECT_TRUE(stored.trial.message.starts_with("timed in the first of 3 rounds only: "))
          << stored.trial.message;
      EXPECT_NE(report.best->config_json, stored.trial.config_json);
    }
    if (stored.trial.config_json == report.best->config_json) {
      EXPECT_EQ(stored.trial.message, "");
    }
  }
  // cut_ratio 0: every candidate times every round.
  OneSlowCandidateProblem again("|one-slow-uncut");
  TuneOptions uncut = quick();
  uncut.cut_ratio = 0;
  EXPECT_EQ(tune_problem(again, environment(), uncut).cut, 0);
}

TEST_F(TunerTest, ASecondRunResumesWithoutMeasuringAgain) {
  PermuteTuningProblem problem(64, PermuteDirection::scatter, {1, 2, 5000, 2});
  tune_problem(problem, environment(), quick());
  const ProblemReport again = tune_problem(problem, environment(), quick());
  EXPECT_EQ(again.measured, 0);
  EXPECT_EQ(again.resumed, kCandidates);
  EXPECT_EQ(database_->list_trials(gpu_id_, "permute_tokens", problem.key()).size(),
            static_cast<std::size_t>(kCandidates));
  EXPECT_TRUE(again.best.has_value());
}

TEST_F(TunerTest, WrongAndBrokenCandidatesAreRecordedAndTheRunGoesOn) {
  FaultyPermuteProblem problem;
  const ProblemReport report = tune_problem(problem, environment(), quick());
  EXPECT_EQ(report.candidates, kCandidates + 1);  // the broken one added
  EXPECT_EQ(report.incorrect, 1);
  EXPECT_EQ(report.failed, 1);
  EXPECT_EQ(report.measured, kCandidates - 1);  // all but the wrong one; the broken one is extra
  ASSERT_TRUE(report.best.has_value());
  EXPECT_NE(report.best->config_json, FaultyPermuteProblem::wrong_config());
  int incorrect = 0, failed = 0;
  for (const db::StoredTrial& stored : database_->list_trials(gpu_id_, "permute_tokens", problem.key())) {
    if (stored.trial.status == db::TrialStatus::incorrect) {
      ++incorrect;
      EXPECT_EQ(stored.trial.config_json, FaultyPermuteProblem::wrong_config());
    }
    if (stored.trial.status == db::TrialStatus::failed) {
      ++failed;
      EXPECT_NE(stored.trial.message.find("this does not compile"), std::string::npos)
          << "the NVRTC log belongs in the trial: " << stored.trial.message;
    }
  }
  EXPECT_EQ(incorrect, 1);
  EXPECT_EQ(failed, 1);
}

// A pruned search measures the built-in default first and at most max_candidates in all; a
// later exhaustive run measures only the rest.
TEST_F(TunerTest, APrunedSearchLeavesTheRestForALaterRun) {
  PermuteTuningProblem problem(128, PermuteDirection::gather, {1, 2, 5000, 1});
  TuneOptions pruned = quick();
  pruned.max_candidates = 3;
  const ProblemReport first = tune_problem(problem, environment(), pruned);
  EXPECT_EQ(first.measured, 3);
  EXPECT_EQ(first.untried, kCandidates - 3);
  EXPECT_FALSE(first.stopped);
  EXPECT_TRUE(first.default_ms.has_value()) << "the default goes first";
  const ProblemReport again = tune_problem(problem, environment(), pruned);
  EXPECT_EQ(again.measured, 0) << "the stored trials count against the cap";
  const ProblemReport rest = tune_problem(problem, environment(), quick());
  EXPECT_EQ(rest.measured, kCandidates - 3);
  EXPECT_EQ(rest.resumed, 3);
  EXPECT_EQ(stored_trials(problem), static_cast<std::size_t>(kCandidates));
}

// A stop (Ctrl-C in `sparsejit tune`) before or during a problem stores nothing half-done.
TEST_F(TunerTest, AStopLeavesNothingHalfDone) {
  PermuteTuningProblem problem(64, PermuteDirection::gather, {1, 2, 5000, 1});
  std::atomic<bool> stop{true};
  TuneOptions stopping = quick();
  stopping.stop = &stop;
  const ProblemReport stopped = tune_problem(problem, environment(), stopping);
  EXPECT_TRUE(stopped.stopped);
  EXPECT_EQ(stopped.measured, 0);
  EXPECT_EQ(stopped.untried, kCandidates);
  EXPECT_EQ(stored_trials(problem), 0u);

  // Stopped from the progress callback after the fourth gate: the gated ones are not timed.
  stop = false;
  const ProblemReport midway = tune_problem(problem, environment(), stopping, [&](std::string_view, int done, int) {
    if (done == 4) stop = true;
  });
  EXPECT_TRUE(midway.stopped);
  EXPECT_EQ(midway.measured, 0);
  EXPECT_EQ(stored_trials(problem), 0u);
  stop = false;
  EXPECT_EQ(tune_problem(problem, environment(), stopping).measured, kCandidates);
}

// One sparse_attention problem (fine bits, every tile of 128x128 blocks at D = 128, the gate
// on sampled query blocks) tuned end to end; a Runtime on that database then runs its best
// config for a call in the same buckets, at level exact.
TEST_F(TunerTest, ATunedAttentionProblemIsWhatTheRuntimeRuns) {
  using templates::HalfDtype;
  const templates::AttentionProblemKey key{{HalfDtype::bf16, 128, 128, 128, 16},
                                           templates::attention_buckets_of({2, 17776, 17776, 0.3})};
  templates::SparseAttentionTuningProblem problem(key);
  ASSERT_EQ(problem.key(), "sparse_attention|bf16|d128|b128x128|fine16|p0.3|n18k|bh1-3");
  const ProblemReport report = tune_problem(problem, environment(), quick());
  EXPECT_EQ(report.incorrect + report.failed, 0);
  EXPECT_EQ(report.measured, report.candidates);
  EXPECT_GE(report.candidates, 4);
  ASSERT_TRUE(report.best.has_value());
  ASSERT_TRUE(report.default_ms.has_value());
  for (const db::StoredTrial& stored : database_->list_trials(gpu_id_, "sparse_attention", problem.key())) {
    ASSERT_EQ(stored.trial.status, db::TrialStatus::ok) << stored.trial.config_json << ": " << stored.trial.message;
    EXPECT_LE(*stored.trial.rel_error, 1e-2) << stored.trial.config_json;
  }

  runtime::Runtime runtime({.device = 0, .database_path = database_->path()});
  const runtime::AttentionChoice& choice =
      runtime.attention_config({HalfDtype::bf16, 128, 128, 128, 16}, {1, 20000, 20000, 0.27});
  EXPECT_EQ(choice.level, runtime::LookupLevel::exact);
  EXPECT_EQ(choice.problem_key, problem.key());
  EXPECT_EQ(choice.config.tuning_json(), report.best->config_json);
}

}  // namespace
}  // namespace sparsejit::tuner
