#include "runtime/runtime.h"

#include "db/paths.h"
#include "runtime/gpu_record.h"

namespace sparsejit::runtime {

std::string_view to_string(ConfigSource source) {
  return source == ConfigSource::tuned ? "tuned" : "built-in default";
}

Runtime::Runtime(RuntimeOptions options)
    : device_(jit::query_device(options.device)),
      context_(std::make_unique<jit::DeviceContext>(options.device)),
      target_(jit::Target::for_compute_capability(device_.cc_major, device_.cc_minor)) {
  if (options.use_database) {
    database_.emplace(db::Database::open(options.database_path.value_or(db::default_database_path())));
    gpu_id_ = database_->upsert_gpu(to_gpu_record(device_));
    cubin_store_ = std::make_unique<DatabaseCubinStore>(*database_);
  }
  kernels_ = std::make_unique<jit::KernelProvider>(cubin_store_.get());
}

Runtime::~Runtime() = default;

PermuteChoice Runtime::permute_config(int head_dim, templates::PermuteDirection direction,
                                      int max_vector_bytes) {
  const templates::PermuteConfig fallback =
      templates::default_permute_config(head_dim, direction, max_vector_bytes);
  if (!database_) return {fallback, ConfigSource::built_in_default};
  const std::string key = templates::permute_problem_key(head_dim, direction);
  std::optional<std::string> tuned;
  {
    std::lock_guard lock(cache_mutex_);
    auto found = tuned_configs_.find(key);
    if (found == tuned_configs_.end()) {
      std::optional<db::BestConfig> best = database_->find_best(gpu_id_, "permute_tokens", key);
      found = tuned_configs_.emplace(key, best ? std::optional(best->config_json) : std::nullopt).first;
    }
    tuned = found->second;
  }
  if (!tuned) return {fallback, ConfigSource::built_in_default};
  const templates::PermuteConfig config =
      templates::PermuteConfig::from_tuning_json(head_dim, direction, *tuned);
  if (config.vector_bytes > max_vector_bytes) return {fallback, ConfigSource::built_in_default};
  return {config, ConfigSource::tuned};
}

void Runtime::permute_tokens(const PermuteParams& params, int head_dim,
                             templates::PermuteDirection direction, CUstream stream) {
  using templates::PermuteFamily;
  const templates::PermuteConfig config =
      permute_config(head_dim, direction, PermuteFamily::max_vector_bytes(params)).config;
  PermuteFamily::validate(config, params);
  // Loaded kernels are kept by name expression (the target is fixed), so a repeated call
  // neither renders nor hashes the source again.
  const std::string name = config.name_expression();
  std::optional<jit::Kernel> kernel;
  {
    std::lock_guard lock(cache_mutex_);
    if (auto found = permute_kernels_.find(name); found != permute_kernels_.end()) kernel = found->second;
  }
  if (!kernel) {
    kernel = kernels_->kernel(*context_, PermuteFamily::render(config, target_));
    std::lock_guard lock(cache_mutex_);
    permute_kernels_.emplace(name, *kernel);
  }
  PermuteFamily::launch(*kernel, config, params, stream);
}

}  // namespace sparsejit::runtime
