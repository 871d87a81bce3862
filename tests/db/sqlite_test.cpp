#include "db/sqlite.h"

#include <gtest/gtest.h>

#include <chrono>

#include "tests/support/test_support.h"

namespace sparsejit::db {
namespace {

using testing::TempDirectory;

class SqliteTest : public ::testing::Test {
 protected:
  TempDirectory directory;
  std::filesystem::path file = directory / "test.db";
};

TEST_F(SqliteTest, BindsAndReadsEveryType) {
  Connection connection = Connection::open(file, OpenMode::read_write_create);
  connection.exec("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, e BLOB, n TEXT)");
  Statement insert = connection.prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  insert.bind_int64(1, std::int64_t{1} << 40);
  insert.bind_double(2, 2.5);
  insert.bind_text(3, std::string_view("text with \0 inside", 18));
  insert.bind_blob(4, std::vector<std::uint8_t>{0, 1, 255});
  insert.bind_blob(5, std::span<const std::byte>());
  insert.bind_null(6);
  EXPECT_FALSE(insert.step());
  EXPECT_EQ(connection.changes(), 1);
  EXPECT_EQ(connection.last_insert_rowid(), 1);

  Statement select = connection.prepare("SELECT i, r, s, b, e, n, typeof(e) FROM t");
  ASSERT_TRUE(select.step());
  EXPECT_EQ(select.column_int64(0), std::int64_t{1} << 40);
  EXPECT_EQ(select.column_double(1), 2.5);
  EXPECT_EQ(select.column_text(2), std::string("text with \0 inside", 18));
  EXPECT_EQ(select.column_blob(3), (std::vector<std::uint8_t>{0, 1, 255}));
  EXPECT_TRUE(select.column_blob(4).empty());
  EXPECT_FALSE(select.column_is_null(4));  // an empty blob is not NULL
  EXPECT_EQ(select.column_text(6), "blob");
  EXPECT_TRUE(select.column_is_null(5));
  EXPECT_EQ(select.column_text(5), "");
  EXPECT_FALSE(select.step());
}

TEST_F(SqliteTest, ResetRunsAStatementAgainWithNewBindings) {
  Connection connection = Connection::open(file, OpenMode::read_write_create);
  connection.exec("CREATE TABLE t (v INTEGER)");
  Statement insert = connection.prepare("INSERT INTO t VALUES (?1)");
  for (std::int64_t value : {10, 20, 30}) {
    insert.bind_int64(1, value);
    insert.step();
    insert.reset();
  }
  Statement sum = connection.prepare("SELECT sum(v), count(*) FROM t");
  ASSERT_TRUE(sum.step());
  EXPECT_EQ(sum.column_int64(0), 60);
  EXPECT_EQ(sum.column_int64(1), 3);
}

TEST_F(SqliteTest, TransactionRollsBackUnlessCommitted) {
  Connection connection = Connection::open(file, OpenMode::read_write_create);
  connection.exec("CREATE TABLE t (v INTEGER)");
  {
    Transaction transaction(connection);
    EXPECT_TRUE(connection.in_transaction());
    connection.exec("INSERT INTO t VALUES (1)");
  }
  EXPECT_FALSE(connection.in_transaction());
  {
    Transaction transaction(connection);
    connection.exec("INSERT INTO t VALUES (2)");
    transaction.commit();
  }
  Statement select = connection.prepare("SELECT group_concat(v) FROM t");
  ASSERT_TRUE(select.step());
  EXPECT_EQ(select.column_text(0), "2");
}

// In WAL mode a read transaction keeps seeing the rows of its first read while another
// connection commits; after it ends, the new rows are visible.
TEST_F(SqliteTest, ReadTransactionSeesOneStateOfTheFile) {
  Connection writer = Connection::open(file, OpenMode::read_write_create);
  writer.enable_write_ahead_log();
  writer.exec("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1)");
  const Connection reader = Connection::open(file, OpenMode::read_only);
  const auto count = [&reader] {
    Statement select = reader.prepare("SELECT count(*) FROM t");
    select.step();
    return select.column_int64(0);
  };
  {
    ReadTransaction snapshot(reader);
    EXPECT_TRUE(reader.in_transaction());
    EXPECT_EQ(count(), 1);
    writer.exec("INSERT INTO t VALUES (2)");
    EXPECT_EQ(count(), 1) << "a committed write must not show inside the read transaction";
  }
  EXPECT_FALSE(reader.in_transaction());
  EXPECT_EQ(count(), 2);
}

TEST_F(SqliteTest, ErrorsCarryKindPathCodeAndMessage) {
  Connection connection = Connection::open(file, OpenMode::read_write_create);
  connection.exec("CREATE TABLE t (v INTEGER UNIQUE)");
  connection.exec("INSERT INTO t VALUES (1)");
  try {
    connection.exec("INSERT INTO t VALUES (1)");
    FAIL() << "a UNIQUE violation must throw";
  } catch (const DatabaseError& error) {
    EXPECT_EQ(error.kind(), DatabaseError::Kind::constraint);
    EXPECT_EQ(error.path(), file);
    EXPECT_EQ(error.sqlite_code(), 2067);  // SQLITE_CONSTRAINT_UNIQUE
    EXPECT_NE(error.sqlite_message().find("UNIQUE"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find(file.string()), std::string::npos);
  }
  try {
    connection.prepare("SELEC nonsense");
    FAIL() << "bad SQL must throw";
  } catch (const DatabaseError& error) {
    EXPECT_EQ(error.kind(), DatabaseError::Kind::other);
    EXPECT_NE(std::string(error.what()).find("SELEC nonsense"), std::string::npos);
  }
  Statement insert = connection.prepare("INSERT INTO t VALUES (?1)");
  try {
    insert.bind_int64(2, 0);
    FAIL() << "binding a parameter that does not exist must throw";
  } catch (const DatabaseError& error) {
    EXPECT_EQ(error.kind(), DatabaseError::Kind::misuse);
  }
}

TEST_F(SqliteTest, ReadOnlyOpenOfAMissingFileSaysSo) {
  try {
    Connection::open(file, OpenMode::read_only);
    FAIL() << "a read-only open of a missing file must throw";
  } catch (const DatabaseError& error) {
    EXPECT_EQ(error.kind(), DatabaseError::Kind::io);
    EXPECT_NE(std::string(error.what()).find(file.string()), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("does not exist"), std::string::npos);
  }
  EXPECT_FALSE(std::filesystem::exists(file));
}

TEST_F(SqliteTest, WriterGivesUpWithLockedAfterTheBusyTimeout) {
  Connection holder = Connection::open(file, OpenMode::read_write_create);
  holder.enable_write_ahead_log();
  holder.exec("CREATE TABLE t (v INTEGER)");
  Transaction held(holder);

  Connection writer = Connection::open(file, OpenMode::read_write_create, /*busy_timeout_ms=*/100);
  const auto start = std::chrono::steady_clock::now();
  try {
    Transaction blocked(writer);
    FAIL() << "BEGIN IMMEDIATE must fail while another connection holds the write lock";
  } catch (const DatabaseError& error) {
    EXPECT_EQ(error.kind(), DatabaseError::Kind::locked);
    EXPECT_NE(std::string(error.what()).find("another process holds it"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("100 ms"), std::string::npos);
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(90));
  EXPECT_FALSE(writer.in_transaction());
}

}  // namespace
}  // namespace sparsejit::db
