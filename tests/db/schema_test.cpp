#include "db/schema.h"

#include <gtest/gtest.h>

#include <random>

#include "db/database.h"
#include "tests/support/test_support.h"

namespace sparsejit::db {
namespace {

using testing::read_bytes;
using testing::TempDirectory;
using testing::write_bytes;

const std::string kCubinKey(64, 'a');

// A CUBIN row as schemas 1 and 2 stored it (no source key).
void insert_old_cubin(Connection& connection) {
  connection.exec(R"sql(
    INSERT INTO cubins (key, family, target, nvrtc_version, specialization, lowered_names_json, binary,
                        compile_ms, created_at)
    VALUES (')sql" + kCubinKey + R"sql(', 'permute', 'sm_90a', '13.0', 'permute<bf16,128>', '{"k":"_Z1k"}',
            x'00ff10', 42.5, '2025-01-01T00:00:00.000Z');
  )sql");
}

class SchemaTest : public ::testing::Test {
 protected:
  // Expects Database::open(file) to throw `kind` and returns the message.
  std::string open_error(DatabaseError::Kind kind) {
    try {
      Database::open(file);
    } catch (const DatabaseError& error) {
      EXPECT_EQ(error.kind(), kind) << error.what();
      EXPECT_EQ(error.path(), file);
      return error.what();
    }
    ADD_FAILURE() << "Database::open must refuse " << file;
    return {};
  }

  // Only `file` is in the directory: no -wal, -shm or -journal was left behind.
  void expect_only_the_file() {
    std::vector<std::filesystem::path> entries;
    for (const auto& entry : std::filesystem::directory_iterator(directory.path())) entries.push_back(entry.path());
    EXPECT_EQ(entries, std::vector<std::filesystem::path>{file});
  }

  TempDirectory directory;
  std::filesystem::path file = directory / "tuning.db";
};

TEST_F(SchemaTest, NewDatabaseCarriesMarkerAndCurrentVersion) {
  EXPECT_EQ(Database::open(file).schema_version(), kCurrentSchemaVersion);
  Connection connection = Connection::open(file, OpenMode::read_only);
  const SchemaState state = inspect_schema(connection);
  EXPECT_EQ(state.content, DatabaseContent::sparsejit);
  EXPECT_EQ(state.version, kCurrentSchemaVersion);
  Statement journal = connection.prepare("PRAGMA journal_mode");
  ASSERT_TRUE(journal.step());
  EXPECT_EQ(journal.column_text(0), "wal");
}

TEST_F(SchemaTest, MigratesAVersion1DatabaseKeepingItsData) {
  {
    Connection connection = Connection::open(file, OpenMode::read_write_create);
    ASSERT_EQ(migrate(connection, 1), 1);
    EXPECT_EQ(inspect_schema(connection).version, 1);
    Statement tables = connection.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'trials'");
    ASSERT_TRUE(tables.step());
    EXPECT_EQ(tables.column_int64(0), 0) << "v1 has no trials table";
    connection.exec(R"sql(
      INSERT INTO gpus (fingerprint, name, cc_major, cc_minor, sm_count, memory_bytes, driver_version, uuid,
                        sm_clock_khz, memory_clock_khz, first_seen, last_seen)
      VALUES ('NVIDIA H100|cc9.0|132 SMs|85029158912 bytes', 'NVIDIA H100', 9, 0, 132, 85029158912, '580.65',
              'GPU-1', 1980000, 2619000, '2025-01-01T00:00:00.000Z', '2025-01-02T00:00:00.000Z');
    )sql");
    insert_old_cubin(connection);
  }

  Database database = Database::open(file);
  EXPECT_EQ(database.schema_version(), kCurrentSchemaVersion);
  EXPECT_EQ(database.stats().trials, 0) << "v2 tables exist";

  const std::vector<StoredGpu> gpus = database.list_gpus();
  ASSERT_EQ(gpus.size(), 1u);
  EXPECT_EQ(gpus[0].gpu.name, "NVIDIA H100");
  EXPECT_EQ(gpus[0].gpu.sm_count, 132);
  EXPECT_EQ(gpus[0].gpu.memory_bytes, 85029158912);
  EXPECT_EQ(gpus[0].first_seen, "2025-01-01T00:00:00.000Z");

  const std::optional<CubinRecord> cubin = database.find_cubin(kCubinKey);
  ASSERT_TRUE(cubin.has_value());
  EXPECT_EQ(cubin->specialization, "permute<bf16,128>");
  EXPECT_EQ(cubin->binary, (std::vector<std::uint8_t>{0x00, 0xff, 0x10}));
  EXPECT_EQ(cubin->compile_ms, 42.5);
}

// v2 -> v3: cubins gain source_key (NULL in the old rows, which still load by their key) and
// the index find_cubin_by_source uses.
TEST_F(SchemaTest, MigratesAVersion2DatabaseItsCubinsWithoutSourceKeys) {
  {
    Connection connection = Connection::open(file, OpenMode::read_write_create);
    ASSERT_EQ(migrate(connection, 2), 2);
    Statement columns = connection.prepare("SELECT count(*) FROM pragma_table_info('cubins') WHERE name = 'source_key'");
    ASSERT_TRUE(columns.step());
    EXPECT_EQ(columns.column_int64(0), 0) << "v2 has no source keys";
    insert_old_cubin(connection);
  }

  Database database = Database::open(file);
  EXPECT_EQ(database.schema_version(), 3);
  const std::optional<CubinRecord> cubin = database.find_cubin(kCubinKey);
  ASSERT_TRUE(cubin.has_value()) << "the old row still loads by its key";
  EXPECT_EQ(cubin->source_key, "");
  EXPECT_EQ(cubin->binary, (std::vector<std::uint8_t>{0x00, 0xff, 0x10}));
  EXPECT_EQ(cubin->specialization, "permute<bf16,128>");

  const std::string source(64, 'b');
  EXPECT_FALSE(database.find_cubin_by_source(source).has_value());
  EXPECT_TRUE(database.record_cubin_source_key(kCubinKey, source));
  ASSERT_TRUE(database.find_cubin_by_source(source).has_value());
  EXPECT_EQ(database.find_cubin_by_source(source)->key, kCubinKey);

  Connection connection = Connection::open(file, OpenMode::read_only);
  Statement index = connection.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'cubins_by_source'");
  ASSERT_TRUE(index.step());
  EXPECT_EQ(index.column_int64(0), 1);
}

TEST_F(SchemaTest, MigrateIsIdempotentAndRejectsUnknownTargets) {
  Connection connection = Connection::open(file, OpenMode::read_write_create);
  EXPECT_EQ(migrate(connection), kCurrentSchemaVersion);
  EXPECT_EQ(migrate(connection), kCurrentSchemaVersion);
  EXPECT_EQ(migrate(connection, 1), kCurrentSchemaVersion) << "never migrates down";
  for (int target : {0, kCurrentSchemaVersion + 1}) {
    try {
      migrate(connection, target);
      ADD_FAILURE() << "target " << target << " must be refused";
    } catch (const DatabaseError& error) {
      EXPECT_EQ(error.kind(), DatabaseError::Kind::misuse);
    }
  }
}

TEST_F(SchemaTest, RefusesANewerSchemaWithoutTouchingTheFile) {
  { Database::open(file); }
  {
    Connection connection = Connection::open(file, OpenMode::read_write_create);
    connection.exec("UPDATE meta SET value = '7' WHERE key = 'schema_version'");
  }
  const std::vector<char> before = read_bytes(file);

  const std::string message = open_error(DatabaseError::Kind::schema_too_new);
  EXPECT_NE(message.find(file.string()), std::string::npos) << message;
  EXPECT_NE(message.find("schema version 7 is newer than this sparsejit understands (" +
                         std::to_string(kCurrentSchemaVersion) + ")"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("--db"), std::string::npos) << message;

  EXPECT_EQ(read_bytes(file), before);
  expect_only_the_file();
}

TEST_F(SchemaTest, RefusesGarbageBytesWithoutTouchingTheFile) {
  std::vector<char> garbage(64 * 1024);
  std::mt19937 random(1234);
  for (char& byte : garbage) byte = static_cast<char>(random());
  write_bytes(file, garbage);

  const std::string message = open_error(DatabaseError::Kind::not_a_database);
  EXPECT_NE(message.find(file.string()), std::string::npos) << message;

  EXPECT_EQ(read_bytes(file), garbage);
  expect_only_the_file();
}

TEST_F(SchemaTest, RefusesAForeignSqliteDatabaseWithoutTouchingIt) {
  {
    Connection connection = Connection::open(file, OpenMode::read_write_create);
    // A table named meta of another shape must not confuse the check.
    connection.exec("CREATE TABLE meta (name TEXT, data BLOB); CREATE TABLE people (name TEXT);"
                    "INSERT INTO people VALUES ('ada')");
  }
  const std::vector<char> before = read_bytes(file);

  const std::string message = open_error(DatabaseError::Kind::not_a_database);
  EXPECT_NE(message.find("not a sparsejit one"), std::string::npos) << message;

  EXPECT_EQ(read_bytes(file), before);
  expect_only_the_file();
}

TEST_F(SchemaTest, RefusesASqliteDatabaseOfAnotherApplicationWithOurMetaShape) {
  {
    Connection connection = Connection::open(file, OpenMode::read_write_create);
    connection.exec("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
                    "INSERT INTO meta VALUES ('application', 'someone-else'), ('schema_version', '1')");
  }
  const std::vector<char> before = read_bytes(file);
  open_error(DatabaseError::Kind::not_a_database);
  EXPECT_EQ(read_bytes(file), before);
}

TEST_F(SchemaTest, AZeroLengthFileBecomesANewDatabase) {
  write_bytes(file, {});
  EXPECT_EQ(Database::open(file).schema_version(), kCurrentSchemaVersion);
  EXPECT_GT(std::filesystem::file_size(file), 0u);
}

}  // namespace
}  // namespace sparsejit::db
