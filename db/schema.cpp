#include "db/schema.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <string>

namespace sparsejit::db {
namespace {

// Times are stored as ISO 8601 UTC text with milliseconds, e.g. 2025-01-31T12:00:00.123Z.

struct Migration {
  int version;           // the schema version this step produces
  std::string_view sql;  // applied after version - 1; never edit once released
};

constexpr std::array kMigrations = {
    Migration{1, R"sql(
CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('application', 'sparsejit');

-- One row per GPU identity (see GpuRecord::fingerprint); the rest is metadata refreshed
-- whenever the GPU is seen again.
CREATE TABLE gpus (
  id               INTEGER PRIMARY KEY,
  fingerprint      TEXT NOT NULL UNIQUE,
  name             TEXT NOT NULL,
  cc_major         INTEGER NOT NULL,
  cc_minor         INTEGER NOT NULL,
  sm_count         INTEGER NOT NULL,
  memory_bytes     INTEGER NOT NULL,
  driver_version   TEXT NOT NULL,
  uuid             TEXT NOT NULL,
  sm_clock_khz     INTEGER NOT NULL,
  memory_clock_khz INTEGER NOT NULL,
  first_seen       TEXT NOT NULL,
  last_seen        TEXT NOT NULL
);

-- Compiled code, keyed by the SHA-256 (hex) of everything that determines the binary.
CREATE TABLE cubins (
  key                TEXT PRIMARY KEY,
  family             TEXT NOT NULL,
  target             TEXT NOT NULL,
  nvrtc_version      TEXT NOT NULL,
  specialization     TEXT NOT NULL,
  lowered_names_json TEXT NOT NULL,
  binary             BLOB NOT NULL,
  compile_ms         REAL NOT NULL,
  created_at         TEXT NOT NULL
);
CREATE INDEX cubins_by_family ON cubins (family, target);
)sql"},
    Migration{2, R"sql(
-- Every measured candidate, including failed and incorrect ones, so a tuning run can resume.
CREATE TABLE trials (
  id           INTEGER PRIMARY KEY,
  gpu_id       INTEGER NOT NULL REFERENCES gpus (id) ON DELETE CASCADE,
  family       TEXT NOT NULL,
  problem_key  TEXT NOT NULL,
  config_json  TEXT NOT NULL,
  status       TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'incorrect')),
  median_ms    REAL,
  p20_ms       REAL,
  p80_ms       REAL,
  rel_error    REAL,
  sm_clock_khz INTEGER,
  cubin_key    TEXT REFERENCES cubins (key) ON DELETE SET NULL,
  message      TEXT NOT NULL DEFAULT '',  -- why a trial failed or was incorrect
  created_at   TEXT NOT NULL
);
CREATE INDEX trials_by_problem ON trials (gpu_id, family, problem_key);
CREATE INDEX trials_by_cubin ON trials (cubin_key);

-- The winner per GPU and problem.
CREATE TABLE best_configs (
  id          INTEGER PRIMARY KEY,
  gpu_id      INTEGER NOT NULL REFERENCES gpus (id) ON DELETE CASCADE,
  family      TEXT NOT NULL,
  problem_key TEXT NOT NULL,
  config_json TEXT NOT NULL,
  median_ms   REAL NOT NULL,
  trial_id    INTEGER REFERENCES trials (id) ON DELETE SET NULL,
  updated_at  TEXT NOT NULL,
  UNIQUE (gpu_id, family, problem_key)
);
CREATE INDEX best_configs_by_trial ON best_configs (trial_id);

-- Offline-profiled density per (model, diffusion step, layer, head) that keeps recall tau.
CREATE TABLE sparsity_profiles (
  id      INTEGER PRIMARY KEY,
  model   TEXT NOT NULL,
  step    INTEGER NOT NULL,
  layer   INTEGER NOT NULL,
  head    INTEGER NOT NULL,
  density REAL NOT NULL CHECK (density > 0 AND density <= 1),
  tau     REAL NOT NULL CHECK (tau > 0 AND tau <= 1),
  UNIQUE (model, step, layer, head)
);
)sql"},
    Migration{3, R"sql(
-- SHA-256 of what the key hashes except the NVRTC version: the runtime finds a CUBIN by it
-- without opening NVRTC (the most recently created one where several NVRTCs compiled the
-- source). NULL for rows of older schemas until the runtime finds them by their key.
ALTER TABLE cubins ADD COLUMN source_key TEXT;
CREATE INDEX cubins_by_source ON cubins (source_key, created_at, key);
)sql"},
};

static_assert(kMigrations.size() == kCurrentSchemaVersion);

bool has_table(const Connection& connection, std::string_view name) {
  Statement query = connection.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1");
  query.bind_text(1, name);
  return query.step();
}

// The meta table must have our shape before we query it: a foreign database may well
// have a table of the same name.
bool has_meta_table(const Connection& connection) {
  if (!has_table(connection, "meta")) return false;
  Statement columns =
      connection.prepare("SELECT count(*) FROM pragma_table_info('meta') WHERE name IN ('key', 'value')");
  columns.step();
  return columns.column_int64(0) == 2;
}

std::string meta_value(const Connection& connection, std::string_view key) {
  Statement query = connection.prepare("SELECT value FROM meta WHERE key = ?1");
  query.bind_text(1, key);
  return query.step() ? query.column_text(0) : std::string();
}

int parse_version(const std::string& text, const std::filesystem::path& path) {
  int version = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), version);
  if (error != std::errc() || end != text.data() + text.size() || version < 1) {
    throw DatabaseError(DatabaseError::Kind::other, path, 0, {},
                        path.string() + ": meta.schema_version is '" + text + "', not a schema version");
  }
  return version;
}

void set_schema_version(Connection& connection, int version) {
  Statement update = connection.prepare(
      "INSERT INTO meta (key, value) VALUES ('schema_version', ?1) "
      "ON CONFLICT (key) DO UPDATE SET value = excluded.value");
  update.bind_text(1, std::to_string(version));
  update.step();
}

}  // namespace

SchemaState inspect_schema(const Connection& connection) {
  Statement count = connection.prepare("SELECT count(*) FROM sqlite_master");
  count.step();  // the first read of the file: fails with SQLITE_NOTADB for non-SQLite files
  if (count.column_int64(0) == 0) return {DatabaseContent::empty, 0};
  if (!has_meta_table(connection) || meta_value(connection, "application") != kApplicationMarker) {
    return {DatabaseContent::foreign, 0};
  }
  return {DatabaseContent::sparsejit, parse_version(meta_value(connection, "schema_version"), connection.path())};
}

void require_usable_schema(const SchemaState& state, const std::filesystem::path& path) {
  if (state.content == DatabaseContent::foreign) {
    throw DatabaseError(DatabaseError::Kind::not_a_database, path, 0, {},
                        path.string() + ": a SQLite database, but not a sparsejit one (no meta table with " +
                            "application = sparsejit); the file was left untouched; use another database (--db)");
  }
  if (state.version > kCurrentSchemaVersion) {
    throw DatabaseError(DatabaseError::Kind::schema_too_new, path, 0, {},
                        path.string() + ": schema version " + std::to_string(state.version) +
                            " is newer than this sparsejit understands (" + std::to_string(kCurrentSchemaVersion) +
                            "); upgrade sparsejit or use another database (--db)");
  }
}

int migrate(Connection& connection, int target_version) {
  if (target_version < 1 || target_version > kCurrentSchemaVersion) {
    throw DatabaseError(DatabaseError::Kind::misuse, connection.path(), 0, {},
                        connection.path().string() + ": cannot migrate to schema version " +
                            std::to_string(target_version) + " (known versions: 1.." +
                            std::to_string(kCurrentSchemaVersion) + ")");
  }
  Transaction transaction(connection);
  const SchemaState state = inspect_schema(connection);
  require_usable_schema(state, connection.path());
  for (const Migration& migration : kMigrations) {
    if (migration.version <= state.version || migration.version > target_version) continue;
    connection.exec(migration.sql);
    set_schema_version(connection, migration.version);
  }
  transaction.commit();
  return std::max(state.version, target_version);
}

}  // namespace sparsejit::db
