#pragma once
// Specialization -> CUBIN -> loaded kernel, with two caches in front of NVRTC:
// the database's CUBIN store (across processes and machines with the same NVRTC) and the
// in-process module cache (jit::ModuleCache).
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "db/database.h"
#include "jit/device.h"
#include "jit/module.h"
#include "jit/module_cache.h"
#include "jit/nvrtc_compiler.h"
#include "templates/kernel_family.h"

namespace sparsejit::runtime {

enum class BinarySource { database, nvrtc };

struct ProvidedBinary {
  std::string key;  // CompileRequest::cache_key()
  jit::CompiledBinary binary;
  BinarySource source = BinarySource::nvrtc;
};

class KernelProvider {
 public:
  // `database` may be null: then every CUBIN is compiled. It must outlive the provider.
  explicit KernelProvider(db::Database* database) : database_(database) {}

  // The CUBIN of `specialization`: from the database when it holds the key, else compiled
  // with NVRTC and stored there. Works without a GPU. Thread-safe.
  ProvidedBinary binary(const templates::Specialization& specialization);

  // Whether the database already holds the CUBIN of `specialization`.
  bool stored(const templates::Specialization& specialization);

  // The kernel of `specialization` loaded in `context`; loaded once per (key, device) and kept
  // for the provider's lifetime. Throws jit::CompileError, jit::CudaError, db::DatabaseError.
  jit::Kernel kernel(const jit::DeviceContext& context,
                     const templates::Specialization& specialization);

  std::uint64_t database_hits() const { return database_hits_.load(); }
  std::uint64_t compiled() const { return compiled_.load(); }

 private:
  db::Database* database_;
  std::mutex database_mutex_;  // one SQLite connection, used by one thread at a time
  jit::ModuleCache modules_;
  std::atomic<std::uint64_t> database_hits_{0};
  std::atomic<std::uint64_t> compiled_{0};
};

}  // namespace sparsejit::runtime
