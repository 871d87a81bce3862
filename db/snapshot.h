// A database's tuning results without its row ids, as export writes them, import reads
// them and merge carries them from one database to another. Rows that point at a GPU name
// it by fingerprint, since GPU ids differ from file to file.
//
// Applying a snapshot (Database::import_snapshot) is one transaction and idempotent:
//   - GPUs are matched by fingerprint; a known one takes the incoming metadata (driver,
//     UUID, clocks) only when the incoming last_seen is later, and keeps the earlier first_seen.
//   - A trial's identity is (GPU fingerprint, family, problem key, config JSON, created_at):
//     a trial already present is not added again. Its cubin_key is kept only where that
//     CUBIN is in the database (the column is a foreign key); a present trial without one
//     gains the link when the CUBIN arrives later.
//   - A best config replaces the stored one of its (GPU, family, problem) only when strictly
//     faster, as Database::record_trial does; its trial_id points at the ok trial of the same
//     config and time, or is NULL when there is none.
//   - A sparsity profile replaces the stored one of its (model, step, layer, head) only when
//     its density is higher: the design aggregates profiles over prompts by maximum.
//   - CUBINs are added by key and never replaced: a key names the exact binary.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "db/database.h"

namespace sparsejit::db {

struct SnapshotTrial {
  std::string gpu_fingerprint;
  TrialRecord trial;  // trial.gpu_id is not used: the fingerprint names the GPU
  std::string created_at;
};

struct SnapshotBestConfig {
  std::string gpu_fingerprint;
  BestConfig best;  // best.gpu_id and best.trial_id are not used
};

struct TuningSnapshot {
  std::vector<StoredGpu> gpus;  // StoredGpu::id is not used
  std::vector<SnapshotTrial> trials;
  std::vector<SnapshotBestConfig> best_configs;
  std::vector<SparsityProfile> sparsity_profiles;
  std::vector<CubinRecord> cubins;  // empty unless asked for: they are big and can be rebuilt
};

// What applying a snapshot did, per table.
struct ApplyCounts {
  std::int64_t added = 0;
  std::int64_t updated = 0;    // see above for what updates each table's rows
  std::int64_t unchanged = 0;  // already present (or the stored row was as good)
};

struct ImportSummary {
  ApplyCounts gpus;
  ApplyCounts trials;
  ApplyCounts best_configs;
  ApplyCounts sparsity_profiles;
  ApplyCounts cubins;
};

// Throws std::invalid_argument, naming the row ("trials[3]: ..."), when the snapshot cannot
// be applied as a whole: a trial or best config names a GPU the snapshot does not carry, a
// trial, CUBIN or sparsity profile that validate_trial / validate_cubin /
// validate_sparsity_profile refuses.
void validate_snapshot(const TuningSnapshot& snapshot);

}  // namespace sparsejit::db
