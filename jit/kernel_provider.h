#pragma once
// KernelSpec -> CUBIN -> loaded kernel, with two caches in front of NVRTC: a persistent
// CubinStore (the database's, across processes and machines with the same NVRTC) and the
// in-process module cache.
#include <atomic>
#include <optional>
#include <string>

#include "jit/device.h"
#include "jit/module.h"
#include "jit/module_cache.h"
#include "jit/nvrtc_compiler.h"

namespace sparsejit::jit {

// One specialization of a kernel family, rendered for NVRTC (templates/ makes these).
struct KernelSpec {
  std::string family;           // "permute_tokens"
  std::string label;            // for people: "permute_tokens<D=128 vec=16 threads=256 unroll=2 gather>"
  std::string name_expression;  // the kernel to find in the module
  CompileRequest request;
};

// Where compiled binaries persist between processes; implemented over the database by
// runtime/database_cubin_store.h. Implementations must be thread-safe.
class CubinStore {
 public:
  virtual ~CubinStore() = default;
  virtual std::optional<CompiledBinary> find(const std::string& key) = 0;
  virtual void put(const std::string& key, const KernelSpec& spec, const CompiledBinary& binary) = 0;
};

enum class BinarySource { store, nvrtc };

struct ProvidedBinary {
  std::string key;  // CompileRequest::cache_key()
  CompiledBinary binary;
  BinarySource source = BinarySource::nvrtc;
};

class KernelProvider {
 public:
  // `store` may be null: then every binary is compiled. It must outlive the provider.
  explicit KernelProvider(CubinStore* store) : store_(store) {}

  // The CUBIN of `spec`: from the store when it holds the key, else compiled with NVRTC and
  // put into the store. Works without a GPU. Thread-safe; compiles run in parallel.
  ProvidedBinary binary(const KernelSpec& spec);
  // Whether the store already holds the CUBIN of `spec`.
  bool stored(const KernelSpec& spec);

  // The kernel of `spec` loaded in `context`; loaded once per (key, device) and kept for the
  // provider's lifetime. Throws CompileError, CudaError, or the store's errors.
  Kernel kernel(const DeviceContext& context, const KernelSpec& spec);

  std::uint64_t store_hits() const { return store_hits_.load(); }
  std::uint64_t compiled() const { return compiled_.load(); }

 private:
  CubinStore* store_;
  ModuleCache modules_;
  std::atomic<std::uint64_t> store_hits_{0};
  std::atomic<std::uint64_t> compiled_{0};
};

}  // namespace sparsejit::jit
