#pragma once
// KernelSpec -> CUBIN -> loaded kernel, with two caches in front of NVRTC: a persistent
// CubinStore (the database's, across processes and machines) and the in-process module cache.
//
// A stored CUBIN is found by its source key first (CompileRequest::source_key: the source,
// headers, template arguments, options and target, without the NVRTC version), which needs
// no NVRTC: a process whose kernels are all stored never opens libnvrtc. Only when none is
// stored under it does the provider open NVRTC, compute the cache key (which includes the
// NVRTC version), look that up (CUBINs stored before the database had source keys, schema
// v2, are found this way, and then learn their source key) and compile on a miss.
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

// A CUBIN as a store holds it.
struct StoredBinary {
  std::string key;            // the cache key it is stored under (that of the NVRTC that compiled it)
  std::string nvrtc_version;  // NvrtcVersion::to_string() of that NVRTC
  CompiledBinary binary;
};

// Where compiled binaries persist between processes; implemented over the database by
// runtime/database_cubin_store.h. Implementations must be thread-safe.
class CubinStore {
 public:
  virtual ~CubinStore() = default;
  // The CUBIN stored under the cache key `key`. When that CUBIN has no source key yet (it was
  // stored before there were any), the store records `source_key` for it: `key` was computed
  // from the same request, so the two name the same source.
  virtual std::optional<CompiledBinary> find(const std::string& key, const std::string& source_key) = 0;
  // A CUBIN compiled from the source `source_key` names, by any NVRTC, without opening NVRTC.
  // When several NVRTC builds stored one, the most recently created (then the greatest key),
  // so a CUBIN compiled because the driver refused the preferred one takes its place.
  virtual std::optional<StoredBinary> find_by_source(const std::string& source_key) = 0;
  // Stores `binary` under `key` (the cache key) with spec.request.source_key().
  virtual void put(const std::string& key, const KernelSpec& spec, const CompiledBinary& binary) = 0;
};

enum class BinarySource { store, nvrtc };

struct ProvidedBinary {
  // The cache key the CUBIN is stored under: CompileRequest::cache_key() when compiled here,
  // the stored one when it came from the store (the key of the NVRTC that compiled it).
  std::string key;
  CompiledBinary binary;
  BinarySource source = BinarySource::nvrtc;
};

class KernelProvider {
 public:
  // `store` may be null: then every binary is compiled. It must outlive the provider.
  explicit KernelProvider(CubinStore* store) : store_(store) {}

  // The CUBIN of `spec`: from the store when it holds one for the source key (no NVRTC) or,
  // with NVRTC, for the cache key; else compiled with NVRTC and put into the store. Works
  // without a GPU. Thread-safe; compiles run in parallel.
  ProvidedBinary binary(const KernelSpec& spec);
  // The cache key of the stored CUBIN that binary() would return, if one is stored (opens
  // NVRTC only when none is stored under the source key).
  std::optional<std::string> stored_key(const KernelSpec& spec);
  bool stored(const KernelSpec& spec) { return stored_key(spec).has_value(); }

  // The kernel of `spec` loaded in `context`; loaded once per (source key, device) and kept
  // for the provider's lifetime. A stored CUBIN the driver refuses (one from an NVRTC newer
  // than the driver, say) is compiled again with this process's NVRTC, stored, and loaded;
  // when that fails too, the CudaError says both. Throws CompileError, CudaError,
  // NvrtcUnavailableError, or the store's errors.
  Kernel kernel(const DeviceContext& context, const KernelSpec& spec);

  std::uint64_t store_hits() const { return store_hits_.load(); }
  std::uint64_t compiled() const { return compiled_.load(); }

 private:
  // The CUBIN of `spec` the store holds, if any: under its source key (no NVRTC), else under
  // its cache key, which names NVRTC's version (NVRTC is opened; `why` says what needed it
  // where it cannot be). Nothing without a store.
  std::optional<ProvidedBinary> stored_binary(const KernelSpec& spec, const std::string& source_key,
                                              const std::string& why);
  ProvidedBinary compile_and_store(const KernelSpec& spec, const std::string& key);

  CubinStore* store_;
  ModuleCache modules_;
  std::atomic<std::uint64_t> store_hits_{0};
  std::atomic<std::uint64_t> compiled_{0};
};

}  // namespace sparsejit::jit
