#pragma once
// The timing protocol of DESIGN.md: CUDA events around each run, warm-up and repetitions
// chosen by time (about 25 ms and 100 ms by default), median with p20/p80.
#include <cuda.h>

#include <functional>
#include <vector>

namespace sparsejit::tuner {

struct TimingOptions {
  double warmup_ms = 25;
  double measure_ms = 100;
  int min_repetitions = 5;
  int max_repetitions = 10000;
};

struct Timing {
  double median_ms = 0;
  double p20_ms = 0;
  double p80_ms = 0;
  int repetitions = 0;
};

// Times `run` (which enqueues work on `stream`) by the protocol. The stream's context must be
// current. Errors of the launched work surface as jit::CudaError.
Timing time_on_stream(const std::function<void()>& run, CUstream stream,
                      const TimingOptions& options = {});

// One sample per run, each between two events, for about `budget_ms` in all and at least
// `min_runs` runs. The building block for interleaving candidates.
std::vector<double> collect_samples(const std::function<void()>& run, CUstream stream,
                                    double budget_ms, int min_runs, int max_runs);

// Median, p20 and p80 of samples (in ms); exposed for tests.
Timing summarize(std::vector<double> samples_ms);

}  // namespace sparsejit::tuner
