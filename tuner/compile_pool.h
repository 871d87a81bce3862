#pragma once
// Compiling many specializations at once: NVRTC on a pool of threads, the CUBINs kept in the
// provider's store, so that tuning (and later runs) load them instead of compiling.
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "jit/kernel_provider.h"

namespace sparsejit::tuner {

struct CompileSummary {
  std::size_t compiled = 0;           // by NVRTC in this call
  std::size_t stored = 0;             // already in the store
  std::vector<std::string> failures;  // "label: error" of each that did not compile
};

// Called after each specialization, from the worker threads (one at a time): the spec and
// whether NVRTC compiled it (false: found in the store, or failed).
using CompileProgress = std::function<void(const jit::KernelSpec& spec, bool compiled)>;

// Compiles every spec not in the provider's store, `jobs` at a time. A failure does not stop
// the others: it is listed, and a tuner that asks for that kernel records the failed trial.
CompileSummary compile_in_parallel(jit::KernelProvider& kernels, const std::vector<jit::KernelSpec>& specs,
                                   unsigned jobs, const CompileProgress& progress = {});

}  // namespace sparsejit::tuner
