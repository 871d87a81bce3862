#include "db/database.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <set>
#include <stdexcept>
#include <system_error>
#include <tuple>
#include <utility>

#include "db/schema.h"

namespace sparsejit::db {
namespace {

void create_parent_directories(const std::filesystem::path& path) {
  const std::filesystem::path directory = path.parent_path();
  if (directory.empty()) return;
  std::error_code error;
  std::filesystem::create_directories(directory, error);
  if (error) {
    throw DatabaseError(DatabaseError::Kind::io, path, 0, {},
                        path.string() + ": cannot create directory " + directory.string() + ": " + error.message());
  }
}

// A read-only connection can neither initialize nor migrate the file.
void require_current_schema_for_reading(const SchemaState& state, const std::filesystem::path& path) {
  if (state.content == DatabaseContent::empty) {
    throw DatabaseError(DatabaseError::Kind::not_a_database, path, 0, {},
                        path.string() + ": the file is empty, not a sparsejit database yet; "
                                        "open it read-write once to create one");
  }
  if (state.version < kCurrentSchemaVersion) {
    throw DatabaseError(DatabaseError::Kind::other, path, 0, {},
                        path.string() + ": schema version " + std::to_string(state.version) +
                            " is older than this sparsejit's (" + std::to_string(kCurrentSchemaVersion) +
                            ") and a read-only open cannot migrate it; open it read-write once");
  }
}

bool is_sha256_hex(std::string_view key) {
  return key.size() == 64 &&
         key.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

bool is_object_of_strings(const std::string& json_text) {
  const nlohmann::json parsed = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) return false;  // also covers a parse error (is_discarded)
  for (const nlohmann::json& lowered_name : parsed) {  // iterates the values of an object
    if (!lowered_name.is_string()) return false;
  }
  return true;
}

}  // namespace

void validate_cubin(const CubinRecord& cubin) {
  if (!is_sha256_hex(cubin.key)) {
    throw std::invalid_argument("cubin key must be 64 lowercase hex digits (SHA-256), got '" + cubin.key + "'");
  }
  if (!cubin.source_key.empty() && !is_sha256_hex(cubin.source_key)) {
    throw std::invalid_argument("cubin " + cubin.key + ": source key must be empty or 64 lowercase hex digits " +
                                "(SHA-256), got '" + cubin.source_key + "'");
  }
  if (!is_object_of_strings(cubin.lowered_names_json)) {
    throw std::invalid_argument("cubin " + cubin.key +
                                ": lowered_names_json must be a JSON object of strings, got '" +
                                cubin.lowered_names_json + "'");
  }
  if (cubin.binary.empty()) throw std::invalid_argument("cubin " + cubin.key + ": empty binary");
}

void validate_trial(const TrialRecord& trial) {
  if (trial.status == TrialStatus::ok && !trial.median_ms)
    throw std::invalid_argument("an ok trial needs its median time");
}

void validate_sparsity_profile(const SparsityProfile& p) {
  const std::string where = "sparsity profile (model '" + p.model + "', step " + std::to_string(p.step) + ", layer " +
                            std::to_string(p.layer) + ", head " + std::to_string(p.head) + ")";
  if (p.model.empty()) throw std::invalid_argument(where + ": the model name is empty");
  if (p.step < 0 || p.layer < 0 || p.head < 0)
    throw std::invalid_argument(where + ": step, layer and head must not be negative");
  if (!(p.density > 0 && p.density <= 1) || !(p.tau > 0 && p.tau <= 1))
    throw std::invalid_argument(where + ": density " + std::to_string(p.density) + " and tau " +
                                std::to_string(p.tau) + " must lie in (0, 1]");
}

std::string GpuRecord::fingerprint() const {
  return name + "|cc" + std::to_string(cc_major) + "." + std::to_string(cc_minor) + "|" +
         std::to_string(sm_count) + " SMs|" + std::to_string(memory_bytes) + " bytes";
}

Database::Database(Connection connection, int schema_version)
    : connection_(std::move(connection)), schema_version_(schema_version) {}

Database Database::open(const std::filesystem::path& path, OpenOptions options) {
  if (!options.read_only) create_parent_directories(path);
  Connection connection = Connection::open(
      path, options.read_only ? OpenMode::read_only : OpenMode::read_write_create, options.busy_timeout_ms);
  // Identify the file before anything writes to it (WAL mode rewrites the header).
  const SchemaState state = inspect_schema(connection);
  require_usable_schema(state, path);
  if (options.read_only) {
    require_current_schema_for_reading(state, path);
    return Database(std::move(connection), state.version);
  }
  connection.enable_write_ahead_log();
  // An up-to-date file is not write-locked at all, so opening never waits for a writer.
  const int version = state.version == kCurrentSchemaVersion ? state.version : migrate(connection);
  return Database(std::move(connection), version);
}

std::int64_t Database::upsert_gpu(const GpuRecord& gpu) {
  const std::string fingerprint = gpu.fingerprint();
  Transaction transaction(connection_);
  Statement upsert = connection_.prepare(R"sql(
    INSERT INTO gpus (fingerprint, name, cc_major, cc_minor, sm_count, memory_bytes, driver_version, uuid,
                      sm_clock_khz, memory_clock_khz, first_seen, last_seen)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    ON CONFLICT (fingerprint) DO UPDATE SET
      driver_version = excluded.driver_version, uuid = excluded.uuid, sm_clock_khz = excluded.sm_clock_khz,
      memory_clock_khz = excluded.memory_clock_khz, last_seen = excluded.last_seen)sql");
  bind_gpu(upsert, gpu);
  upsert.step();

  Statement select = connection_.prepare("SELECT id FROM gpus WHERE fingerprint = ?1");
  select.bind_text(1, fingerprint);
  if (!select.step()) {
    throw DatabaseError(DatabaseError::Kind::other, path(), 0, {},
                        path().string() + ": GPU row '" + fingerprint + "' missing right after its upsert");
  }
  const std::int64_t id = select.column_int64(0);
  transaction.commit();
  return id;
}

std::vector<StoredGpu> Database::list_gpus() const {
  Statement query = connection_.prepare(R"sql(
    SELECT id, name, cc_major, cc_minor, sm_count, memory_bytes, driver_version, uuid, sm_clock_khz,
           memory_clock_khz, first_seen, last_seen
    FROM gpus ORDER BY id)sql");
  std::vector<StoredGpu> gpus;
  while (query.step()) {
    StoredGpu& row = gpus.emplace_back();
    row.id = query.column_int64(0);
    row.gpu.name = query.column_text(1);
    row.gpu.cc_major = static_cast<int>(query.column_int64(2));
    row.gpu.cc_minor = static_cast<int>(query.column_int64(3));
    row.gpu.sm_count = static_cast<int>(query.column_int64(4));
    row.gpu.memory_bytes = query.column_int64(5);
    row.gpu.driver_version = query.column_text(6);
    row.gpu.uuid = query.column_text(7);
    row.gpu.sm_clock_khz = static_cast<int>(query.column_int64(8));
    row.gpu.memory_clock_khz = static_cast<int>(query.column_int64(9));
    row.first_seen = query.column_text(10);
    row.last_seen = query.column_text(11);
  }
  return gpus;
}

void bind_cubin(Statement& statement, const CubinRecord& cubin) {
  statement.bind_text(1, cubin.key);
  statement.bind_text(2, cubin.family);
  statement.bind_text(3, cubin.target);
  statement.bind_text(4, cubin.nvrtc_version);
  statement.bind_text(5, cubin.specialization);
  statement.bind_text(6, cubin.lowered_names_json);
  statement.bind_blob(7, cubin.binary);
  statement.bind_double(8, cubin.compile_ms);
  statement.bind_text(9, cubin.created_at);
  statement.bind_text(10, cubin.source_key);
}

void bind_gpu(Statement& statement, const GpuRecord& gpu) {
  statement.bind_text(1, gpu.fingerprint());
  statement.bind_text(2, gpu.name);
  statement.bind_int64(3, gpu.cc_major);
  statement.bind_int64(4, gpu.cc_minor);
  statement.bind_int64(5, gpu.sm_count);
  statement.bind_int64(6, gpu.memory_bytes);
  statement.bind_text(7, gpu.driver_version);
  statement.bind_text(8, gpu.uuid);
  statement.bind_int64(9, gpu.sm_clock_khz);
  statement.bind_int64(10, gpu.memory_clock_khz);
}

void bind_trial(Statement& statement, std::int64_t gpu_id, const TrialRecord& trial) {
  statement.bind_int64(1, gpu_id);
  statement.bind_text(2, trial.family);
  statement.bind_text(3, trial.problem_key);
  statement.bind_text(4, trial.config_json);
  statement.bind_text(5, to_string(trial.status));
  statement.bind_double_or_null(6, trial.median_ms);
  statement.bind_double_or_null(7, trial.p20_ms);
  statement.bind_double_or_null(8, trial.p80_ms);
  statement.bind_double_or_null(9, trial.rel_error);
  statement.bind_int64(10, trial.sm_clock_khz);
  statement.bind_text(11, trial.cubin_key);
  statement.bind_text(12, trial.message);
}

void Database::put_cubin(const CubinRecord& cubin) {
  validate_cubin(cubin);
  Transaction transaction(connection_);
  Statement upsert = connection_.prepare(R"sql(
    INSERT INTO cubins (key, family, target, nvrtc_version, specialization, lowered_names_json, binary,
                        compile_ms, created_at, source_key)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, coalesce(nullif(?9, ''), strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            nullif(?10, ''))
    ON CONFLICT (key) DO UPDATE SET
      family = excluded.family, target = excluded.target, nvrtc_version = excluded.nvrtc_version,
      specialization = excluded.specialization, lowered_names_json = excluded.lowered_names_json,
      binary = excluded.binary, compile_ms = excluded.compile_ms, created_at = excluded.created_at,
      source_key = coalesce(excluded.source_key, cubins.source_key))sql");
  bind_cubin(upsert, cubin);
  upsert.step();
  transaction.commit();
}

namespace {

// The columns cubin_from_row reads.
constexpr std::string_view kCubinColumns =
    "SELECT key, family, target, nvrtc_version, specialization, lowered_names_json, binary, compile_ms, created_at, "
    "coalesce(source_key, '') FROM cubins ";

CubinRecord cubin_from_row(const Statement& query) {
  return CubinRecord{
      .key = query.column_text(0),
      .source_key = query.column_text(9),
      .family = query.column_text(1),
      .target = query.column_text(2),
      .nvrtc_version = query.column_text(3),
      .specialization = query.column_text(4),
      .lowered_names_json = query.column_text(5),
      .binary = query.column_blob(6),
      .compile_ms = query.column_double(7),
      .created_at = query.column_text(8),
  };
}

}  // namespace

std::optional<CubinRecord> Database::find_cubin(std::string_view key) const {
  Statement query = connection_.prepare(std::string(kCubinColumns) + "WHERE key = ?1");
  query.bind_text(1, key);
  if (!query.step()) return std::nullopt;
  return cubin_from_row(query);
}

std::optional<CubinRecord> Database::find_cubin_by_source(std::string_view source_key) const {
  // cubins_by_source (source_key, created_at, key) answers this from the index's end.
  Statement query = connection_.prepare(std::string(kCubinColumns) +
                                        "WHERE source_key = ?1 ORDER BY created_at DESC, key DESC LIMIT 1");
  query.bind_text(1, source_key);
  if (!query.step()) return std::nullopt;
  return cubin_from_row(query);
}

bool Database::record_cubin_source_key(std::string_view key, std::string_view source_key) {
  if (!is_sha256_hex(source_key)) {
    throw std::invalid_argument("cubin " + std::string(key) + ": source key must be 64 lowercase hex digits " +
                                "(SHA-256), got '" + std::string(source_key) + "'");
  }
  Transaction transaction(connection_);
  Statement update = connection_.prepare("UPDATE cubins SET source_key = ?2 WHERE key = ?1 AND source_key IS NULL");
  update.bind_text(1, key);
  update.bind_text(2, source_key);
  update.step();
  const bool changed = connection_.changes() == 1;
  transaction.commit();
  return changed;
}

namespace {

// The columns cubin_summary_from_row reads, of the table `cubins` named c; kCubinSummaryFrom
// names it (after any further columns).
constexpr std::string_view kCubinSummaryColumns =
    "SELECT c.key, c.family, c.target, c.nvrtc_version, c.specialization, c.lowered_names_json, "
    "length(c.binary), c.compile_ms, c.created_at, coalesce(c.source_key, '') ";
constexpr std::string_view kCubinSummaryFrom = "FROM cubins c ";

CubinSummary cubin_summary_from_row(const Statement& query) {
  return CubinSummary{
      .key = query.column_text(0),
      .source_key = query.column_text(9),
      .family = query.column_text(1),
      .target = query.column_text(2),
      .nvrtc_version = query.column_text(3),
      .specialization = query.column_text(4),
      .lowered_names_json = query.column_text(5),
      .binary_bytes = query.column_int64(6),
      .compile_ms = query.column_double(7),
      .created_at = query.column_text(8),
  };
}

}  // namespace

std::vector<CubinSummary> Database::list_cubins() const {
  Statement query = connection_.prepare(std::string(kCubinSummaryColumns) + std::string(kCubinSummaryFrom) +
                                        "ORDER BY c.family, c.target, c.specialization, c.key");
  std::vector<CubinSummary> cubins;
  while (query.step()) cubins.push_back(cubin_summary_from_row(query));
  return cubins;
}

PruneReport Database::prune_cubins(std::string_view nvrtc_version, bool dry_run) {
  std::optional<Transaction> transaction;  // a dry run only reads
  if (!dry_run) transaction.emplace(connection_);
  // A CUBIN is needed when a trial that measured it has the config, GPU and problem of a best
  // config: that is the binary the runtime asks for (same render and target). Without a source
  // key the runtime finds it only by its key, which holds the NVRTC version; with one, by the
  // source key, which gives the newest CUBIN of that source (find_cubin_by_source's order).
  Statement query = connection_.prepare(std::string(kCubinSummaryColumns) + R"sql(
    , (c.source_key IS NULL AND c.nvrtc_version <> ?1) AS other_nvrtc,
      EXISTS (SELECT 1 FROM cubins d
              WHERE d.source_key = c.source_key
                AND (d.created_at > c.created_at OR (d.created_at = c.created_at AND d.key > c.key))) AS superseded
    )sql" + std::string(kCubinSummaryFrom) + R"sql(
    WHERE other_nvrtc OR superseded
       OR (EXISTS (SELECT 1 FROM trials t WHERE t.cubin_key = c.key)
           AND NOT EXISTS (SELECT 1 FROM trials t
                           JOIN best_configs b USING (gpu_id, family, problem_key, config_json)
                           WHERE t.cubin_key = c.key))
    ORDER BY c.family, c.target, c.specialization, c.key)sql");
  query.bind_text(1, nvrtc_version);
  PruneReport report;
  while (query.step()) {
    PrunedCubin& pruned = report.cubins.emplace_back();
    pruned.cubin = cubin_summary_from_row(query);
    pruned.reason = query.column_int64(10) != 0   ? PruneReason::other_nvrtc
                    : query.column_int64(11) != 0 ? PruneReason::superseded
                                                  : PruneReason::not_needed_by_best_configs;
    report.binary_bytes += pruned.cubin.binary_bytes;
  }
  if (dry_run) return report;
  Statement remove = connection_.prepare("DELETE FROM cubins WHERE key = ?1");  // trials.cubin_key becomes NULL
  for (const PrunedCubin& pruned : report.cubins) {
    remove.bind_text(1, pruned.cubin.key);
    remove.step();
    remove.reset();
  }
  transaction->commit();
  return report;
}

VacuumReport Database::vacuum() {
  const auto file_bytes = [this] {
    std::int64_t total = 0;
    for (const std::filesystem::path& file : {path(), std::filesystem::path(path().string() + "-wal")}) {
      std::error_code missing;  // no -wal file counts as 0 bytes
      const std::uintmax_t size = std::filesystem::file_size(file, missing);
      if (!missing) total += static_cast<std::int64_t>(size);
    }
    return total;
  };
  VacuumReport report;
  report.file_bytes_before = file_bytes();
  connection_.exec("VACUUM");
  // In WAL mode VACUUM writes the compacted pages to the -wal file; a checkpoint copies them
  // back and truncates both files. It cannot finish while another connection reads.
  Statement checkpoint = connection_.prepare("PRAGMA wal_checkpoint(TRUNCATE)");
  checkpoint.step();  // one row: busy, WAL frames, frames checkpointed
  report.checkpointed = checkpoint.column_int64(0) == 0;
  report.file_bytes_after = file_bytes();
  return report;
}

std::string_view to_string(TrialStatus status) {
  switch (status) {
    case TrialStatus::ok: return "ok";
    case TrialStatus::failed: return "failed";
    case TrialStatus::incorrect: return "incorrect";
  }
  return "unknown";
}

std::optional<TrialStatus> parse_trial_status(std::string_view text) {
  for (const TrialStatus status : {TrialStatus::ok, TrialStatus::failed, TrialStatus::incorrect})
    if (text == to_string(status)) return status;
  return std::nullopt;
}

namespace {

// Reads the columns of kBestColumns, the first of them at `first`.
BestConfig best_from_row(const Statement& query, int first = 0) {
  return BestConfig{.gpu_id = query.column_int64(first),
                    .family = query.column_text(first + 1),
                    .problem_key = query.column_text(first + 2),
                    .config_json = query.column_text(first + 3),
                    .median_ms = query.column_double(first + 4),
                    .trial_id = query.column_is_null(first + 5) ? 0 : query.column_int64(first + 5),
                    .updated_at = query.column_text(first + 6)};
}

constexpr const char* kBestColumns =
    "SELECT gpu_id, family, problem_key, config_json, median_ms, trial_id, updated_at FROM best_configs";

}  // namespace

std::int64_t Database::record_trial(const TrialRecord& trial) {
  validate_trial(trial);
  Transaction transaction(connection_);
  Statement insert = connection_.prepare(R"sql(
    INSERT INTO trials (gpu_id, family, problem_key, config_json, status, median_ms, p20_ms, p80_ms,
                        rel_error, sm_clock_khz, cubin_key, message, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, nullif(?11, ''), ?12,
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))sql");
  bind_trial(insert, trial.gpu_id, trial);
  insert.step();
  const std::int64_t id = connection_.last_insert_rowid();
  if (trial.status == TrialStatus::ok) {
    // Keeps the faster of the stored best and this trial.
    Statement offer = connection_.prepare(R"sql(
      INSERT INTO best_configs (gpu_id, family, problem_key, config_json, median_ms, trial_id, updated_at)
      VALUES (?1, ?2, ?3, ?4, ?5, ?6, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
      ON CONFLICT (gpu_id, family, problem_key) DO UPDATE SET
        config_json = excluded.config_json, median_ms = excluded.median_ms,
        trial_id = excluded.trial_id, updated_at = excluded.updated_at
      WHERE excluded.median_ms < best_configs.median_ms)sql");
    offer.bind_int64(1, trial.gpu_id);
    offer.bind_text(2, trial.family);
    offer.bind_text(3, trial.problem_key);
    offer.bind_text(4, trial.config_json);
    offer.bind_double(5, *trial.median_ms);
    offer.bind_int64(6, id);
    offer.step();
  }
  transaction.commit();
  return id;
}

std::vector<StoredTrial> Database::list_trials(std::int64_t gpu_id, std::string_view family,
                                               std::string_view problem_key) const {
  return list_trials(TrialFilter{.gpu_id = gpu_id, .family = std::string(family),
                                 .problem_key = std::string(problem_key)});
}

std::vector<StoredTrial> Database::list_trials(const TrialFilter& filter) const {
  Statement query = connection_.prepare(R"sql(
    SELECT id, gpu_id, family, problem_key, config_json, status, median_ms, p20_ms, p80_ms, rel_error,
           sm_clock_khz, coalesce(cubin_key, ''), message, created_at
    FROM trials
    WHERE (?1 IS NULL OR gpu_id = ?1) AND (?2 = '' OR family = ?2) AND (?3 = '' OR problem_key = ?3)
    ORDER BY gpu_id, family, problem_key, id)sql");
  if (filter.gpu_id) query.bind_int64(1, *filter.gpu_id);
  else query.bind_null(1);
  query.bind_text(2, filter.family);
  query.bind_text(3, filter.problem_key);
  std::vector<StoredTrial> trials;
  while (query.step()) {
    StoredTrial& row = trials.emplace_back();
    row.id = query.column_int64(0);
    row.trial.gpu_id = query.column_int64(1);
    row.trial.family = query.column_text(2);
    row.trial.problem_key = query.column_text(3);
    row.trial.config_json = query.column_text(4);
    // The CHECK constraint on status admits only the three names parse_trial_status knows.
    row.trial.status = parse_trial_status(query.column_text(5)).value_or(TrialStatus::failed);
    row.trial.median_ms = query.column_optional_double(6);
    row.trial.p20_ms = query.column_optional_double(7);
    row.trial.p80_ms = query.column_optional_double(8);
    row.trial.rel_error = query.column_optional_double(9);
    row.trial.sm_clock_khz = static_cast<int>(query.column_int64(10));
    row.trial.cubin_key = query.column_text(11);
    row.trial.message = query.column_text(12);
    row.created_at = query.column_text(13);
  }
  return trials;
}

std::optional<BestConfig> Database::find_best(std::int64_t gpu_id, std::string_view family,
                                              std::string_view problem_key) const {
  Statement query = connection_.prepare(std::string(kBestColumns) +
                                        " WHERE gpu_id = ?1 AND family = ?2 AND problem_key = ?3");
  query.bind_int64(1, gpu_id);
  query.bind_text(2, family);
  query.bind_text(3, problem_key);
  if (!query.step()) return std::nullopt;
  return best_from_row(query);
}

std::vector<BestConfig> Database::list_best_configs() const {
  Statement query =
      connection_.prepare(std::string(kBestColumns) + " ORDER BY gpu_id, family, problem_key");
  std::vector<BestConfig> best;
  while (query.step()) best.push_back(best_from_row(query));
  return best;
}

std::vector<ProblemSummary> Database::list_problems() const {
  // The best config's columns come in kBestColumns' order, from column 6 on.
  Statement query = connection_.prepare(R"sql(
    WITH counts AS (
      SELECT gpu_id, family, problem_key, sum(status = 'ok') AS ok, sum(status = 'failed') AS failed,
             sum(status = 'incorrect') AS incorrect
      FROM trials GROUP BY gpu_id, family, problem_key),
    problems AS (
      SELECT gpu_id, family, problem_key FROM counts
      UNION SELECT gpu_id, family, problem_key FROM best_configs)
    SELECT p.gpu_id, p.family, p.problem_key, coalesce(c.ok, 0), coalesce(c.failed, 0),
           coalesce(c.incorrect, 0),
           b.gpu_id, b.family, b.problem_key, b.config_json, b.median_ms, b.trial_id, b.updated_at
    FROM problems p
    LEFT JOIN counts c USING (gpu_id, family, problem_key)
    LEFT JOIN best_configs b USING (gpu_id, family, problem_key)
    ORDER BY p.gpu_id, p.family, p.problem_key)sql");
  std::vector<ProblemSummary> problems;
  while (query.step()) {
    problems.push_back(ProblemSummary{
        .gpu_id = query.column_int64(0),
        .family = query.column_text(1),
        .problem_key = query.column_text(2),
        .ok_trials = query.column_int64(3),
        .failed_trials = query.column_int64(4),
        .incorrect_trials = query.column_int64(5),
        .best = query.column_is_null(6) ? std::nullopt : std::optional(best_from_row(query, 6)),
    });
  }
  return problems;
}

namespace {

// The rows of a query of (model, step, layer, head, density, tau).
std::vector<SparsityProfile> profiles_from(Statement& query) {
  std::vector<SparsityProfile> profiles;
  while (query.step()) {
    profiles.push_back(SparsityProfile{.model = query.column_text(0),
                                       .step = static_cast<int>(query.column_int64(1)),
                                       .layer = static_cast<int>(query.column_int64(2)),
                                       .head = static_cast<int>(query.column_int64(3)),
                                       .density = query.column_double(4),
                                       .tau = query.column_double(5)});
  }
  return profiles;
}

}  // namespace

std::vector<SparsityProfile> Database::list_sparsity_profiles() const {
  Statement query = connection_.prepare(
      "SELECT model, step, layer, head, density, tau FROM sparsity_profiles ORDER BY model, step, layer, head");
  return profiles_from(query);
}

std::vector<SparsityProfile> Database::list_sparsity_profiles(std::string_view model) const {
  Statement query = connection_.prepare(
      "SELECT model, step, layer, head, density, tau FROM sparsity_profiles WHERE model = ?1 "
      "ORDER BY step, layer, head");
  query.bind_text(1, model);
  return profiles_from(query);
}

void Database::replace_sparsity_profiles(const std::vector<SparsityProfile>& profiles) {
  std::set<std::tuple<std::string, int, int, int>> heads;
  std::set<std::tuple<std::string, int, int>> layers;
  for (const SparsityProfile& p : profiles) {
    validate_sparsity_profile(p);
    if (!heads.emplace(p.model, p.step, p.layer, p.head).second)
      throw std::invalid_argument("sparsity profile (model '" + p.model + "', step " + std::to_string(p.step) +
                                  ", layer " + std::to_string(p.layer) + ", head " + std::to_string(p.head) +
                                  ") given twice");
    layers.emplace(p.model, p.step, p.layer);
  }
  Transaction transaction(connection_);
  Statement remove =
      connection_.prepare("DELETE FROM sparsity_profiles WHERE model = ?1 AND step = ?2 AND layer = ?3");
  for (const auto& [model, step, layer] : layers) {
    remove.reset();
    remove.bind_text(1, model);
    remove.bind_int64(2, step);
    remove.bind_int64(3, layer);
    remove.step();
  }
  Statement insert = connection_.prepare(
      "INSERT INTO sparsity_profiles (model, step, layer, head, density, tau) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  for (const SparsityProfile& p : profiles) {
    insert.reset();
    insert.bind_text(1, p.model);
    insert.bind_int64(2, p.step);
    insert.bind_int64(3, p.layer);
    insert.bind_int64(4, p.head);
    insert.bind_double(5, p.density);
    insert.bind_double(6, p.tau);
    insert.step();
  }
  transaction.commit();
}

DatabaseStats Database::stats() const {
  Statement query = connection_.prepare(R"sql(
    SELECT (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()),
           (SELECT count(*) FROM gpus),
           (SELECT count(*) FROM cubins),
           (SELECT coalesce(sum(length(binary)), 0) FROM cubins),
           (SELECT count(*) FROM trials),
           (SELECT count(*) FROM best_configs),
           (SELECT count(*) FROM sparsity_profiles))sql");
  query.step();  // a SELECT without FROM always yields one row
  return DatabaseStats{
      .schema_version = schema_version_,
      .file_bytes = query.column_int64(0),
      .gpus = query.column_int64(1),
      .cubins = query.column_int64(2),
      .cubin_bytes = query.column_int64(3),
      .trials = query.column_int64(4),
      .best_configs = query.column_int64(5),
      .sparsity_profiles = query.column_int64(6),
  };
}

}  // namespace sparsejit::db
