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

Timing time_on_stream(const std::function<void()>& run, CUstream stream,
                      const TimingOptions& options) {
  Event start, stop;
  // Warm-up: module load, caches and clocks settle; also estimates one run's time.
  double warm_total = 0;
  int warm_runs = 0;
  while (warm_total < options.warmup_ms || warm_runs < 1) {
    warm_total += time_once(run, stream, start, stop);
    ++warm_runs;
  }
  const double estimate = std::max(warm_total / warm_runs, 1e-3);
  const int repetitions = std::clamp(static_cast<int>(options.measure_ms / estimate),
                                     options.min_repetitions, options.max_repetitions);
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(repetitions));
  for (int i = 0; i < repetitions; ++i) samples.push_back(time_once(run, stream, start, stop));
  return summarize(std::move(samples));
}

}  // namespace sparsejit::tuner
