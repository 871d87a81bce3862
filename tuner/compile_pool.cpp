#include "tuner/compile_pool.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

namespace sparsejit::tuner {

CompileSummary compile_in_parallel(jit::KernelProvider& kernels, const std::vector<jit::KernelSpec>& specs,
                                   unsigned jobs, const CompileProgress& progress) {
  CompileSummary summary;
  std::mutex mutex;  // guards summary and serializes progress
  std::atomic<std::size_t> next{0};
  const auto worker = [&] {
    for (std::size_t i = next++; i < specs.size(); i = next++) {
      bool compiled = false;
      std::string failure;
      try {
        compiled = kernels.binary(specs[i]).source == jit::BinarySource::nvrtc;
      } catch (const std::exception& error) {
        failure = specs[i].label + ": " + error.what();
      }
      std::lock_guard lock(mutex);
      if (!failure.empty()) summary.failures.push_back(std::move(failure));
      else if (compiled) ++summary.compiled;
      else ++summary.stored;
      if (progress) progress(specs[i], compiled);
    }
  };
  std::vector<std::jthread> workers;
  const unsigned threads = std::clamp<unsigned>(jobs, 1, std::max<std::size_t>(1, specs.size()));
  for (unsigned j = 0; j < threads; ++j) workers.emplace_back(worker);
  workers.clear();  // joins
  return summary;
}

}  // namespace sparsejit::tuner
