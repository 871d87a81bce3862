// KernelProvider without a GPU: NVRTC on a miss, the database's CUBIN store on a hit, within
// a process and across processes, and a miss for any change to what the key covers.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "db/database.h"
#include "jit/nvrtc_compiler.h"
#include "jit/target.h"
#include "jit/kernel_provider.h"
#include "runtime/database_cubin_store.h"
#include "templates/permute/permute_family.h"
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

}  // namespace
}  // namespace sparsejit::runtime
