// The sparsejit database schema and its history. A sparsejit database has a `meta` table
// (key TEXT, value TEXT) holding application = "sparsejit" and schema_version = N; the
// schema is built by applying migrations 1..N in order, so a database written by an older
// sparsejit is brought up to date with its data kept.
//
//   v1: meta, gpus (one row per GPU fingerprint), cubins (compiled code by SHA-256 key)
//   v2: trials (every measured candidate), best_configs (winner per GPU and problem),
//       sparsity_profiles (per model/step/layer/head density)
//   v3: cubins.source_key (CompileRequest::source_key: the key without the NVRTC version, by
//       which the runtime finds a CUBIN without opening NVRTC) and its index; NULL in rows
//       of older schemas, which the runtime fills in when it finds them by their key
#pragma once

#include <filesystem>
#include <string_view>

#include "db/sqlite.h"

namespace sparsejit::db {

inline constexpr int kCurrentSchemaVersion = 3;
inline constexpr std::string_view kApplicationMarker = "sparsejit";

enum class DatabaseContent {
  empty,      // no tables at all: a new (or zero-length) file, ready to be initialized
  sparsejit,  // carries our meta table and application marker
  foreign,    // a SQLite database of some other program
};

struct SchemaState {
  DatabaseContent content;
  int version;  // meta.schema_version; 0 unless content == sparsejit
};

// Reads what the file holds without writing to it. Throws Kind::not_a_database when the
// file is not SQLite at all.
SchemaState inspect_schema(const Connection& connection);

// Throws unless the state is empty or a sparsejit schema this build understands:
// Kind::not_a_database for a foreign database, Kind::schema_too_new for a newer version.
void require_usable_schema(const SchemaState& state, const std::filesystem::path& path);

// Brings the schema up to at least target_version (1..kCurrentSchemaVersion) inside one
// BEGIN IMMEDIATE transaction: the file is inspected again under the write lock, so
// several processes opening a new file at once initialize it exactly once. Leaves a
// database already at or above target_version as it is; refuses foreign or too-new ones
// like require_usable_schema. Returns the schema version afterwards.
int migrate(Connection& connection, int target_version = kCurrentSchemaVersion);

}  // namespace sparsejit::db
