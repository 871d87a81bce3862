// A small RAII layer over the SQLite C API: a connection, prepared statements and
// BEGIN IMMEDIATE transactions. Every failing SQLite call becomes a DatabaseError that
// names the database file, so callers never see a raw return code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace sparsejit::db {

class DatabaseError : public std::runtime_error {
 public:
  // What went wrong, coarse enough for callers (and tests) to branch on.
  enum class Kind {
    not_a_database,  // the file is not SQLite, or is SQLite but not a sparsejit database
    schema_too_new,  // written by a newer sparsejit than this one
    locked,          // another connection kept the database locked past the busy timeout
    io,              // cannot open, read or write the file (missing, permissions, disk full)
    constraint,      // a UNIQUE / CHECK / FOREIGN KEY / NOT NULL constraint failed
    misuse,          // a programming error: bad bind index, API misuse
    other,
  };

  // sqlite_code is the SQLite extended result code, or 0 (SQLITE_OK) for errors that
  // sparsejit itself detected (schema_too_new, a foreign database); sqlite_message is
  // SQLite's own text for the error, empty in that case.
  DatabaseError(Kind kind, std::filesystem::path path, int sqlite_code,
                std::string sqlite_message, const std::string& what);

  Kind kind() const noexcept { return kind_; }
  const std::filesystem::path& path() const noexcept { return path_; }
  int sqlite_code() const noexcept { return sqlite_code_; }
  const std::string& sqlite_message() const noexcept { return sqlite_message_; }

 private:
  Kind kind_;
  std::filesystem::path path_;
  int sqlite_code_;
  std::string sqlite_message_;
};

// Where a connection came from (its path and busy timeout), shared by the connection and
// its statements so their errors can name the file. Defined in sqlite.cpp.
struct ConnectionOrigin;

// A prepared statement. Parameters are bound by 1-based index (as in SQL's ?1, ?2...),
// result columns are read by 0-based index (as SQLite numbers them). Move-only; the
// statement is finalized when destroyed.
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  void bind_int64(int index, std::int64_t value);
  void bind_double(int index, double value);
  void bind_text(int index, std::string_view value);  // copied by SQLite
  // An empty blob binds as a zero-length blob, not as NULL.
  void bind_blob(int index, std::span<const std::byte> value);
  void bind_blob(int index, const std::vector<std::uint8_t>& value);
  void bind_null(int index);
  void bind_double_or_null(int index, const std::optional<double>& value);  // NULL when empty

  // Runs the statement one step: true while a result row is available, false once done.
  bool step();

  bool column_is_null(int column) const;
  std::int64_t column_int64(int column) const;
  double column_double(int column) const;
  std::optional<double> column_optional_double(int column) const;  // empty for NULL
  std::string column_text(int column) const;  // empty for NULL
  std::vector<std::uint8_t> column_blob(int column) const;  // empty for NULL

  // Makes the statement ready to run again and clears its bindings.
  void reset();

 private:
  friend class Connection;
  Statement(sqlite3_stmt* statement, sqlite3* connection, std::shared_ptr<const ConnectionOrigin> origin);
  void check_bind(int rc, int index) const;

  sqlite3_stmt* statement_;
  sqlite3* connection_;  // owned by the Connection that prepared this statement
  std::shared_ptr<const ConnectionOrigin> origin_;
};

enum class OpenMode {
  read_write_create,  // creates the file if missing (not its parent directories)
  read_only,          // the file must exist
};

inline constexpr int kDefaultBusyTimeoutMs = 5000;

// One SQLite connection. Opening sets foreign_keys=ON and the busy timeout; it neither
// reads nor writes the file, so a file that turns out not to be ours is left untouched.
// WAL mode is a separate step (enable_write_ahead_log) because switching to it rewrites
// the file header: callers first check that the file is theirs. Move-only.
class Connection {
 public:
  static Connection open(const std::filesystem::path& path, OpenMode mode,
                         int busy_timeout_ms = kDefaultBusyTimeoutMs);

  Connection(Connection&& other) noexcept;
  Connection& operator=(Connection&& other) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  const std::filesystem::path& path() const;

  // Runs one or more SQL statements that return no rows of interest.
  void exec(std::string_view sql);
  Statement prepare(std::string_view sql) const;

  // Sets PRAGMA journal_mode=WAL (readers never block the single writer; several tuning
  // processes can share one file). Throws Kind::io if the file system cannot do WAL.
  void enable_write_ahead_log();

  std::int64_t last_insert_rowid() const;
  int changes() const;  // rows changed by the most recent INSERT/UPDATE/DELETE
  bool in_transaction() const;

 private:
  Connection(sqlite3* connection, std::shared_ptr<const ConnectionOrigin> origin);

  sqlite3* connection_;
  std::shared_ptr<const ConnectionOrigin> origin_;
};

// BEGIN IMMEDIATE on construction: takes the write lock up front (waiting up to the busy
// timeout), so a read-then-write never fails half way because another writer got in
// first. Rolls back on destruction unless commit() was called.
class Transaction {
 public:
  explicit Transaction(Connection& connection);
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  void commit();

 private:
  Connection& connection_;
  bool committed_ = false;
};

// A read transaction (BEGIN DEFERRED): it takes no lock until the first read, then every
// read until its destruction sees one state of the file (in WAL mode, writers go on
// meanwhile), so a multi-table read (an export) is consistent. It never writes, hence it
// works on a read-only connection and on a const one.
class ReadTransaction {
 public:
  explicit ReadTransaction(const Connection& connection);
  ReadTransaction(const ReadTransaction&) = delete;
  ReadTransaction& operator=(const ReadTransaction&) = delete;
  ~ReadTransaction();

 private:
  const Connection& connection_;
};

}  // namespace sparsejit::db
