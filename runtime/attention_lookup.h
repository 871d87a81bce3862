#pragma once
// Which tile sparse_attention runs for a call: the lookup of DESIGN.md "Keys", level by level,
//   exact            this GPU's best config of the call's problem key
//   nearest_bucket   this GPU's best config of the same kernel kind in the nearest bucket
//                    (nearest density, then sequence length, then batch x heads)
//   same_compute_capability
//                    the same, from other GPUs of this compute capability in the database
//                    (ties: the GPU with the nearest SM count)
//   built_in_default default_attention_config
// Configs that do not fit this device (shared memory) are passed over. Answers are memoized
// per problem key: after the first call for a key, a lookup reads no database and allocates
// nothing.
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "db/database.h"
#include "templates/sparse_attention/attention_tuning.h"

namespace sparsejit::runtime {

enum class LookupLevel { exact, nearest_bucket, same_compute_capability, built_in_default };
// "exact", "nearest bucket", "same compute capability", "built-in default"
std::string_view to_string(LookupLevel level);

// What fixes a sparse attention kernel besides its tile: the data and the mask's geometry.
struct AttentionProblem {
  templates::HalfDtype dtype = templates::HalfDtype::bf16;
  int head_dim = 128;
  int block_q = 128;   // queries per sparse block of the mask
  int block_kv = 128;  // keys per sparse block of the mask
  int fine_n = 0;      // keys per fine sub-tile (8, 16, 32), 0 without fine bits
};

struct AttentionChoice {
  templates::AttentionConfig config;
  LookupLevel level = LookupLevel::built_in_default;
  std::string problem_key;  // the key of the call
  std::string source_key;   // the problem key the config was tuned for; empty for the default
  std::string source_gpu;   // the fingerprint of the GPU it was tuned on; empty for the default
};

class AttentionConfigLookup {
 public:
  // `database` may be null (built-in defaults only); it must outlive the lookup. `gpu_id` is
  // this GPU's row (Database::upsert_gpu), `gpu` its record, `max_shared_bytes` the device's
  // opt-in shared memory per block.
  AttentionConfigLookup(const db::Database* database, std::int64_t gpu_id, db::GpuRecord gpu,
                        int max_shared_bytes);

  // The config for `problem` called with `shape`. Throws std::invalid_argument where the
  // problem itself is invalid (default_attention_config). Thread-safe; the reference stays
  // valid for the lookup's lifetime.
  const AttentionChoice& find(const AttentionProblem& problem, const templates::AttentionCallShape& shape);

 private:
  AttentionChoice look_up(const templates::AttentionProblemKey& key) const;

  const db::Database* database_;
  std::int64_t gpu_id_;
  db::GpuRecord gpu_;
  int max_shared_bytes_;
  std::mutex mutex_;
  std::map<templates::AttentionProblemKey, AttentionChoice> choices_;
};

}  // namespace sparsejit::runtime
