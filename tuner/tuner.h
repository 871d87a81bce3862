#pragma once
// Tunes one problem of a kernel family on one GPU: every candidate is compiled (or loaded
// from the database), gated against the CPU reference, timed by the protocol of
// tuner/timing.h with the candidates interleaved, and stored as a trial; the fastest correct
// one becomes the problem's best. Candidates with a stored trial are skipped, so a run that
// was interrupted resumes where it stopped.
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "db/database.h"
#include "jit/device.h"
#include "jit/kernel_provider.h"
#include "jit/target.h"
#include "templates/tuning.h"

namespace sparsejit::tuner {

struct TuneOptions {
  double warmup_ms = 10;   // per candidate, before any timing
  double measure_ms = 60;  // per candidate, spread over the rounds
  int rounds = 3;          // each round times every candidate once, in turn
};

struct TuneEnvironment {
  const jit::DeviceContext& context;
  jit::Target target;
  jit::KernelProvider& kernels;
  db::Database& database;
  std::int64_t gpu_id;       // from Database::upsert_gpu
  int sm_clock_khz;          // recorded with each trial
};

struct ProblemReport {
  std::string key;
  std::string description;
  int candidates = 0;
  int measured = 0;   // timed in this run
  int resumed = 0;    // skipped: a trial was already stored
  int incorrect = 0;  // failed the correctness gate (this run)
  int failed = 0;     // did not compile or faulted (this run)
  std::optional<db::BestConfig> best;
  std::optional<double> default_ms;  // the built-in default's median, once measured
};

// Called as work advances: (what, done, total).
using ProgressCallback = std::function<void(std::string_view, int, int)>;

// A candidate faulted and left the GPU context unusable. Its trial is stored as failed;
// running the tuner again resumes after it.
class ContextLost : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

ProblemReport tune_problem(templates::TuningProblem& problem, const TuneEnvironment& environment,
                           const TuneOptions& options = {}, const ProgressCallback& progress = {});

}  // namespace sparsejit::tuner
