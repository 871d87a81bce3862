#include "db/sqlite.h"

#include <sqlite3.h>

#include <chrono>
#include <climits>
#include <system_error>
#include <thread>
#include <utility>

namespace sparsejit::db {

struct ConnectionOrigin {
  std::filesystem::path path;
  int busy_timeout_ms;
};

namespace {

DatabaseError::Kind kind_of(int extended_code) {
  switch (extended_code & 0xff) {  // the primary result code
    case SQLITE_NOTADB:
      return DatabaseError::Kind::not_a_database;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return DatabaseError::Kind::locked;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_CORRUPT:
      return DatabaseError::Kind::io;
    case SQLITE_CONSTRAINT:
      return DatabaseError::Kind::constraint;
    case SQLITE_MISUSE:
    case SQLITE_RANGE:
      return DatabaseError::Kind::misuse;
    default:
      return DatabaseError::Kind::other;
  }
}

// Builds the error for a failed call. `connection` may be null (open failed before a
// handle existed); `action` says what was attempted ("open", "prepare: <sql>", ...).
DatabaseError make_error(sqlite3* connection, int rc, const ConnectionOrigin& origin,
                         std::string_view action) {
  const int code = connection != nullptr ? sqlite3_extended_errcode(connection) : rc;
  const std::string message = connection != nullptr ? sqlite3_errmsg(connection) : sqlite3_errstr(rc);
  const DatabaseError::Kind kind = kind_of(code);
  const std::string where = origin.path.string();
  std::string what;
  switch (kind) {
    case DatabaseError::Kind::locked:
      what = where + ": " + std::string(action) + ": the database is locked (" + message + ", SQLite error " +
             std::to_string(code) + "): another process holds it and did not " +
             "release it within the busy timeout of " + std::to_string(origin.busy_timeout_ms) +
             " ms; wait for that process (e.g. a running `sparsejit tune`) to finish, raise the busy " +
             "timeout, or use another database (--db)";
      break;
    case DatabaseError::Kind::not_a_database:
      what = where + ": not a SQLite database (" + message +
             "); the file was left untouched; use another database (--db)";
      break;
    default:
      what = where + ": " + std::string(action) + ": " + message + " (SQLite error " + std::to_string(code) + ")";
      if ((code & 0xff) == SQLITE_CORRUPT)
        what += "; the file is damaged: restore it from a backup or a 'sparsejit db export', "
                "or start a new database (--db)";
      break;
  }
  return DatabaseError(kind, origin.path, code, message, what);
}

}  // namespace

DatabaseError::DatabaseError(Kind kind, std::filesystem::path path, int sqlite_code,
                             std::string sqlite_message, const std::string& what)
    : std::runtime_error(what),
      kind_(kind),
      path_(std::move(path)),
      sqlite_code_(sqlite_code),
      sqlite_message_(std::move(sqlite_message)) {}

// ---- Statement ----

Statement::Statement(sqlite3_stmt* statement, sqlite3* connection,
                     std::shared_ptr<const ConnectionOrigin> origin)
    : statement_(statement), connection_(connection), origin_(std::move(origin)) {}

Statement::Statement(Statement&& other) noexcept
    : statement_(std::exchange(other.statement_, nullptr)),
      connection_(other.connection_),
      origin_(std::move(other.origin_)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    // sqlite3_finalize returns the error of the last step, which was already reported.
    sqlite3_finalize(statement_);
    statement_ = std::exchange(other.statement_, nullptr);
    connection_ = other.connection_;
    origin_ = std::move(other.origin_);
  }
  return *this;
}

Statement::~Statement() {
  // As in operator=: the only error finalize can return was already thrown by step().
  sqlite3_finalize(statement_);
}

void Statement::check_bind(int rc, int index) const {
  if (rc != SQLITE_OK) {
    throw make_error(connection_, rc, *origin_,
                     "bind parameter " + std::to_string(index) + " of: " + sqlite3_sql(statement_));
  }
}

void Statement::bind_int64(int index, std::int64_t value) {
  check_bind(sqlite3_bind_int64(statement_, index, value), index);
}

void Statement::bind_double(int index, double value) {
  check_bind(sqlite3_bind_double(statement_, index, value), index);
}

void Statement::bind_text(int index, std::string_view value) {
  // A null data pointer would bind NULL; an empty view must bind ''.
  const char* data = value.data() != nullptr ? value.data() : "";
  check_bind(sqlite3_bind_text64(statement_, index, data, value.size(), SQLITE_TRANSIENT, SQLITE_UTF8), index);
}

void Statement::bind_blob(int index, std::span<const std::byte> value) {
  if (value.empty()) {
    check_bind(sqlite3_bind_zeroblob(statement_, index, 0), index);
    return;
  }
  check_bind(sqlite3_bind_blob64(statement_, index, value.data(), value.size(), SQLITE_TRANSIENT), index);
}

void Statement::bind_blob(int index, const std::vector<std::uint8_t>& value) {
  bind_blob(index, std::as_bytes(std::span(value)));
}

void Statement::bind_null(int index) {
  check_bind(sqlite3_bind_null(statement_, index), index);
}

void Statement::bind_double_or_null(int index, const std::optional<double>& value) {
  if (value) bind_double(index, *value);
  else bind_null(index);
}

bool Statement::step() {
  const int rc = sqlite3_step(statement_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  throw make_error(connection_, rc, *origin_, std::string("step: ") + sqlite3_sql(statement_));
}

bool Statement::column_is_null(int column) const {
  return sqlite3_column_type(statement_, column) == SQLITE_NULL;
}

std::int64_t Statement::column_int64(int column) const {
  return sqlite3_column_int64(statement_, column);
}

double Statement::column_double(int column) const {
  return sqlite3_column_double(statement_, column);
}

std::optional<double> Statement::column_optional_double(int column) const {
  if (column_is_null(column)) return std::nullopt;
  return column_double(column);
}

std::string Statement::column_text(int column) const {
  // Per the SQLite docs: fetch the pointer first, then the size.
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(statement_, column));
  const int size = sqlite3_column_bytes(statement_, column);
  return text != nullptr ? std::string(text, static_cast<std::size_t>(size)) : std::string();
}

std::vector<std::uint8_t> Statement::column_blob(int column) const {
  const auto* data = static_cast<const std::uint8_t*>(sqlite3_column_blob(statement_, column));
  const int size = sqlite3_column_bytes(statement_, column);
  return data != nullptr ? std::vector<std::uint8_t>(data, data + size) : std::vector<std::uint8_t>();
}

void Statement::reset() {
  const int rc = sqlite3_reset(statement_);
  sqlite3_clear_bindings(statement_);  // always SQLITE_OK
  if (rc != SQLITE_OK) throw make_error(connection_, rc, *origin_, std::string("reset: ") + sqlite3_sql(statement_));
}

// ---- Connection ----

Connection::Connection(sqlite3* connection, std::shared_ptr<const ConnectionOrigin> origin)
    : connection_(connection), origin_(std::move(origin)) {}

Connection Connection::open(const std::filesystem::path& path, OpenMode mode, int busy_timeout_ms) {
  auto origin = std::make_shared<const ConnectionOrigin>(ConnectionOrigin{path, busy_timeout_ms});
  // Serialized: one connection may be used by several threads at once (the runtime's lookups
  // and its CUBIN store share one), whatever threading mode the library defaults to.
  if (sqlite3_threadsafe() == 0)
    throw DatabaseError(DatabaseError::Kind::other, path, 0, {},
                        path.string() + ": this SQLite library was built without thread support "
                                        "(SQLITE_THREADSAFE=0); sparsejit needs a thread-safe one");
  const int flags = SQLITE_OPEN_FULLMUTEX |
                    (mode == OpenMode::read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  sqlite3* handle = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &handle, flags, nullptr);
  // Even a failed open usually returns a handle, which must be closed.
  Connection connection(handle, origin);
  if (rc != SQLITE_OK) {
    // SQLite says only "unable to open database file"; name the usual causes.
    std::error_code ignored;
    const std::filesystem::path directory = path.parent_path();
    if (mode == OpenMode::read_only && !std::filesystem::exists(path, ignored)) {
      throw DatabaseError(DatabaseError::Kind::io, path, rc, sqlite3_errstr(rc),
                          path.string() + ": cannot open the database read-only: the file does not exist");
    }
    if (mode == OpenMode::read_write_create && !directory.empty() && !std::filesystem::exists(directory, ignored)) {
      throw DatabaseError(DatabaseError::Kind::io, path, rc, sqlite3_errstr(rc),
                          path.string() + ": cannot create the database: directory " + directory.string() +
                              " does not exist");
    }
    throw make_error(handle, rc, *origin, "open");
  }
  if (const int ext = sqlite3_extended_result_codes(handle, 1); ext != SQLITE_OK) {
    throw make_error(handle, ext, *origin, "enable extended result codes");
  }
  if (const int busy = sqlite3_busy_timeout(handle, busy_timeout_ms); busy != SQLITE_OK) {
    throw make_error(handle, busy, *origin, "set busy timeout");
  }
  connection.exec("PRAGMA foreign_keys = ON");
  return connection;
}

Connection::Connection(Connection&& other) noexcept
    : connection_(std::exchange(other.connection_, nullptr)), origin_(std::move(other.origin_)) {}

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    sqlite3_close_v2(connection_);  // see ~Connection
    connection_ = std::exchange(other.connection_, nullptr);
    origin_ = std::move(other.origin_);
  }
  return *this;
}

Connection::~Connection() {
  // close_v2 always succeeds on a valid (or null) handle: with statements still alive it
  // defers the close until the last one is finalized.
  sqlite3_close_v2(connection_);
}

const std::filesystem::path& Connection::path() const { return origin_->path; }

void Connection::exec(std::string_view sql) {
  const std::string text(sql);  // sqlite3_exec needs a NUL-terminated string
  char* message = nullptr;
  const int rc = sqlite3_exec(connection_, text.c_str(), nullptr, nullptr, &message);
  sqlite3_free(message);  // the same text is available from sqlite3_errmsg
  if (rc != SQLITE_OK) throw make_error(connection_, rc, *origin_, "exec: " + text);
}

Statement Connection::prepare(std::string_view sql) const {
  if (sql.size() > static_cast<std::size_t>(INT_MAX)) {
    throw DatabaseError(DatabaseError::Kind::misuse, origin_->path, 0, {},
                        origin_->path.string() + ": SQL text longer than 2 GiB");
  }
  sqlite3_stmt* statement = nullptr;
  const int rc = sqlite3_prepare_v2(connection_, sql.data(), static_cast<int>(sql.size()), &statement, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(statement);  // null after a failed prepare; harmless
    throw make_error(connection_, rc, *origin_, "prepare: " + std::string(sql));
  }
  return Statement(statement, connection_, origin_);
}

void Connection::enable_write_ahead_log() {
  // Leaving rollback-journal mode takes an exclusive lock, and SQLite returns SQLITE_BUSY
  // for it at once instead of calling the busy handler (several processes opening a new
  // file at once hit this). So wait here as the busy timeout would have.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(origin_->busy_timeout_ms);
  std::string mode;
  for (;;) {
    try {
      Statement pragma = prepare("PRAGMA journal_mode = WAL");
      mode = pragma.step() ? pragma.column_text(0) : std::string();
      break;
    } catch (const DatabaseError& error) {
      if (error.kind() != DatabaseError::Kind::locked || std::chrono::steady_clock::now() >= deadline) throw;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (mode != "wal") {
    throw DatabaseError(DatabaseError::Kind::io, origin_->path, 0, {},
                        origin_->path.string() + ": cannot switch to WAL mode (journal mode stays '" + mode +
                            "'); the file system may lack shared-memory support (network file systems); "
                            "put the database on a local disk (--db)");
  }
}

std::int64_t Connection::last_insert_rowid() const { return sqlite3_last_insert_rowid(connection_); }

int Connection::changes() const { return sqlite3_changes(connection_); }

bool Connection::in_transaction() const { return sqlite3_get_autocommit(connection_) == 0; }

// ---- Transaction ----

Transaction::Transaction(Connection& connection) : connection_(connection) {
  connection_.exec("BEGIN IMMEDIATE");
}

Transaction::~Transaction() {
  if (committed_) return;
  try {
    // SQLite may already have rolled back by itself (after some errors); then there is
    // nothing left to undo.
    if (connection_.in_transaction()) connection_.exec("ROLLBACK");
  } catch (const DatabaseError&) {
    // A destructor cannot report it; the transaction stays open and is rolled back when
    // the connection closes, so no partial write becomes visible either way.
  }
}

void Transaction::commit() {
  connection_.exec("COMMIT");
  committed_ = true;
}

// ---- ReadTransaction ----

ReadTransaction::ReadTransaction(const Connection& connection) : connection_(connection) {
  connection_.prepare("BEGIN DEFERRED").step();
}

ReadTransaction::~ReadTransaction() {
  try {
    // Ending a transaction that only read: COMMIT and ROLLBACK are the same here.
    if (connection_.in_transaction()) connection_.prepare("ROLLBACK").step();
  } catch (const DatabaseError&) {
    // As in ~Transaction: nothing was written, and the connection ends it when it closes.
  }
}

}  // namespace sparsejit::db
