#include "runtime/attention_lookup.h"

#include <cstdlib>
#include <optional>
#include <tuple>

namespace sparsejit::runtime {

std::string_view to_string(LookupLevel level) {
  switch (level) {
    case LookupLevel::exact: return "exact";
    case LookupLevel::nearest_bucket: return "nearest bucket";
    case LookupLevel::same_compute_capability: return "same compute capability";
    case LookupLevel::built_in_default: return "built-in default";
  }
  return "unknown";
}

AttentionConfigLookup::AttentionConfigLookup(const db::Database* database, std::int64_t gpu_id,
                                             db::GpuRecord gpu, int max_shared_bytes)
    : database_(database), gpu_id_(gpu_id), gpu_(std::move(gpu)), max_shared_bytes_(max_shared_bytes) {}

const AttentionChoice& AttentionConfigLookup::find(const AttentionProblem& problem,
                                                   const templates::AttentionCallShape& shape) {
  const templates::AttentionProblemKey key{
      {problem.dtype, problem.head_dim, problem.block_q, problem.block_kv, problem.fine_n},
      templates::attention_buckets_of(shape)};
  {
    std::lock_guard lock(mutex_);
    if (const auto found = choices_.find(key); found != choices_.end()) return found->second;
  }
  AttentionChoice choice = look_up(key);  // outside the lock: the database may be slow
  std::lock_guard lock(mutex_);
  return choices_.emplace(key, std::move(choice)).first->second;  // a racing twin's answer wins
}

AttentionChoice AttentionConfigLookup::look_up(const templates::AttentionProblemKey& key) const {
  const templates::AttentionKernelKind& kind = key.kind;
  AttentionChoice choice;
  choice.problem_key = key.to_string();
  // The target's default (the wgmma kernel on compute capability 9.0), unless this device has
  // less shared memory than its target usually does.
  const jit::Target target = jit::Target::for_compute_capability(gpu_.cc_major, gpu_.cc_minor);
  choice.config = templates::default_attention_config(kind.dtype, kind.head_dim, kind.block_q, kind.block_kv,
                                                      kind.fine_n, target);
  if (!templates::attention_config_problem(choice.config, max_shared_bytes_).empty())
    choice.config = templates::default_attention_config(kind.dtype, kind.head_dim, kind.block_q,
                                                        kind.block_kv, kind.fine_n, max_shared_bytes_);
  if (database_ == nullptr) return choice;

  // The tile of a stored best config, where it parses and fits this device.
  const auto fitting = [&](const std::string& config_json) -> std::optional<templates::AttentionConfig> {
    try {
      const templates::AttentionConfig config = kind.with_tile(config_json);
      if (config.wgmma && !templates::wgmma_target(target)) return std::nullopt;
      if (templates::attention_config_problem(config, max_shared_bytes_).empty()) return config;
    } catch (const std::invalid_argument&) {
      // A config this version cannot read (another format): passed over.
    }
    return std::nullopt;
  };
  const std::string family(templates::SparseAttentionFamily().name());
  if (const std::optional<db::BestConfig> best = database_->find_best(gpu_id_, family, choice.problem_key)) {
    if (const auto config = fitting(best->config_json)) {
      choice.config = *config;
      choice.level = LookupLevel::exact;
      choice.source_key = best->problem_key;
      choice.source_gpu = gpu_.fingerprint();
      return choice;
    }
  }

  // Every GPU's best configs of the same kernel kind, ranked: this GPU before others of its
  // compute capability, then by bucket distance, then (other GPUs) by SM count difference.
  std::map<std::int64_t, db::GpuRecord> same_capability;
  for (const db::StoredGpu& stored : database_->list_gpus())
    if (stored.id == gpu_id_ ||
        (stored.gpu.cc_major == gpu_.cc_major && stored.gpu.cc_minor == gpu_.cc_minor))
      same_capability.emplace(stored.id, stored.gpu);
  using Rank = std::tuple<bool, std::array<double, 3>, int, std::int64_t>;
  std::optional<Rank> best_rank;
  for (const db::BestConfig& best : database_->list_best_configs()) {
    const auto gpu = same_capability.find(best.gpu_id);
    if (best.family != family || gpu == same_capability.end()) continue;
    const std::optional<templates::AttentionProblemKey> tuned = templates::AttentionProblemKey::parse(best.problem_key);
    if (!tuned || tuned->kind != kind) continue;
    const std::optional<templates::AttentionConfig> config = fitting(best.config_json);
    if (!config) continue;
    const bool other_gpu = best.gpu_id != gpu_id_;
    const Rank rank{other_gpu, key.bucket_distance(*tuned),
                    other_gpu ? std::abs(gpu->second.sm_count - gpu_.sm_count) : 0, best.gpu_id};
    if (best_rank && !(rank < *best_rank)) continue;
    best_rank = rank;
    choice.config = *config;
    choice.level = other_gpu ? LookupLevel::same_compute_capability : LookupLevel::nearest_bucket;
    choice.source_key = best.problem_key;
    choice.source_gpu = gpu->second.fingerprint();
  }
  return choice;
}

}  // namespace sparsejit::runtime
