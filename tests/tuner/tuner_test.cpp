// tune_problem on the GPU: every candidate becomes a trial, the best is the fastest correct
// one, a second run resumes, and wrong or broken candidates are recorded without ending it.
#include <gtest/gtest.h>

#include "db/database.h"
#include "jit/device.h"
#include "jit/kernel_provider.h"
#include "runtime/database_cubin_store.h"
#include "runtime/gpu_record.h"
#include "templates/permute/permute_tuning.h"
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

}  // namespace
}  // namespace sparsejit::tuner
