#pragma once
// Tunes one problem of a kernel family on one GPU: every candidate is compiled (or loaded
// from the database), gated against the CPU reference, timed by the protocol of
// tuner/timing.h with the candidates interleaved (the clearly slower ones only in the first
// round), and stored as a trial; the fastest correct one becomes the problem's best.
// Candidates with a stored trial are skipped, so a run that was interrupted resumes where it
// stopped.
#include <atomic>
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
  // Successive halving's first cut: after the first round, a candidate whose median is above
  // cut_ratio x the fastest median of that round is not timed further; its trial keeps the
  // first round's samples and says so. 1.3 is far above the rounds' noise (1-3% on an H100)
  // and below the gaps between tiles that matter (the full grid's mma.sync tiles run about
  // 2x the wgmma ones on sm_90). 0 times every candidate in every round.
  double cut_ratio = 1.3;
  // Pruned search: at most this many candidates of a problem with a stored trial, stored ones
  // counted; the others stay untried for a later run. Candidates go in order of promise: the
  // built-in default, then the tiles that are the best of most of the family's problems on
  // this GPU, then the rest in a random order fixed by the problem key. None: exhaustive.
  std::optional<int> max_candidates = std::nullopt;
  // Set (from a signal handler, say) to stop between two trials: what was measured is stored,
  // the rest is left for a later run, which resumes.
  const std::atomic<bool>* stop = nullptr;
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
  int untried = 0;    // left out by max_candidates, or not reached before a stop
  int cut = 0;        // of the measured: timed in the first round only (TuneOptions::cut_ratio)
  bool stopped = false;  // options.stop was set before the problem was done
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
