#pragma once
// The runtime that inference code links: one GPU, an optional tuning database, and the
// kernels loaded for them. Kernels come from the database's CUBIN store when it holds them
// and are compiled with NVRTC (and stored) otherwise; configurations come from the
// database's best configs for this GPU when it has been tuned, else the built-in defaults.
//
// Contexts: the runtime works in its device's primary context. Each call that works on the
// GPU makes that context current for its duration, from any thread, and leaves the thread's
// current context (a CUDA runtime user's current device) as it found it. Streams given to a
// call must be of that primary context (PyTorch's streams on the device are), and device
// pointers of the runtime's device.
#include <cuda.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "db/database.h"
#include "jit/device.h"
#include "jit/kernel_provider.h"
#include "jit/target.h"
#include "runtime/attention_lookup.h"
#include "runtime/database_cubin_store.h"
#include "templates/permute/permute_family.h"
#include "templates/sparse_attention/attention_family.h"

namespace sparsejit::runtime {

struct RuntimeOptions {
  int device = 0;
  // The tuning database; db::default_database_path() when unset. Opened read-write so that
  // kernels compiled here are kept for the next process.
  std::optional<std::filesystem::path> database_path;
  bool use_database = true;  // false: no database, every kernel is compiled in-process
};

// Where a configuration came from.
enum class ConfigSource { tuned, built_in_default };
std::string_view to_string(ConfigSource source);

struct PermuteChoice {
  templates::PermuteConfig config;
  ConfigSource source;
};

class Runtime {
 public:
  // Throws jit::NoGpuError without a GPU, db::DatabaseError for an unusable database.
  explicit Runtime(RuntimeOptions options = {});
  ~Runtime();

  const jit::DeviceInfo& device() const { return device_; }
  const jit::DeviceContext& context() const { return *context_; }
  // The target this runtime compiles for: the device's own (sm_90 on an H100).
  const jit::Target& target() const { return target_; }
  jit::KernelProvider& kernels() { return *kernels_; }
  db::Database* database() { return database_ ? &*database_ : nullptr; }
  // This GPU's row in the database (0 without a database).
  std::int64_t gpu_id() const { return gpu_id_; }

  // The configuration permute_tokens uses for a call whose pointers and strides allow
  // vectors of `max_vector_bytes`: this GPU's tuned best when there is one that fits, else
  // the built-in default. Looked up in the database once per problem, then from memory.
  PermuteChoice permute_config(int head_dim, templates::PermuteDirection direction,
                               int max_vector_bytes);

  // Gathers token rows into the order of params.permutation, or scatters them back
  // (permute_params.h). Pointers are device pointers of this runtime's device; validates
  // shapes, pointers and alignment first (std::invalid_argument). Asynchronous on `stream`.
  void permute_tokens(const PermuteParams& params, int head_dim,
                      templates::PermuteDirection direction, CUstream stream);

  // The configuration sparse_attention uses for `problem` called with `shape`
  // (templates::attention_call_shape of the params), and the lookup level it came from (see
  // attention_lookup.h). Looked up in the database once per problem key, then from memory.
  const AttentionChoice& attention_config(const AttentionProblem& problem,
                                          const templates::AttentionCallShape& shape);

  // Sparse attention (attention_params.h) on this runtime's device with the configuration of
  // attention_config; asynchronous on `stream`.
  // Validates the shapes, pointers and alignment (std::invalid_argument). With `check_mask`
  // it also copies the mask (either form) to the host and validates every entry first (synchronous, for
  // debugging: an index out of range would otherwise read out of bounds).
  void sparse_attention(const SparseAttentionParams& params, const AttentionProblem& problem,
                        CUstream stream, bool check_mask = false);

  // The mask check of sparse_attention's `check_mask`: waits for `stream`, copies the mask
  // of `params` (either form, and its fine bits) to the host and validates every entry
  // (validate_block_mask, validate_block_bitmask); std::invalid_argument says which entry is
  // wrong. The pointers and sizes of `params` must already be valid (SparseAttentionFamily::validate).
  void check_attention_mask(const SparseAttentionParams& params, const AttentionProblem& problem,
                            CUstream stream);

 private:
  jit::DeviceInfo device_;
  std::unique_ptr<jit::DeviceContext> context_;
  jit::Target target_;
  std::optional<db::Database> database_;
  std::int64_t gpu_id_ = 0;
  std::unique_ptr<DatabaseCubinStore> cubin_store_;
  std::unique_ptr<jit::KernelProvider> kernels_;
  std::unique_ptr<AttentionConfigLookup> attention_lookup_;
  std::mutex cache_mutex_;  // guards the two maps below
  std::map<std::string, std::optional<std::string>> tuned_configs_;  // problem key -> best JSON
  std::map<std::string, jit::Kernel> permute_kernels_;  // name expression -> loaded kernel
  std::map<std::string, jit::Kernel> attention_kernels_;  // name expression -> loaded kernel

  // The kernel of `spec` from `cache` (keyed by its name expression), loading it once.
  jit::Kernel cached_kernel(std::map<std::string, jit::Kernel>& cache, const std::string& name,
                            const std::function<jit::KernelSpec()>& render);
};

}  // namespace sparsejit::runtime
