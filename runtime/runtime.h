#pragma once
// The runtime that inference code links: one GPU, an optional tuning database, and the
// kernels loaded for them. Kernels come from the database's CUBIN store when it holds them
// and are compiled with NVRTC (and stored) otherwise.
#include <cuda.h>

#include <filesystem>
#include <memory>
#include <optional>

#include "db/database.h"
#include "jit/device.h"
#include "jit/target.h"
#include "runtime/kernel_provider.h"
#include "templates/permute/permute_family.h"

namespace sparsejit::runtime {

struct RuntimeOptions {
  int device = 0;
  // The tuning database; db::default_database_path() when unset. Opened read-write so that
  // kernels compiled here are kept for the next process.
  std::optional<std::filesystem::path> database_path;
  bool use_database = true;  // false: no database, every kernel is compiled in-process
};

class Runtime {
 public:
  // Throws jit::NoGpuError without a GPU, db::DatabaseError for an unusable database.
  explicit Runtime(RuntimeOptions options = {});

  const jit::DeviceInfo& device() const { return device_; }
  const jit::DeviceContext& context() const { return *context_; }
  // The target this runtime compiles for: the device's own (sm_90 on an H100).
  const jit::Target& target() const { return target_; }
  KernelProvider& kernels() { return *kernels_; }
  db::Database* database() { return database_ ? &*database_ : nullptr; }

  // Gathers token rows into the order of params.permutation, or scatters them back
  // (permute_params.h). Pointers are device pointers of this runtime's device; validates
  // shapes, pointers and alignment first (std::invalid_argument). Asynchronous on `stream`.
  void permute_tokens(const PermuteParams& params, int head_dim,
                      templates::PermuteDirection direction, CUstream stream);

 private:
  jit::DeviceInfo device_;
  std::unique_ptr<jit::DeviceContext> context_;
  jit::Target target_;
  std::optional<db::Database> database_;
  std::unique_ptr<KernelProvider> kernels_;
};

}  // namespace sparsejit::runtime
