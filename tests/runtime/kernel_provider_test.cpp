// KernelProvider without a GPU: NVRTC on a miss, the database's CUBIN store on a hit, within
// a process and across processes, and a miss for any change to what the key covers; a stored
// CUBIN found by its source key without opening NVRTC (in a child process: other tests of
// this program open it), the newest of several NVRTC builds, and a CUBIN stored before there
// were source keys found by its key and then given its source key. On a GPU: a stored CUBIN
// the driver refuses is compiled again.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "db/database.h"
#include "db/schema.h"
#include "db/sqlite.h"
#include "jit/error.h"
#include "jit/nvrtc_api.h"
#include "jit/nvrtc_compiler.h"
#include "jit/sha256.h"
#include "jit/target.h"
#include "jit/kernel_provider.h"
#include "runtime/database_cubin_store.h"
#include "templates/permute/permute_family.h"
#include "tests/support/gpu_test.h"
#include "tests/support/test_support.h"

namespace sparsejit::runtime {
namespace {

using templates::PermuteConfig;
using templates::PermuteDirection;
using templates::PermuteFamily;

// A cheap specialization (the smallest rows and CTAs of the space).
jit::KernelSpec small_specialization(const char* arch = "sm_90",
                                    PermuteConfig config = {64, 16, 128, 1, PermuteDirection::gather}) {
  return PermuteFamily::render(config, jit::Target::parse(arch));
}

bool is_elf(const std::vector<std::uint8_t>& bytes) {
  return bytes.size() > 4 && bytes[0] == 0x7f && bytes[1] == 'E' && bytes[2] == 'L' && bytes[3] == 'F';
}

// First call: a miss, compiled by NVRTC once and stored with its metadata. Second call: a
// hit that returns the same CUBIN and lowered names without invoking NVRTC.
TEST(KernelProvider, CompilesOnceThenServesFromTheDatabase) {
  testing::TempDirectory directory;
  db::Database database = db::Database::open(directory / "k.db");
  DatabaseCubinStore store(database);
  jit::KernelProvider provider(&store);
  const jit::KernelSpec specialization = small_specialization();
  EXPECT_FALSE(provider.stored(specialization));

  const std::uint64_t before = jit::nvrtc_compile_count();
  const jit::ProvidedBinary first = provider.binary(specialization);
  EXPECT_EQ(jit::nvrtc_compile_count(), before + 1);
  EXPECT_EQ(first.source, jit::BinarySource::nvrtc);
  EXPECT_EQ(first.key, specialization.request.cache_key());
  EXPECT_TRUE(is_elf(first.binary.cubin));
  ASSERT_EQ(first.binary.lowered_names.count(specialization.name_expression), 1u);
  EXPECT_TRUE(provider.stored(specialization));
  EXPECT_EQ(provider.compiled(), 1u);
  EXPECT_EQ(provider.store_hits(), 0u);

  const jit::ProvidedBinary second = provider.binary(specialization);
  EXPECT_EQ(jit::nvrtc_compile_count(), before + 1) << "a stored CUBIN must not be compiled again";
  EXPECT_EQ(second.source, jit::BinarySource::store);
  EXPECT_EQ(second.key, first.key);
  EXPECT_EQ(second.binary.cubin, first.binary.cubin);
  EXPECT_EQ(second.binary.lowered_names, first.binary.lowered_names);
  EXPECT_EQ(provider.compiled(), 1u);
  EXPECT_EQ(provider.store_hits(), 1u);

  // What the store holds about it.
  const std::vector<db::CubinSummary> listed = database.list_cubins();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].key, first.key);
  EXPECT_EQ(listed[0].source_key, specialization.request.source_key());
  EXPECT_EQ(listed[0].family, "permute_tokens");
  EXPECT_EQ(listed[0].target, "sm_90");
  EXPECT_EQ(listed[0].specialization, specialization.label);
  EXPECT_EQ(listed[0].nvrtc_version, jit::nvrtc_version().to_string());
  EXPECT_EQ(listed[0].binary_bytes, static_cast<std::int64_t>(first.binary.cubin.size()));
}

// A later process (a new Database object and a new provider on the same file) finds the
// CUBIN stored by an earlier one and compiles nothing.
TEST(KernelProvider, ALaterProcessReusesTheStoredCubin) {
  testing::TempDirectory directory;
  const jit::KernelSpec specialization = small_specialization("sm_80");
  std::vector<std::uint8_t> compiled;
  {
    db::Database database = db::Database::open(directory / "k.db");
    DatabaseCubinStore store(database);
    jit::KernelProvider provider(&store);
    compiled = provider.binary(specialization).binary.cubin;
  }
  db::Database database = db::Database::open(directory / "k.db");
  DatabaseCubinStore store(database);
  jit::KernelProvider provider(&store);
  EXPECT_TRUE(provider.stored(specialization));
  const std::uint64_t before = jit::nvrtc_compile_count();
  const jit::ProvidedBinary reused = provider.binary(specialization);
  EXPECT_EQ(jit::nvrtc_compile_count(), before);
  EXPECT_EQ(reused.source, jit::BinarySource::store);
  EXPECT_EQ(reused.binary.cubin, compiled);
  EXPECT_EQ(provider.compiled(), 0u);
  EXPECT_EQ(provider.store_hits(), 1u);
}

// One byte of one header, one extra option, or the arch-specific target instead of the plain
// one: each is a different key, so a miss that compiles again, then is stored too. The
// original stays a hit.
TEST(KernelProvider, AnyChangeCoveredByTheKeyIsAMiss) {
  testing::TempDirectory directory;
  db::Database database = db::Database::open(directory / "k.db");
  DatabaseCubinStore store(database);
  jit::KernelProvider provider(&store);
  const jit::KernelSpec original = small_specialization("sm_90");
  provider.binary(original);

  jit::KernelSpec header = original;
  ASSERT_EQ(header.request.headers[1].name, "permute/permute_params.h");
  std::string& content = header.request.headers[1].content;
  const std::size_t comment = content.find("Q, K and V");  // in a comment: still compiles
  ASSERT_NE(comment, std::string::npos);
  content[comment] = 'q';
  jit::KernelSpec option = original;
  option.request.options.push_back("-DSPARSEJIT_TEST_UNUSED_MACRO=1");
  const jit::KernelSpec arch_specific = small_specialization("sm_90a");

  int changes = 0;
  for (const jit::KernelSpec* changed : {&std::as_const(header), &std::as_const(option), &arch_specific}) {
    SCOPED_TRACE("change " + std::to_string(changes++));
    EXPECT_NE(changed->request.cache_key(), original.request.cache_key());
    EXPECT_NE(changed->request.source_key(), original.request.source_key());
    EXPECT_FALSE(provider.stored(*changed));
    const std::uint64_t before = jit::nvrtc_compile_count();
    const jit::ProvidedBinary provided = provider.binary(*changed);
    EXPECT_EQ(provided.source, jit::BinarySource::nvrtc);
    EXPECT_EQ(jit::nvrtc_compile_count(), before + 1);
    EXPECT_TRUE(provider.stored(*changed));
  }
  EXPECT_EQ(provider.binary(original).source, jit::BinarySource::store);
  EXPECT_EQ(database.list_cubins().size(), 4u);
  EXPECT_EQ(provider.compiled(), 4u);
  EXPECT_EQ(provider.store_hits(), 1u);
}

// Without a database nothing is stored and every call compiles.
TEST(KernelProvider, WithoutADatabaseEveryCallCompiles) {
  jit::KernelProvider provider(nullptr);
  const jit::KernelSpec specialization = small_specialization();
  const std::uint64_t before = jit::nvrtc_compile_count();
  for (int call = 1; call <= 2; ++call) {
    const jit::ProvidedBinary provided = provider.binary(specialization);
    EXPECT_EQ(provided.source, jit::BinarySource::nvrtc);
    EXPECT_TRUE(is_elf(provided.binary.cubin));
    EXPECT_EQ(jit::nvrtc_compile_count(), before + call);
  }
  EXPECT_FALSE(provider.stored(specialization));
  EXPECT_EQ(provider.compiled(), 2u);
  EXPECT_EQ(provider.store_hits(), 0u);
}

// Four threads asking for four different specializations at once: all compile (in
// parallel, outside the database lock) and all are stored through the one connection.
TEST(KernelProvider, ConcurrentCallsOnDistinctSpecializationsAllStore) {
  testing::TempDirectory directory;
  db::Database database = db::Database::open(directory / "k.db");
  DatabaseCubinStore store(database);
  jit::KernelProvider provider(&store);
  const std::vector<jit::KernelSpec> specializations = {
      small_specialization("sm_90", {64, 16, 128, 1, PermuteDirection::gather}),
      small_specialization("sm_90", {64, 16, 128, 1, PermuteDirection::scatter}),
      small_specialization("sm_90", {96, 8, 256, 2, PermuteDirection::gather}),
      small_specialization("sm_80", {128, 4, 128, 4, PermuteDirection::scatter})};
  std::vector<jit::ProvidedBinary> results(specializations.size());
  std::vector<std::string> errors(specializations.size());
  const std::uint64_t before = jit::nvrtc_compile_count();
  {
    std::vector<std::jthread> threads;
    for (std::size_t i = 0; i < specializations.size(); ++i)
      threads.emplace_back([&, i] {
        try {
          results[i] = provider.binary(specializations[i]);
        } catch (const std::exception& error) {
          errors[i] = error.what();
        }
      });
  }
  std::set<std::string> keys;
  for (std::size_t i = 0; i < specializations.size(); ++i) {
    SCOPED_TRACE(specializations[i].label);
    EXPECT_EQ(errors[i], "");
    EXPECT_EQ(results[i].source, jit::BinarySource::nvrtc);
    EXPECT_TRUE(is_elf(results[i].binary.cubin));
    EXPECT_TRUE(provider.stored(specializations[i]));
    keys.insert(results[i].key);
  }
  EXPECT_EQ(keys.size(), specializations.size());
  EXPECT_EQ(jit::nvrtc_compile_count(), before + specializations.size());
  EXPECT_EQ(provider.compiled(), specializations.size());
  EXPECT_EQ(database.list_cubins().size(), specializations.size());
}

// A stored row as a database records it, with a made-up key and binary: the provider must
// hand it over as stored, whatever it holds.
db::CubinRecord stored_record(const jit::KernelSpec& spec, const std::string& tag, const std::string& created_at,
                              bool with_source_key = true) {
  db::CubinRecord record;
  record.key = jit::sha256_hex("key of " + tag);
  record.source_key = with_source_key ? spec.request.source_key() : "";
  record.family = spec.family;
  record.target = spec.request.target.name();
  record.nvrtc_version = "12.8 (" + tag + ")";
  record.specialization = spec.label;
  record.lowered_names_json = R"({")" + spec.name_expression + R"(": "_Z6lowered"})";
  record.binary = std::vector<std::uint8_t>(tag.begin(), tag.end());
  record.compile_ms = 12.5;
  record.created_at = created_at;
  return record;
}

// binary(spec) comes from the store, as `key` with `cubin`, without invoking NVRTC; returns it
// for the caller's further checks.
jit::ProvidedBinary expect_served_from_store(jit::KernelProvider& provider, const jit::KernelSpec& spec,
                                             const std::string& key, const std::vector<std::uint8_t>& cubin) {
  const std::uint64_t before = jit::nvrtc_compile_count();
  jit::ProvidedBinary provided = provider.binary(spec);
  EXPECT_EQ(provided.source, jit::BinarySource::store);
  EXPECT_EQ(provided.key, key);
  EXPECT_EQ(provided.binary.cubin, cubin);
  EXPECT_EQ(jit::nvrtc_compile_count(), before);
  return provided;
}

// In the child: fails it with `what` on stderr unless `condition`.
void require(bool condition, const std::string& what) {
  if (condition) return;
  std::fprintf(stderr, "child check failed: %s\n", what.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

// The warm start of issue 5: a process whose CUBIN is in the database gets it from
// binary(), stored_key() and the store's lookup without opening NVRTC. Runs in a fresh
// child (the test program re-executed for this test alone), where NVRTC cannot have been
// opened by another test; $SPARSEJIT_NVRTC_LIBRARY names no file there, so a regression to
// the cache key (which needs NVRTC's version) throws as well as opening nothing.
TEST(KernelProviderWithoutNvrtc, FindsAStoredCubinBySourceKeyWithoutOpeningNvrtc) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  testing::TempDirectory directory;
  EXPECT_EXIT(
      {
        ::setenv(jit::kNvrtcLibraryEnvironment, "/nonexistent/libnvrtc.so", 1);
        require(!jit::nvrtc_loaded(), "a fresh process has not opened NVRTC");
        // Target::parse opens NVRTC (its architectures); the runtime uses this instead.
        const jit::KernelSpec spec = PermuteFamily::render({64, 16, 128, 1, PermuteDirection::gather},
                                                           jit::Target::for_compute_capability(9, 0));
        db::Database database = db::Database::open(directory / "warm.db");
        const db::CubinRecord record = stored_record(spec, "a build of NVRTC 12.8", "2025-02-01T00:00:00.000Z");
        database.put_cubin(record);
        DatabaseCubinStore store(database);
        jit::KernelProvider provider(&store);
        require(provider.stored_key(spec) == record.key, "stored_key() gives the stored CUBIN's key");
        jit::ProvidedBinary provided;
        try {
          provided = provider.binary(spec);
        } catch (const std::exception& error) {
          require(false, std::string("binary() threw: ") + error.what());
        }
        require(provided.source == jit::BinarySource::store, "from the store");
        require(provided.key == record.key, "under the stored key, " + provided.key);
        require(provided.binary.cubin == record.binary, "the stored bytes");
        require(provided.binary.lowered_names.at(spec.name_expression) == "_Z6lowered", "the stored lowered name");
        require(provider.store_hits() == 1 && provider.compiled() == 0, "one hit, no compile");
        require(jit::nvrtc_compile_count() == 0, "nothing compiled");
        require(!jit::nvrtc_loaded(), "NVRTC must not be opened to find a stored CUBIN");
        std::fprintf(stderr, "child: found without NVRTC\n");
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "child: found without NVRTC");
}

// Several NVRTC builds stored the same source: the newest row wins, then the greater key.
// Rows of other sources are not taken.
TEST(KernelProvider, OfSeveralBuildsOfOneSourceTakesTheNewest) {
  testing::TempDirectory directory;
  db::Database database = db::Database::open(directory / "k.db");
  const jit::KernelSpec spec = small_specialization("sm_90");
  const jit::KernelSpec other = small_specialization("sm_90", {64, 16, 128, 1, PermuteDirection::scatter});
  database.put_cubin(stored_record(spec, "older", "2025-01-01T00:00:00.000Z"));
  const db::CubinRecord newest = stored_record(spec, "newest", "2025-03-01T00:00:00.000Z");
  database.put_cubin(newest);
  database.put_cubin(stored_record(spec, "middle", "2025-02-01T00:00:00.000Z"));
  database.put_cubin(stored_record(other, "another source, newer still", "2025-04-01T00:00:00.000Z"));
  DatabaseCubinStore store(database);
  jit::KernelProvider provider(&store);
  expect_served_from_store(provider, spec, newest.key, newest.binary);

  const db::CubinRecord tie_a = stored_record(spec, "tie a", "2025-05-01T00:00:00.000Z");
  const db::CubinRecord tie_b = stored_record(spec, "tie b", "2025-05-01T00:00:00.000Z");
  database.put_cubin(tie_a);
  database.put_cubin(tie_b);
  EXPECT_EQ(provider.binary(spec).key, std::max(tie_a.key, tie_b.key)) << "a tie goes to the greater key";
}

// A CUBIN stored before the database had source keys (schema v2), under the key of this
// NVRTC: found by its key (NVRTC opened for the version), not compiled, and given its source
// key on the way, so the next lookup needs no NVRTC.
TEST(KernelProvider, ACubinWithoutSourceKeyIsFoundByItsKeyAndLearnsIt) {
  testing::TempDirectory directory;
  db::Database database = db::Database::open(directory / "k.db");
  const jit::KernelSpec spec = small_specialization("sm_90");
  db::CubinRecord record = stored_record(spec, "stored by schema v2", "2025-01-01T00:00:00.000Z", false);
  record.key = spec.request.cache_key();
  database.put_cubin(record);
  ASSERT_FALSE(database.find_cubin_by_source(spec.request.source_key()));

  DatabaseCubinStore store(database);
  jit::KernelProvider provider(&store);
  expect_served_from_store(provider, spec, record.key, record.binary);
  const std::optional<db::CubinRecord> learned = database.find_cubin_by_source(spec.request.source_key());
  ASSERT_TRUE(learned.has_value()) << "the row learned its source key";
  EXPECT_EQ(learned->key, record.key);
  EXPECT_EQ(learned->binary, record.binary);
}

// A database of schema v2 with a CUBIN compiled here (by this NVRTC) opens, migrates to the
// current schema, and its CUBIN still loads without a compile; from then on by source key.
TEST(KernelProvider, ACubinOfASchemaV2DatabaseStillLoadsAfterTheMigration) {
  testing::TempDirectory directory;
  const std::filesystem::path file = directory / "v2.db";
  const jit::KernelSpec spec = small_specialization("sm_80");
  const jit::CompiledBinary compiled = jit::compile(spec.request);
  {
    db::Connection connection = db::Connection::open(file, db::OpenMode::read_write_create);
    ASSERT_EQ(db::migrate(connection, 2), 2);
    db::Statement insert = connection.prepare(R"sql(
      INSERT INTO cubins (key, family, target, nvrtc_version, specialization, lowered_names_json, binary,
                          compile_ms, created_at)
      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 10, '2025-01-01T00:00:00.000Z'))sql");
    insert.bind_text(1, spec.request.cache_key());
    insert.bind_text(2, spec.family);
    insert.bind_text(3, spec.request.target.name());
    insert.bind_text(4, jit::nvrtc_version().to_string());
    insert.bind_text(5, spec.label);
    insert.bind_text(6, nlohmann::json(compiled.lowered_names).dump());
    insert.bind_blob(7, compiled.cubin);
    insert.step();
  }
  db::Database database = db::Database::open(file);
  EXPECT_EQ(database.schema_version(), db::kCurrentSchemaVersion);
  DatabaseCubinStore store(database);
  jit::KernelProvider provider(&store);
  EXPECT_EQ(provider.stored_key(spec), spec.request.cache_key());
  const jit::ProvidedBinary provided =
      expect_served_from_store(provider, spec, spec.request.cache_key(), compiled.cubin);
  EXPECT_EQ(provided.binary.lowered_names, compiled.lowered_names);
  ASSERT_TRUE(database.find_cubin_by_source(spec.request.source_key()).has_value());
}

class KernelProviderGpuTest : public testing::GpuTest {
 protected:
  jit::KernelSpec local_specialization(PermuteDirection direction = PermuteDirection::gather) const {
    const jit::DeviceInfo device = jit::query_device(context().ordinal());
    return PermuteFamily::render({64, 16, 128, 1, direction},
                                 jit::Target::for_compute_capability(device.cc_major, device.cc_minor));
  }
};

// A stored CUBIN the driver refuses (here: not a CUBIN at all; in the field, one of an NVRTC
// newer than the driver) is compiled again with this NVRTC, stored (now the newest of its
// source) and loaded.
TEST_F(KernelProviderGpuTest, AStoredCubinTheDriverRefusesIsCompiledAgain) {
  testing::TempDirectory directory;
  db::Database database = db::Database::open(directory / "k.db");
  const jit::KernelSpec spec = local_specialization();
  database.put_cubin(stored_record(spec, "not a CUBIN", "2025-01-01T00:00:00.000Z"));
  DatabaseCubinStore store(database);
  jit::KernelProvider provider(&store);
  const std::uint64_t before = jit::nvrtc_compile_count();
  const jit::Kernel kernel = provider.kernel(context(), spec);
  EXPECT_EQ(jit::nvrtc_compile_count(), before + 1);
  EXPECT_EQ(provider.compiled(), 1u);
  EXPECT_EQ(provider.store_hits(), 0u);
  const std::optional<db::CubinRecord> now = database.find_cubin_by_source(spec.request.source_key());
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(now->key, spec.request.cache_key()) << "the compiled CUBIN is the one found next time";
}

// When compiling again fails too, the error says both.
TEST_F(KernelProviderGpuTest, WhenCompilingAgainFailsTooTheErrorSaysBoth) {
  testing::TempDirectory directory;
  db::Database database = db::Database::open(directory / "k.db");
  jit::KernelSpec spec = local_specialization(PermuteDirection::scatter);
  spec.request.source += "\n__global__ void broken() { undeclared_identifier_xyz = 1; }\n";
  database.put_cubin(stored_record(spec, "not a CUBIN either", "2025-01-01T00:00:00.000Z"));
  DatabaseCubinStore store(database);
  jit::KernelProvider provider(&store);
  try {
    provider.kernel(context(), spec);
    FAIL() << "neither the stored CUBIN nor a compile can give this kernel";
  } catch (const jit::CudaError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("the driver refused the stored CUBIN of " + spec.label), std::string::npos) << what;
    EXPECT_NE(what.find("compiling it again with this process's NVRTC failed too"), std::string::npos) << what;
    EXPECT_NE(what.find("undeclared_identifier_xyz"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace sparsejit::runtime
