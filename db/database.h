// The sparsejit tuning database: GPUs, compiled CUBINs and (from schema v2) trials, best
// configs and sparsity profiles, in one SQLite file shared safely by several processes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "db/sqlite.h"

namespace sparsejit::db {

// A GPU as the CUDA driver describes it; plain data, filled in by the caller.
struct GpuRecord {
  std::string name;  // e.g. "NVIDIA H100 80GB HBM3"
  int cc_major = 0;
  int cc_minor = 0;
  int sm_count = 0;
  std::int64_t memory_bytes = 0;
  std::string driver_version;  // metadata only
  std::string uuid;            // metadata only: identical cards share one row
  int sm_clock_khz = 0;        // metadata only
  int memory_clock_khz = 0;    // metadata only

  // The identity of the GPU: name, compute capability, SM count and memory size, e.g.
  // "NVIDIA H100 80GB HBM3|cc9.0|132 SMs|85029158912 bytes". Tuning results carry over
  // between cards (and driver versions) with the same fingerprint.
  std::string fingerprint() const;
};

struct StoredGpu {
  std::int64_t id = 0;
  GpuRecord gpu;
  std::string first_seen;  // ISO 8601 UTC, e.g. "2025-01-31T12:00:00.123Z"
  std::string last_seen;
};

// One compiled specialization.
struct CubinRecord {
  std::string key;             // hex SHA-256 of source, arguments, options, target, NVRTC version: 64 chars
  std::string source_key;      // the same without the NVRTC version (64 hex chars); "" when unknown (rows of schema v2)
  std::string family;          // kernel family, e.g. "permute"
  std::string target;          // e.g. "sm_90a"
  std::string nvrtc_version;   // e.g. "13.0 (build cuda_13.0.r13.0/...)"
  std::string specialization;  // human-readable, e.g. "permute<bf16,128,gather,bnhd>"
  std::string lowered_names_json;  // JSON object {"name expression": "lowered name", ...}
  std::vector<std::uint8_t> binary;  // the CUBIN, never empty
  double compile_ms = 0;
  std::string created_at;  // ISO 8601 UTC; put_cubin fills it with the current time when empty
};

// A CubinRecord without its binary, as listings show it.
struct CubinSummary {
  std::string key;
  std::string source_key;  // "" when unknown
  std::string family;
  std::string target;
  std::string nvrtc_version;
  std::string specialization;
  std::string lowered_names_json;
  std::int64_t binary_bytes = 0;
  double compile_ms = 0;
  std::string created_at;
};

// One measured candidate of a tuning run. Every trial is kept, failed ones included, so an
// interrupted run resumes where it stopped.
enum class TrialStatus { ok, failed, incorrect };

struct TrialRecord {
  std::int64_t gpu_id = 0;      // from upsert_gpu
  std::string family;           // kernel family
  std::string problem_key;      // what was tuned, e.g. "permute_tokens|d128|gather"
  std::string config_json;      // the candidate, as the family writes it
  TrialStatus status = TrialStatus::ok;
  std::optional<double> median_ms, p20_ms, p80_ms;  // set when status is ok
  std::optional<double> rel_error;                  // from the correctness gate
  int sm_clock_khz = 0;         // the SM clock seen while timing
  std::string cubin_key;        // the CUBIN measured; empty when none was stored
  std::string message;          // why it failed or was incorrect; ok: how it was timed, if not fully
};

struct StoredTrial {
  std::int64_t id = 0;
  TrialRecord trial;
  std::string created_at;
};

// The fastest correct trial per (GPU, family, problem).
struct BestConfig {
  std::int64_t gpu_id = 0;
  std::string family;
  std::string problem_key;
  std::string config_json;
  double median_ms = 0;
  std::int64_t trial_id = 0;
  std::string updated_at;
};

std::string_view to_string(TrialStatus status);  // "ok", "failed", "incorrect"
std::optional<TrialStatus> parse_trial_status(std::string_view text);  // the inverse; none for other text

// Which trials list_trials returns; an unset or empty field matches every value.
struct TrialFilter {
  std::optional<std::int64_t> gpu_id = std::nullopt;
  std::string family = {};
  std::string problem_key = {};
};

// One problem tuned on one GPU: its trials counted by status, and its best config.
struct ProblemSummary {
  std::int64_t gpu_id = 0;
  std::string family;
  std::string problem_key;
  std::int64_t ok_trials = 0;
  std::int64_t failed_trials = 0;
  std::int64_t incorrect_trials = 0;
  std::optional<BestConfig> best;  // none while no trial of the problem was ok
};

// The density that keeps attention recall tau for one (model, diffusion step, layer, head),
// from offline profiling. density and tau lie in (0, 1].
struct SparsityProfile {
  std::string model;
  int step = 0;
  int layer = 0;
  int head = 0;
  double density = 0;
  double tau = 0;
};

struct DatabaseStats {
  int schema_version = 0;
  std::int64_t file_bytes = 0;  // pages in use x page size, i.e. the file after a checkpoint (-wal not counted)
  std::int64_t gpus = 0;
  std::int64_t cubins = 0;
  std::int64_t cubin_bytes = 0;  // sum of the CUBIN sizes
  std::int64_t trials = 0;
  std::int64_t best_configs = 0;
  std::int64_t sparsity_profiles = 0;
};

// Why prune_cubins removes a CUBIN.
enum class PruneReason {
  other_nvrtc,                // no source key and another NVRTC than the running one: its key is never asked for again
  not_needed_by_best_configs, // measured by trials, none of them a best config's: a loser's binary
  superseded,                 // a newer CUBIN of the same source key is the one find_cubin_by_source returns
};

struct PrunedCubin {
  CubinSummary cubin;
  PruneReason reason;
};

struct PruneReport {
  std::vector<PrunedCubin> cubins;  // ordered like list_cubins
  std::int64_t binary_bytes = 0;    // the sum of their sizes
};

struct VacuumReport {
  std::int64_t file_bytes_before = 0;  // the database file and its -wal file
  std::int64_t file_bytes_after = 0;
  bool checkpointed = false;  // false: another connection was reading; the file shrinks at a later checkpoint
};

struct TuningSnapshot;  // db/snapshot.h
struct ImportSummary;   // db/snapshot.h

// Throw std::invalid_argument when the record could not be stored: a CUBIN whose key (or
// source key, when given) is not 64 lowercase hex digits, whose lowered_names_json is not a
// JSON object of strings or whose binary is empty; an ok trial without its median time; a
// sparsity profile with an empty model name, a negative step, layer or head, or a density or
// tau outside (0, 1] (the message names the row: model, step, layer, head).
void validate_cubin(const CubinRecord& cubin);
void validate_trial(const TrialRecord& trial);
void validate_sparsity_profile(const SparsityProfile& profile);

// Binds `cubin` to ?1..?10 of a statement over the cubins table, in the order key, family,
// target, nvrtc_version, specialization, lowered_names_json, binary, compile_ms, created_at,
// source_key (the statement decides what an empty created_at or source_key stands for).
void bind_cubin(Statement& statement, const CubinRecord& cubin);
// Binds `gpu` to ?1..?10 of a statement over the gpus table, in the order fingerprint, name,
// cc_major, cc_minor, sm_count, memory_bytes, driver_version, uuid, sm_clock_khz,
// memory_clock_khz.
void bind_gpu(Statement& statement, const GpuRecord& gpu);
// Binds `trial` to ?1..?12 of a statement over the trials table, in the order gpu_id (the
// argument, not trial.gpu_id), family, problem_key, config_json, status, median_ms, p20_ms,
// p80_ms, rel_error, sm_clock_khz, cubin_key, message (absent times as NULL; the statement
// decides what an empty cubin_key stands for).
void bind_trial(Statement& statement, std::int64_t gpu_id, const TrialRecord& trial);

struct OpenOptions {
  bool read_only = false;
  int busy_timeout_ms = kDefaultBusyTimeoutMs;  // how long to wait for another process's lock
};

// One SQLite connection in serialized mode: several threads may call one Database at once
// (each call is atomic; a write's transaction is this connection's, so concurrent writers of
// one Database must take turns, as the CUBIN store's lock makes them).
class Database {
 public:
  // Opens or creates the database at `path`.
  // Read-write: creates missing parent directories; a missing or zero-length file becomes
  // a new database; an older schema is migrated to kCurrentSchemaVersion; WAL mode is on.
  // Read-only: the file must exist and already have the current schema.
  // Throws DatabaseError: Kind::not_a_database (not SQLite, or SQLite of another program;
  // the file is never modified), Kind::schema_too_new, Kind::locked, Kind::io.
  static Database open(const std::filesystem::path& path, OpenOptions options = {});

  const std::filesystem::path& path() const { return connection_.path(); }
  int schema_version() const { return schema_version_; }

  // Inserts the GPU or, when its fingerprint is known, refreshes its metadata and
  // last_seen. Returns the row id, stable for a fingerprint.
  std::int64_t upsert_gpu(const GpuRecord& gpu);
  std::vector<StoredGpu> list_gpus() const;  // ordered by id

  // Inserts the CUBIN or replaces the one with the same key (a replacement without a source
  // key keeps the stored one). Throws std::invalid_argument if the key or the source key
  // (unless empty) is not 64 lowercase hex digits, lowered_names_json is not a JSON object
  // of strings, or the binary is empty.
  void put_cubin(const CubinRecord& cubin);
  std::optional<CubinRecord> find_cubin(std::string_view key) const;
  // The CUBIN of `source_key`: where several are stored (compiled by several NVRTCs), the one
  // created last, ties broken by the greater key. Rows without a source key (schema v2) are
  // not found here, only by find_cubin, until record_cubin_source_key gives them theirs.
  std::optional<CubinRecord> find_cubin_by_source(std::string_view source_key) const;
  // Records `source_key` for the CUBIN `key` when it has none; the caller vouches that the
  // two were computed from one request. Returns whether the row changed.
  bool record_cubin_source_key(std::string_view key, std::string_view source_key);
  std::vector<CubinSummary> list_cubins() const;  // ordered by family, target, specialization, key
  // Deletes, in one transaction, the CUBINs that no run will load again: those without a
  // source key (schema v2 rows, found only by their key) of another NVRTC version than
  // `nvrtc_version` (jit::nvrtc_version().to_string() of the running build); those that a
  // newer CUBIN of the same source key supersedes (find_cubin_by_source never returns them);
  // and the losers' binaries: CUBINs that trials measured where no such trial has the
  // config of its GPU's and problem's best config. A CUBIN with a source key that no other
  // supersedes stays whichever NVRTC compiled it: the runtime loads it. CUBINs no trial
  // refers to (compiled by `precompile` ahead of tuning, or by the runtime for a built-in
  // default) are kept. Trials stay; their cubin_key becomes NULL. With `dry_run` nothing is
  // deleted: the report lists what would go. The file does not shrink until vacuum().
  PruneReport prune_cubins(std::string_view nvrtc_version, bool dry_run);
  // Rebuilds the file without its free pages (VACUUM) and checkpoints the WAL into it.
  VacuumReport vacuum();

  // Stores a trial and, when it is ok and faster than the best of its problem (or the first),
  // makes it the best, in one transaction: several tuners may share the file. Returns its id.
  std::int64_t record_trial(const TrialRecord& trial);
  // Trials of one problem on one GPU, oldest first.
  std::vector<StoredTrial> list_trials(std::int64_t gpu_id, std::string_view family,
                                       std::string_view problem_key) const;
  // The trials that `filter` selects, ordered by GPU, family, problem, then oldest first.
  std::vector<StoredTrial> list_trials(const TrialFilter& filter) const;
  std::optional<BestConfig> find_best(std::int64_t gpu_id, std::string_view family,
                                      std::string_view problem_key) const;
  std::vector<BestConfig> list_best_configs() const;  // ordered by gpu, family, problem
  // Every (GPU, family, problem) with a trial or a best config, ordered like list_best_configs.
  std::vector<ProblemSummary> list_problems() const;

  std::vector<SparsityProfile> list_sparsity_profiles() const;  // ordered by model, step, layer, head
  // One model's rows, ordered by step, layer, head.
  std::vector<SparsityProfile> list_sparsity_profiles(std::string_view model) const;
  // Stores `profiles` in one transaction: for every (model, step, layer) among them, the
  // stored rows of that (model, step, layer) are deleted first (all heads), then the given
  // ones inserted; so a rerun of `sparsejit profile` replaces what it profiled and keeps the
  // model's other steps and layers. Throws std::invalid_argument before writing anything for
  // an empty model name, a negative step, layer or head, a density or tau outside (0, 1], or
  // a (model, step, layer, head) given twice.
  void replace_sparsity_profiles(const std::vector<SparsityProfile>& profiles);

  DatabaseStats stats() const;

  // Every GPU, trial, best config and sparsity profile (and with `with_cubins` every CUBIN),
  // read in one read transaction, in a fixed order: GPUs by fingerprint; trials by GPU
  // fingerprint, family, problem, created_at, config; best configs by GPU fingerprint,
  // family, problem; profiles by model, step, layer, head; CUBINs by key. The whole
  // snapshot is held in memory (CUBINs included).
  TuningSnapshot read_snapshot(bool with_cubins) const;
  // Applies `snapshot` in one transaction, by the rules of db/snapshot.h; a second apply of
  // the same snapshot changes nothing. Throws std::invalid_argument (validate_snapshot)
  // before writing anything, and DatabaseError from SQLite; either way the database is left
  // as it was.
  ImportSummary import_snapshot(const TuningSnapshot& snapshot);

 private:
  Database(Connection connection, int schema_version);

  Connection connection_;
  int schema_version_;
};

}  // namespace sparsejit::db
