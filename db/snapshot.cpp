// Database::read_snapshot and Database::import_snapshot (rules in db/snapshot.h).
#include "db/snapshot.h"

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>
#include <tuple>

namespace sparsejit::db {
namespace {

std::string row_name(const char* table, std::size_t index) {
  return std::string(table) + "[" + std::to_string(index) + "]";
}

}  // namespace

void validate_snapshot(const TuningSnapshot& snapshot) {
  std::set<std::string> fingerprints;
  for (const StoredGpu& gpu : snapshot.gpus) fingerprints.insert(gpu.gpu.fingerprint());
  const auto require_gpu = [&fingerprints](const std::string& fingerprint, const std::string& row) {
    if (fingerprints.count(fingerprint) == 0)
      throw std::invalid_argument(row + ": GPU '" + fingerprint + "' is not among the GPUs");
  };
  const auto rethrow_as = [](const std::string& row, const auto& check) {
    try {
      check();
    } catch (const std::invalid_argument& error) {
      throw std::invalid_argument(row + ": " + error.what());
    }
  };
  for (std::size_t i = 0; i < snapshot.trials.size(); ++i) {
    const SnapshotTrial& trial = snapshot.trials[i];
    require_gpu(trial.gpu_fingerprint, row_name("trials", i));
    rethrow_as(row_name("trials", i), [&trial] { validate_trial(trial.trial); });
  }
  for (std::size_t i = 0; i < snapshot.best_configs.size(); ++i)
    require_gpu(snapshot.best_configs[i].gpu_fingerprint, row_name("best_configs", i));
  for (std::size_t i = 0; i < snapshot.sparsity_profiles.size(); ++i)
    rethrow_as(row_name("sparsity_profiles", i),
               [&snapshot, i] { validate_sparsity_profile(snapshot.sparsity_profiles[i]); });
  for (std::size_t i = 0; i < snapshot.cubins.size(); ++i)
    rethrow_as(row_name("cubins", i), [&snapshot, i] { validate_cubin(snapshot.cubins[i]); });
}

namespace {

// The GPU's row id, inserting it or merging its seen times and metadata into the stored row.
std::int64_t apply_gpu(Connection& connection, const StoredGpu& incoming, ApplyCounts& counts) {
  const GpuRecord& gpu = incoming.gpu;
  Statement find = connection.prepare("SELECT id, first_seen, last_seen FROM gpus WHERE fingerprint = ?1");
  find.bind_text(1, gpu.fingerprint());
  if (!find.step()) {
    Statement insert = connection.prepare(R"sql(
      INSERT INTO gpus (fingerprint, name, cc_major, cc_minor, sm_count, memory_bytes, driver_version, uuid,
                        sm_clock_khz, memory_clock_khz, first_seen, last_seen)
      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12))sql");
    bind_gpu(insert, gpu);
    insert.bind_text(11, incoming.first_seen);
    insert.bind_text(12, incoming.last_seen);
    insert.step();
    ++counts.added;
    return connection.last_insert_rowid();
  }
  const std::int64_t id = find.column_int64(0);
  const bool earlier_first_seen = incoming.first_seen < find.column_text(1);
  const bool later_last_seen = incoming.last_seen > find.column_text(2);  // ISO 8601 text sorts by time
  if (earlier_first_seen) {
    Statement update = connection.prepare("UPDATE gpus SET first_seen = ?2 WHERE id = ?1");
    update.bind_int64(1, id);
    update.bind_text(2, incoming.first_seen);
    update.step();
  }
  if (later_last_seen) {
    Statement update = connection.prepare(R"sql(
      UPDATE gpus SET driver_version = ?2, uuid = ?3, sm_clock_khz = ?4, memory_clock_khz = ?5, last_seen = ?6
      WHERE id = ?1)sql");
    update.bind_int64(1, id);
    update.bind_text(2, gpu.driver_version);
    update.bind_text(3, gpu.uuid);
    update.bind_int64(4, gpu.sm_clock_khz);
    update.bind_int64(5, gpu.memory_clock_khz);
    update.bind_text(6, incoming.last_seen);
    update.step();
  }
  ++(earlier_first_seen || later_last_seen ? counts.updated : counts.unchanged);
  return id;
}

void apply_cubins(Connection& connection, const std::vector<CubinRecord>& cubins, ApplyCounts& counts) {
  Statement insert = connection.prepare(R"sql(
    INSERT INTO cubins (key, family, target, nvrtc_version, specialization, lowered_names_json, binary,
                        compile_ms, created_at, source_key)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, nullif(?10, ''))
    ON CONFLICT (key) DO NOTHING)sql");
  // A stored CUBIN of the same key without a source key (a schema v2 row) learns it.
  Statement learn = connection.prepare(
      "UPDATE cubins SET source_key = ?2 WHERE key = ?1 AND source_key IS NULL AND ?2 <> ''");
  for (const CubinRecord& cubin : cubins) {
    bind_cubin(insert, cubin);
    insert.step();
    insert.reset();
    if (connection.changes() == 1) {
      ++counts.added;
      continue;
    }
    learn.bind_text(1, cubin.key);
    learn.bind_text(2, cubin.source_key);
    learn.step();
    learn.reset();
    ++(connection.changes() == 1 ? counts.updated : counts.unchanged);
  }
}

void apply_trials(Connection& connection, const std::vector<SnapshotTrial>& trials,
                  const std::map<std::string, std::int64_t>& gpu_ids, ApplyCounts& counts) {
  // The identity of a trial (see db/snapshot.h); trials_by_problem covers its first columns.
  Statement find = connection.prepare(R"sql(
    SELECT id FROM trials
    WHERE gpu_id = ?1 AND family = ?2 AND problem_key = ?3 AND config_json = ?4 AND created_at = ?5)sql");
  // A CUBIN key is stored only when that CUBIN is present: the subquery yields NULL otherwise.
  Statement link = connection.prepare(R"sql(
    UPDATE trials SET cubin_key = (SELECT key FROM cubins WHERE key = ?2)
    WHERE id = ?1 AND cubin_key IS NULL AND EXISTS (SELECT 1 FROM cubins WHERE key = ?2))sql");
  Statement insert = connection.prepare(R"sql(
    INSERT INTO trials (gpu_id, family, problem_key, config_json, status, median_ms, p20_ms, p80_ms,
                        rel_error, sm_clock_khz, cubin_key, message, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, (SELECT key FROM cubins WHERE key = ?11), ?12, ?13))sql");
  for (const SnapshotTrial& incoming : trials) {
    const TrialRecord& trial = incoming.trial;
    const std::int64_t gpu_id = gpu_ids.at(incoming.gpu_fingerprint);
    find.bind_int64(1, gpu_id);
    find.bind_text(2, trial.family);
    find.bind_text(3, trial.problem_key);
    find.bind_text(4, trial.config_json);
    find.bind_text(5, incoming.created_at);
    if (find.step()) {
      link.bind_int64(1, find.column_int64(0));
      link.bind_text(2, trial.cubin_key);
      link.step();
      ++(connection.changes() == 1 ? counts.updated : counts.unchanged);
      link.reset();
    } else {
      bind_trial(insert, gpu_id, trial);
      insert.bind_text(13, incoming.created_at);
      insert.step();
      ++counts.added;
      insert.reset();
    }
    find.reset();
  }
}

void apply_best_configs(Connection& connection, const std::vector<SnapshotBestConfig>& best_configs,
                        const std::map<std::string, std::int64_t>& gpu_ids, ApplyCounts& counts) {
  Statement find = connection.prepare(
      "SELECT median_ms FROM best_configs WHERE gpu_id = ?1 AND family = ?2 AND problem_key = ?3");
  // Inserts, or replaces the stored best when strictly faster; trial_id is the ok trial of
  // this config measured at this time, NULL when the database holds none.
  Statement offer = connection.prepare(R"sql(
    INSERT INTO best_configs (gpu_id, family, problem_key, config_json, median_ms, trial_id, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5,
            (SELECT id FROM trials WHERE gpu_id = ?1 AND family = ?2 AND problem_key = ?3 AND config_json = ?4
                                    AND status = 'ok' AND median_ms = ?5 ORDER BY id LIMIT 1),
            ?6)
    ON CONFLICT (gpu_id, family, problem_key) DO UPDATE SET
      config_json = excluded.config_json, median_ms = excluded.median_ms,
      trial_id = excluded.trial_id, updated_at = excluded.updated_at
    WHERE excluded.median_ms < best_configs.median_ms)sql");
  for (const SnapshotBestConfig& incoming : best_configs) {
    const BestConfig& best = incoming.best;
    const std::int64_t gpu_id = gpu_ids.at(incoming.gpu_fingerprint);
    find.bind_int64(1, gpu_id);
    find.bind_text(2, best.family);
    find.bind_text(3, best.problem_key);
    const bool known = find.step();
    find.reset();
    offer.bind_int64(1, gpu_id);
    offer.bind_text(2, best.family);
    offer.bind_text(3, best.problem_key);
    offer.bind_text(4, best.config_json);
    offer.bind_double(5, best.median_ms);
    offer.bind_text(6, best.updated_at);
    offer.step();
    if (connection.changes() == 0) ++counts.unchanged;
    else ++(known ? counts.updated : counts.added);
    offer.reset();
  }
}

void apply_sparsity_profiles(Connection& connection, const std::vector<SparsityProfile>& profiles,
                             ApplyCounts& counts) {
  Statement find = connection.prepare(
      "SELECT 1 FROM sparsity_profiles WHERE model = ?1 AND step = ?2 AND layer = ?3 AND head = ?4");
  Statement offer = connection.prepare(R"sql(
    INSERT INTO sparsity_profiles (model, step, layer, head, density, tau) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT (model, step, layer, head) DO UPDATE SET density = excluded.density, tau = excluded.tau
    WHERE excluded.density > sparsity_profiles.density)sql");
  for (const SparsityProfile& profile : profiles) {
    for (Statement* statement : {&find, &offer}) {
      statement->bind_text(1, profile.model);
      statement->bind_int64(2, profile.step);
      statement->bind_int64(3, profile.layer);
      statement->bind_int64(4, profile.head);
    }
    const bool known = find.step();
    find.reset();
    offer.bind_double(5, profile.density);
    offer.bind_double(6, profile.tau);
    offer.step();
    if (connection.changes() == 0) ++counts.unchanged;
    else ++(known ? counts.updated : counts.added);
    offer.reset();
  }
}

}  // namespace

TuningSnapshot Database::read_snapshot(bool with_cubins) const {
  ReadTransaction consistent(connection_);
  TuningSnapshot snapshot;
  std::map<std::int64_t, std::string> fingerprints;  // by GPU id
  for (StoredGpu& gpu : list_gpus()) {
    fingerprints.emplace(gpu.id, gpu.gpu.fingerprint());
    snapshot.gpus.push_back(std::move(gpu));
  }
  std::ranges::sort(snapshot.gpus, {}, [](const StoredGpu& gpu) { return gpu.gpu.fingerprint(); });

  for (StoredTrial& stored : list_trials(TrialFilter{})) {
    const std::string& fingerprint = fingerprints.at(stored.trial.gpu_id);
    snapshot.trials.push_back({fingerprint, std::move(stored.trial), std::move(stored.created_at)});
  }
  std::ranges::stable_sort(snapshot.trials, {}, [](const SnapshotTrial& row) {  // ties stay in id order
    return std::tie(row.gpu_fingerprint, row.trial.family, row.trial.problem_key, row.created_at,
                    row.trial.config_json);
  });

  for (BestConfig& best : list_best_configs())
    snapshot.best_configs.push_back({fingerprints.at(best.gpu_id), std::move(best)});
  std::ranges::sort(snapshot.best_configs, {}, [](const SnapshotBestConfig& row) {
    return std::tie(row.gpu_fingerprint, row.best.family, row.best.problem_key);
  });

  snapshot.sparsity_profiles = list_sparsity_profiles();
  if (with_cubins) {
    std::vector<CubinSummary> summaries = list_cubins();
    std::ranges::sort(summaries, {}, &CubinSummary::key);
    for (const CubinSummary& summary : summaries) {
      // Inside the read transaction the row cannot have gone since list_cubins.
      if (std::optional<CubinRecord> cubin = find_cubin(summary.key)) snapshot.cubins.push_back(std::move(*cubin));
    }
  }
  return snapshot;
}

ImportSummary Database::import_snapshot(const TuningSnapshot& snapshot) {
  validate_snapshot(snapshot);
  ImportSummary summary;
  Transaction transaction(connection_);
  std::map<std::string, std::int64_t> gpu_ids;  // by fingerprint
  for (const StoredGpu& gpu : snapshot.gpus)
    gpu_ids.emplace(gpu.gpu.fingerprint(), apply_gpu(connection_, gpu, summary.gpus));
  // CUBINs before trials, trials before best configs: each links to the one before.
  apply_cubins(connection_, snapshot.cubins, summary.cubins);
  apply_trials(connection_, snapshot.trials, gpu_ids, summary.trials);
  apply_best_configs(connection_, snapshot.best_configs, gpu_ids, summary.best_configs);
  apply_sparsity_profiles(connection_, snapshot.sparsity_profiles, summary.sparsity_profiles);
  transaction.commit();
  return summary;
}

}  // namespace sparsejit::db
