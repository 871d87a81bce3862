#include "tuner/timing.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "jit/driver_api.h"

namespace sparsejit::tuner {
namespace {

class Event {
 public:
  Event() { SJ_CU(cuEventCreate(&event_, CU_EVENT_DEFAULT)); }
  ~Event() { jit::driver().cuEventDestroy(event_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(CUstream stream) { SJ_CU(cuEventRecord(event_, stream)); }
  void synchronize() { SJ_CU(cuEventSynchronize(event_)); }
  float milliseconds_since(const Event& start) const {
    float ms = 0;
    SJ_CU(cuEventElapsedTime(&ms, start.event_, event_));
    return ms;
  }

 private:
  CUevent event_ = nullptr;
};

// Times one run between two events; waits for it.
double time_once(const std::function<void()>& run, CUstream stream, Event& start, Event& stop) {
  start.record(stream);
  run();
  stop.record(stream);
  stop.synchronize();
  return stop.milliseconds_since(start);
}

double quantile(const std::vector<double>& sorted, double q) {
  const double position = q * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, sorted.size() - 1);
  const double weight = position - static_cast<double>(below);
  return sorted[below] * (1 - weight) + sorted[above] * weight;
}

}  // namespace

Timing summarize(std::vector<double> samples_ms) {
  if (samples_ms.empty()) throw std::invalid_argument("no timing samples");
  std::sort(samples_ms.begin(), samples_ms.end());
  return {quantile(samples_ms, 0.5), quantile(samples_ms, 0.2), quantile(samples_ms, 0.8),
          static_cast<int>(samples_ms.size())};
}

std::vector<double> collect_samples(const std::function<void()>& run, CUstream stream,
                                    double budget_ms, int min_runs, int max_runs) {
  Event start, stop;
  std::vector<double> samples;
  double total = 0;
  while (static_cast<int>(samples.size()) < max_runs &&
         (total < budget_ms || static_cast<int>(samples.size()) < min_runs)) {
    samples.push_back(time_once(run, stream, start, stop));
    total += samples.back();
  }
  return samples;
}

Timing time_on_stream(const std::function<void()>& run, CUstream stream,
                      const TimingOptions& options) {
  // Warm-up: module load, caches and clocks settle.
  collect_samples(run, stream, options.warmup_ms, 1, options.max_repetitions);
  return summarize(collect_samples(run, stream, options.measure_ms, options.min_repetitions,
                                   options.max_repetitions));
}

}  // namespace sparsejit::tuner
