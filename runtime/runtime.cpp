#include "runtime/runtime.h"

#include "db/paths.h"
#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "templates/sparse_attention/block_mask.h"
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
  attention_lookup_ = std::make_unique<AttentionConfigLookup>(
      database_ ? &*database_ : nullptr, gpu_id_, to_gpu_record(device_), device_.max_shared_bytes_per_block);
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
  const jit::ScopedCurrentContext current(*context_);
  const templates::PermuteConfig config =
      permute_config(head_dim, direction, PermuteFamily::max_vector_bytes(params)).config;
  PermuteFamily::validate(config, params);
  const jit::Kernel kernel = cached_kernel(permute_kernels_, config.name_expression(),
                                           [&] { return PermuteFamily::render(config, target_); });
  PermuteFamily::launch(kernel, config, params, stream);
}

jit::Kernel Runtime::cached_kernel(std::map<std::string, jit::Kernel>& cache, const std::string& name,
                                   const std::function<jit::KernelSpec()>& render) {
  // Loaded kernels are kept by name expression (the target is fixed), so a repeated call
  // neither renders nor hashes the source again.
  {
    std::lock_guard lock(cache_mutex_);
    if (auto found = cache.find(name); found != cache.end()) return found->second;
  }
  const jit::Kernel kernel = kernels_->kernel(*context_, render());
  std::lock_guard lock(cache_mutex_);
  cache.emplace(name, kernel);
  return kernel;
}

const AttentionChoice& Runtime::attention_config(const AttentionProblem& problem,
                                                 const templates::AttentionCallShape& shape) {
  return attention_lookup_->find(problem, shape);
}

void Runtime::sparse_attention(const SparseAttentionParams& params, const AttentionProblem& problem,
                               CUstream stream, bool check_mask) {
  using templates::SparseAttentionFamily;
  const jit::ScopedCurrentContext current(*context_);
  templates::AttentionConfig config =
      attention_config(problem, templates::attention_call_shape(params, problem.block_kv)).config;
  config.bitmask = params.kv_block_bits != nullptr;  // the form the call gives
  SparseAttentionFamily::validate(config, params, device_.max_shared_bytes_per_block);
  if (check_mask) check_attention_mask(params, problem, stream);
  const jit::Kernel kernel = cached_kernel(attention_kernels_, config.name_expression(), [&] {
    return SparseAttentionFamily::render(config, target_);
  });
  SparseAttentionFamily::launch(kernel, config, params, device_.max_shared_bytes_per_block, stream);
}

void Runtime::check_attention_mask(const SparseAttentionParams& params, const AttentionProblem& problem,
                                   CUstream stream) {
  const jit::ScopedCurrentContext current(*context_);
  templates::BlockMask mask;
  mask.batch = params.batch;
  mask.heads = params.heads;
  mask.q_blocks = (params.tokens_q + problem.block_q - 1) / problem.block_q;
  mask.kv_blocks = (params.tokens_kv + problem.block_kv - 1) / problem.block_kv;
  mask.max_kv_blocks = params.max_kv_blocks;
  mask.block_q = problem.block_q;
  mask.block_kv = problem.block_kv;
  mask.fine_n = problem.fine_n;
  const std::size_t rows = static_cast<std::size_t>(mask.batch) * mask.heads * mask.q_blocks;
  SJ_CU(cuStreamSynchronize(stream));  // the mask may have been written on this stream
  if (params.kv_block_bits != nullptr) {
    // A bitmask is checked as it is, then (for its fine bits, which follow the kept blocks)
    // as the block-CSR mask it stands for.
    templates::BlockBitmask bitmask;
    bitmask.batch = mask.batch;
    bitmask.heads = mask.heads;
    bitmask.q_blocks = mask.q_blocks;
    bitmask.kv_blocks = mask.kv_blocks;
    bitmask.words_per_row = params.kv_block_words;
    bitmask.bits = jit::copy_device_to_host_as<std::uint64_t>(
        params.kv_block_bits, rows * static_cast<std::size_t>(params.kv_block_words));
    templates::validate_block_bitmask(bitmask, params.tokens_q, params.tokens_kv, problem.block_q,
                                      problem.block_kv);
    const templates::BlockMask listed =
        templates::to_block_mask(bitmask, problem.block_q, problem.block_kv, params.max_kv_blocks);
    mask.count = listed.count;
    mask.index = listed.index;
  } else {
    mask.count = jit::copy_device_to_host_as<int>(params.kv_block_count, rows);
    mask.index = jit::copy_device_to_host_as<int>(params.kv_block_index, rows * mask.max_kv_blocks);
  }
  if (problem.fine_n > 0)
    mask.fine_bits = jit::copy_device_to_host_as<std::uint64_t>(params.fine_bits, rows * mask.max_kv_blocks);
  templates::validate_block_mask(mask, params.tokens_q, params.tokens_kv);
}

}  // namespace sparsejit::runtime
