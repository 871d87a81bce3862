#include "tuner/tuner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "jit/device.h"
#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "jit/error.h"
#include "tuner/timing.h"

namespace sparsejit::tuner {
namespace {

struct Measured {
  const templates::TuningCandidate* candidate;
  jit::Kernel kernel;
  std::string cubin_key;
  double rel_error;
  std::vector<double> samples;
  std::string cut;  // why timing stopped after the first round; empty: every round
};

db::TrialRecord trial_of(const templates::TuningProblem& problem, const TuneEnvironment& environment,
                         const templates::TuningCandidate& candidate) {
  db::TrialRecord trial;
  trial.gpu_id = environment.gpu_id;
  trial.family = problem.family();
  trial.problem_key = problem.key();
  trial.config_json = candidate.config_json;
  trial.sm_clock_khz = environment.sm_clock_khz;
  return trial;
}

// After a CUDA error: is the context still usable, or did a fault poison it for good?
bool context_usable() { return jit::driver().cuCtxSynchronize() == CUDA_SUCCESS; }

// The candidates in the order a pruned search tries them (TuneOptions::max_candidates): the
// built-in default, then the configs that are the best of most of the family's problems on
// this GPU, then the others in a random order that the problem key fixes.
std::vector<templates::TuningCandidate> in_order_of_promise(std::vector<templates::TuningCandidate> candidates,
                                                            const templates::TuningProblem& problem,
                                                            const TuneEnvironment& environment) {
  std::map<std::string, int> wins;
  for (const db::BestConfig& best : environment.database.list_best_configs())
    if (best.gpu_id == environment.gpu_id && best.family == problem.family()) ++wins[best.config_json];
  const std::string key = problem.key();
  std::seed_seq seed(key.begin(), key.end());
  std::mt19937 generator(seed);
  std::shuffle(candidates.begin(), candidates.end(), generator);
  const std::string default_json = problem.default_config_json();
  const auto rank = [&](const templates::TuningCandidate& candidate) {
    if (candidate.config_json == default_json) return std::numeric_limits<int>::min();
    const auto found = wins.find(candidate.config_json);
    return found == wins.end() ? 0 : -found->second;
  };
  std::stable_sort(candidates.begin(), candidates.end(),
                   [&](const auto& a, const auto& b) { return rank(a) < rank(b); });
  return candidates;
}

}  // namespace

ProblemReport tune_problem(templates::TuningProblem& problem, const TuneEnvironment& environment,
                           const TuneOptions& options, const ProgressCallback& progress) {
  ProblemReport report;
  report.key = problem.key();
  report.description = problem.description();
  std::vector<templates::TuningCandidate> candidates = problem.candidates(environment.target);
  if (options.max_candidates) candidates = in_order_of_promise(std::move(candidates), problem, environment);
  report.candidates = static_cast<int>(candidates.size());
  const auto stopping = [&] { return options.stop != nullptr && options.stop->load(); };

  std::set<std::string> done;
  for (const db::StoredTrial& stored :
       environment.database.list_trials(environment.gpu_id, problem.family(), problem.key()))
    done.insert(stored.trial.config_json);
  int with_trial = 0;  // candidates stored or about to be
  for (const templates::TuningCandidate& candidate : candidates) with_trial += done.count(candidate.config_json) != 0;
  const int allowed = options.max_candidates.value_or(report.candidates);

  const jit::ScopedCurrentContext current(environment.context);  // the caller's again on return
  jit::Stream stream;  // destroyed before the caller's context is restored
  bool prepared = false;  // inputs are made only when something is measured (not on a resume)
  std::vector<Measured> measured;
  int step = 0;
  const auto advance = [&](std::string_view what) {
    if (progress) progress(what, ++step, report.candidates);
  };

  // Compile (or load), then gate every candidate not tuned before.
  for (const templates::TuningCandidate& candidate : candidates) {
    if (done.count(candidate.config_json) != 0) {
      ++report.resumed;
      advance("stored");
      continue;
    }
    if (with_trial >= allowed || stopping()) {
      ++report.untried;
      advance("left out");
      continue;
    }
    ++with_trial;
    if (!prepared) {
      problem.prepare();
      prepared = true;
    }
    db::TrialRecord trial = trial_of(problem, environment, candidate);
    try {
      const jit::Kernel kernel = environment.kernels.kernel(environment.context, candidate.specialization);
      // The stored CUBIN the kernel came from (by its source key: possibly another NVRTC's).
      trial.cubin_key = environment.kernels.stored_key(candidate.specialization).value_or("");
      const double error = problem.check(kernel, candidate, stream.handle());
      if (!(error <= problem.error_bound())) {  // NaN fails too
        trial.status = db::TrialStatus::incorrect;
        trial.rel_error = std::isnan(error) ? std::nullopt : std::optional<double>(error);
        trial.message = "relative error " + std::to_string(error) + " above the bound " +
                        std::to_string(problem.error_bound());
        environment.database.record_trial(trial);
        ++report.incorrect;
      } else {
        measured.push_back({&candidate, kernel, trial.cubin_key, error, {}, {}});
      }
    } catch (const jit::JitError& error) {
      trial.status = db::TrialStatus::failed;
      trial.message = error.what();
      environment.database.record_trial(trial);
      ++report.failed;
      if (!context_usable())
        throw ContextLost(candidate.specialization.label + " left the GPU context unusable (" +
                          error.what() + "); it is recorded as failed: run tune again to resume");
    }
    advance("gated");
  }

  // After the first round: the candidates clearly slower than the fastest are done.
  const auto cut_slow_ones = [&] {
    std::vector<double> medians;
    for (const Measured& entry : measured) medians.push_back(summarize(entry.samples).median_ms);
    const double fastest = *std::min_element(medians.begin(), medians.end());
    for (std::size_t i = 0; i < measured.size(); ++i) {
      Measured& entry = measured[i];
      const double ratio = medians[i] / fastest;
      if (ratio > options.cut_ratio) {
        char why[96];
        std::snprintf(why, sizeof why, "timed in the first of %d rounds only: %.2fx the fastest there",
                      options.rounds, ratio);
        entry.cut = why;
      }
    }
  };

  // Time the survivors, interleaved: clock and thermal drift spread over all of them. A stop
  // drops the samples of this problem (nothing of them is stored; a later run times them).
  const auto time_all = [&] {
    for (Measured& entry : measured) {
      if (stopping()) return false;
      collect_samples([&] { problem.run(entry.kernel, *entry.candidate, stream.handle()); },
                      stream.handle(), options.warmup_ms, 1, 10000);
    }
    for (int round = 0; round < options.rounds; ++round) {
      for (Measured& entry : measured) {
        if (!entry.cut.empty()) continue;
        if (stopping()) return false;
        const std::vector<double> samples = collect_samples(
            [&] { problem.run(entry.kernel, *entry.candidate, stream.handle()); }, stream.handle(),
            options.measure_ms / options.rounds, 3, 10000);
        entry.samples.insert(entry.samples.end(), samples.begin(), samples.end());
      }
      if (round == 0 && options.cut_ratio > 0 && round + 1 < options.rounds && !measured.empty()) cut_slow_ones();
    }
    return true;
  };
  if (!time_all()) {
    report.untried += static_cast<int>(measured.size());
    measured.clear();
  }
  report.stopped = report.untried > 0 && stopping();
  for (Measured& entry : measured) {
    const Timing timing = summarize(entry.samples);
    db::TrialRecord trial = trial_of(problem, environment, *entry.candidate);
    trial.status = db::TrialStatus::ok;
    trial.median_ms = timing.median_ms;
    trial.p20_ms = timing.p20_ms;
    trial.p80_ms = timing.p80_ms;
    trial.rel_error = entry.rel_error;
    trial.cubin_key = entry.cubin_key;
    trial.message = entry.cut;
    environment.database.record_trial(trial);
    ++report.measured;
    report.cut += !entry.cut.empty();
  }

  report.best = environment.database.find_best(environment.gpu_id, problem.family(), problem.key());
  const std::string default_json = problem.default_config_json();
  for (const db::StoredTrial& stored :
       environment.database.list_trials(environment.gpu_id, problem.family(), problem.key()))
    if (stored.trial.config_json == default_json && stored.trial.median_ms)
      report.default_ms = *stored.trial.median_ms;
  return report;
}

}  // namespace sparsejit::tuner
