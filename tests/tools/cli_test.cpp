// The sparsejit CLI, run as a child process: help and usage errors, info, precompile, db,
// bench, order, and where the database lives. Every child gets HOME and XDG_CACHE_HOME inside a
// temporary directory and no SPARSEJIT_DB unless a test sets one, so the user's real cache
// is never touched. Tests that behave differently with a GPU assert both branches.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "db/database.h"
#include "db/schema.h"
#include "db/sqlite.h"
#include "jit/device.h"
#include "jit/driver_api.h"
#include "jit/nvrtc_compiler.h"
#include "jit/target.h"
#include "runtime/token_order.h"
#include "templates/permute/permute_family.h"
#include "templates/registry.h"
#include "tests/support/gpu_test.h"
#include "tests/support/npy_writer.h"
#include "tests/support/test_support.h"
#include "tests/tools/cli_fixture.h"
#include "tests/tools/cli_runner.h"

namespace sparsejit::testing {
namespace {

bool gpu_present(std::string* why = nullptr) { return jit::driver_available(why); }

// The target of the local GPU 0 (only called when there is one).
std::string local_target() {
  const jit::DeviceInfo device = jit::query_device(0);
  return jit::Target::for_compute_capability(device.cc_major, device.cc_minor).name();
}

// ---------------------------------------------------------------------------------- help

struct HelpCase {
  std::vector<std::string> command;       // the subcommand path, e.g. {"db", "cubins"}
  std::vector<std::string> must_mention;  // its options and subcommands
};

std::string joined(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& word : words) out += (out.empty() ? "" : " ") + word;
  return out;
}

void PrintTo(const HelpCase& help, std::ostream* os) { *os << joined({"sparsejit", joined(help.command), "--help"}); }

class HelpTest : public CliTest, public ::testing::WithParamInterface<HelpCase> {};

TEST_P(HelpTest, ExitsZeroAndListsTheOptions) {
  std::vector<std::string> args = GetParam().command;
  args.push_back("--help");
  const CliResult result = run(args);
  ASSERT_EQ(result.exit_code, 0) << result.describe();
  EXPECT_TRUE(result.err.empty()) << result.describe();
  const std::string usage =
      "Usage: sparsejit" + (GetParam().command.empty() ? "" : " " + joined(GetParam().command));
  EXPECT_TRUE(has(result.out, usage)) << "expected '" << usage << "'\n" << result.describe();
  EXPECT_TRUE(has(result.out, "--help")) << result.describe();
  for (const std::string& word : GetParam().must_mention)
    EXPECT_TRUE(has(result.out, word)) << "help should mention '" << word << "'\n" << result.describe();
  // Help never touches the database.
  EXPECT_FALSE(fs::exists(xdg_database()));
}

INSTANTIATE_TEST_SUITE_P(
    Subcommands, HelpTest,
    ::testing::Values(
        HelpCase{{}, {"--db", "info", "tune", "precompile", "db", "bench", "order", "SPARSEJIT_DB", "XDG_CACHE_HOME"}},
        HelpCase{{"info"}, {"--json"}},
        HelpCase{{"tune"}, {"--device", "--family", "--head-dim", "--density", "--measure-ms", "--budget", "--json"}},
        HelpCase{{"precompile"}, {"--arch", "--family", "-j", "--jobs"}},
        HelpCase{{"db"},
                 {"gpus", "cubins", "stats", "problems", "best", "trials", "export", "import", "merge", "diff",
                  "prune"}},
        HelpCase{{"db", "gpus"}, {"--json"}},
        HelpCase{{"db", "cubins"}, {"--json", "--family"}},
        HelpCase{{"db", "stats"}, {"--json"}},
        HelpCase{{"db", "problems"}, {"--json", "--gpu", "--family"}},
        HelpCase{{"db", "best"}, {"--json", "--gpu", "--family"}},
        HelpCase{{"db", "trials"}, {"--json", "--gpu", "--family", "--problem"}},
        HelpCase{{"db", "export"}, {"--out", "--with-cubins"}},
        HelpCase{{"db", "import"}, {"file", "--json", "one transaction"}},
        HelpCase{{"db", "merge"}, {"other", "--json", "faster"}},
        HelpCase{{"db", "diff"}, {"first", "second", "--json", "exits 0"}},
        HelpCase{{"db", "prune"}, {"--dry-run", "--json", "NVRTC"}},
        HelpCase{{"bench"}, {"permute", "attention", "mask"}},
        HelpCase{{"bench", "mask"},
                 {"--heads", "--tokens", "--head-dim", "--tile", "--block", "--density", "--fine-n", "--fine-share",
                  "--first-block-by-score", "--json", "--quality", "--grid", "--mix", "--densities", "--synthetic-v", "--q", "--k", "--v",
                  "--layout", "--warmup-ms", "--measure-ms"}},
        HelpCase{{"bench", "attention"},
                 {"--heads", "--tokens", "--head-dim", "--block", "--density", "--fine-n", "--dtype",
                  "--mask-file", "--mask-form", "--warmup-ms", "--measure-ms", "--json"}},
        HelpCase{{"bench", "permute"},
                 {"--batch", "--heads", "--tokens", "--head-dim", "--tensors", "--direction", "--no-db",
                  "--warmup-ms", "--measure-ms", "--json"}},
        HelpCase{{"order"}, {"--grid", "--extra", "--order", "--tile", "--block", "--json", "--out"}}),
    [](const ::testing::TestParamInfo<HelpCase>& info) {
      std::string name = info.param.command.empty() ? "top_level" : joined(info.param.command);
      std::replace(name.begin(), name.end(), ' ', '_');
      return name;
    });

// --------------------------------------------------------------------------- usage errors

struct UsageCase {
  std::string name;
  std::vector<std::string> args;
  std::string must_mention;  // in stderr: what was wrong
};

void PrintTo(const UsageCase& usage, std::ostream* os) { *os << "sparsejit " << joined(usage.args); }

class UsageErrorTest : public CliTest, public ::testing::WithParamInterface<UsageCase> {};

// A usage error: non-zero, and not the "no GPU" code (2) scripts test for; nothing on stdout;
// stderr says what was wrong and points at --help.
TEST_P(UsageErrorTest, FailsWithAUsageMessage) {
  const CliResult result = run(GetParam().args);
  EXPECT_NE(result.exit_code, 0) << result.describe();
  EXPECT_NE(result.exit_code, 2) << "2 means 'no GPU'\n" << result.describe();
  EXPECT_LT(result.exit_code, 128) << "the CLI must not crash\n" << result.describe();
  EXPECT_TRUE(result.out.empty()) << result.describe();
  EXPECT_TRUE(has(result.err, "--help")) << result.describe();
  EXPECT_TRUE(has(result.err, GetParam().must_mention))
      << "expected '" << GetParam().must_mention << "'\n" << result.describe();
  EXPECT_FALSE(fs::exists(xdg_database())) << "a usage error must not create the database";
}

INSTANTIATE_TEST_SUITE_P(
    Cli, UsageErrorTest,
    ::testing::Values(UsageCase{"no_subcommand", {}, "subcommand is required"},
                      // The top-level cases below only say a subcommand is required: see the
                      // report (CLI11 checks require_subcommand before the extra arguments).
                      UsageCase{"unknown_subcommand", {"nope"}, "subcommand"},
                      UsageCase{"unknown_top_level_option", {"--bogus"}, "subcommand"},
                      UsageCase{"unknown_option_of_info", {"info", "--bogus"}, "--bogus"},
                      UsageCase{"unknown_option_of_db_stats", {"db", "stats", "--verbose"}, "--verbose"},
                      UsageCase{"db_without_subcommand", {"db"}, "subcommand is required"},
                      UsageCase{"unknown_db_subcommand", {"db", "nope"}, "subcommand"},
                      UsageCase{"bench_without_subcommand", {"bench"}, "subcommand is required"},
                      UsageCase{"jobs_out_of_range", {"precompile", "--arch", "sm_90", "-j", "0"}, "jobs"},
                      UsageCase{"head_dim_not_in_space", {"bench", "permute", "--head-dim", "80"}, "80"},
                      UsageCase{"negative_warmup", {"bench", "attention", "--warmup-ms", "-1"}, "--warmup-ms"},
                      UsageCase{"db_option_without_value", {"--db"}, "--db"},
                      UsageCase{"order_without_grid", {"order"}, "--grid is required"},
                      UsageCase{"order_grid_of_two_dims", {"order", "--grid", "21x45"}, "'21x45' is not FxHxW"},
                      UsageCase{"order_grid_with_zero", {"order", "--grid", "0x45x80"}, "'0x45x80' is not FxHxW"},
                      UsageCase{"order_unknown_order", {"order", "--grid", "4x4x4", "--order", "zigzag"}, "zigzag"},
                      UsageCase{"order_block_zero", {"order", "--grid", "4x4x4", "--block", "0"}, "--block"},
                      UsageCase{"order_negative_extra", {"order", "--grid", "4x4x4", "--extra", "-1"}, "--extra"},
                      UsageCase{"order_tile_without_tile3d", {"order", "--grid", "4x4x4", "--tile", "2x2x2"},
                                "applies only to --order tile3d"},
                      UsageCase{"bench_mask_tile_not_in_space", {"bench", "mask", "--tile", "12"}, "12"},
                      UsageCase{"bench_mask_density_above_one", {"bench", "mask", "--density", "1.5"}, "1.5"},
                      UsageCase{"bench_mask_fine_sub_tiles_past_64", {"bench", "mask", "--fine-n", "8"},
                                "fine sub-tiles of 16x8 do not fit one 64-bit word for 128x128 blocks"},
                      UsageCase{"bench_mask_quality_grid_of_two_dims", {"bench", "mask", "--quality", "--grid", "21x45"},
                                "'21x45' is not FxHxW"},
                      UsageCase{"bench_mask_quality_unknown_mix", {"bench", "mask", "--quality", "--mix", "smooth"},
                                "smooth"},
                      UsageCase{"bench_mask_quality_unknown_synthetic_v",
                                {"bench", "mask", "--quality", "--synthetic-v", "noise"}, "noise"},
                      UsageCase{"bench_mask_quality_synthetic_v_with_a_dump",
                                {"bench", "mask", "--quality", "--synthetic-v", "random", "--q", "/etc/passwd", "--k",
                                 "/etc/passwd"},
                                "is for the synthetic inputs"},
                      UsageCase{"db_trials_without_problem", {"db", "trials"}, "--problem is required"},
                      UsageCase{"db_import_without_file", {"db", "import"}, "file is required"},
                      UsageCase{"db_merge_without_other", {"db", "merge"}, "other is required"},
                      UsageCase{"db_diff_without_database", {"db", "diff"}, "first is required"},
                      UsageCase{"db_diff_with_three_databases", {"db", "diff", "a.db", "b.db", "c.db"}, "c.db"},
                      UsageCase{"db_export_out_without_value", {"db", "export", "--out"}, "--out"},
                      UsageCase{"unknown_option_of_db_prune", {"db", "prune", "--all"}, "--all"}),
    [](const ::testing::TestParamInfo<UsageCase>& info) { return info.param.name; });

// --db is an option of the top-level app; it must work after a subcommand too.
TEST_F(CliTest, TheDbOptionIsAcceptedAfterTheSubcommand) {
  const fs::path database = temp_ / "after.db";
  create_database(database);
  const CliResult stats = run({"db", "stats", "--json", "--db", database.string()});
  ASSERT_EQ(stats.exit_code, 0) << stats.describe();
  EXPECT_EQ(parse_json(stats).value("path", ""), database.string()) << stats.describe();
  const CliResult info = run({"info", "--json", "--db", database.string()});
  EXPECT_EQ(parse_json(info).value("database", ""), database.string()) << info.describe();
  const CliResult refused = run({"precompile", "--arch", "sm_90", "--family", "nope", "--db", database.string()});
  EXPECT_TRUE(has(refused.err, "no kernel family 'nope'")) << refused.describe();
}

// A wrong word is named, and the usage is shown.
TEST_F(CliTest, AnUnknownSubcommandIsNamedAndTheUsageShown) {
  for (const char* word : {"nope", "--bogus"}) {
    const CliResult result = run({word});
    EXPECT_NE(result.exit_code, 0) << result.describe();
    EXPECT_TRUE(has(result.err, word)) << result.describe();
    EXPECT_TRUE(has(result.err, "Usage: sparsejit")) << result.describe();
  }
}

// ---------------------------------------------------------------------------------- info

TEST_F(CliTest, InfoTextShowsNvrtcAndDatabaseAndExitsTwoWithoutAGpu) {
  const CliResult result = run({"info"});
  const std::string nvrtc = jit::nvrtc_version().to_string();
  EXPECT_TRUE(has(result.out, nvrtc)) << result.describe();
  EXPECT_TRUE(has(result.out, xdg_database().string())) << result.describe();
  std::string why;
  if (!gpu_present(&why)) {
    EXPECT_EQ(result.exit_code, 2) << result.describe();
    const std::vector<std::string> lines = lines_of(result.err);
    ASSERT_EQ(lines.size(), 1u) << "exactly one line on stderr\n" << result.describe();
    EXPECT_EQ(lines[0], "sparsejit: " + why) << result.describe();
    EXPECT_FALSE(why.empty());
  } else {
    EXPECT_EQ(result.exit_code, 0) << result.describe();
    EXPECT_TRUE(result.err.empty()) << result.describe();
    EXPECT_TRUE(has(result.out, jit::query_device(0).name)) << result.describe();
    EXPECT_TRUE(has(result.out, local_target())) << result.describe();
  }
  EXPECT_FALSE(fs::exists(xdg_database())) << "info shows the database path, it must not create the file";
}

TEST_F(CliTest, InfoJsonHasNvrtcDatabaseAndGpusOrTheReasonThereAreNone) {
  const CliResult result = run({"info", "--json"});
  const json report = parse_json(result);
  ASSERT_TRUE(report.is_object()) << result.describe();
  EXPECT_EQ(report.value("nvrtc", ""), jit::nvrtc_version().to_string()) << result.describe();
  EXPECT_EQ(report.value("database", ""), xdg_database().string()) << result.describe();
  ASSERT_TRUE(report.contains("gpus") && report["gpus"].is_array()) << result.describe();
  std::string why;
  if (!gpu_present(&why)) {
    EXPECT_EQ(result.exit_code, 2) << result.describe();
    EXPECT_TRUE(report["gpus"].empty()) << result.describe();
    EXPECT_EQ(report.value("no_gpu", ""), why) << result.describe();
    const std::vector<std::string> lines = lines_of(result.err);
    ASSERT_EQ(lines.size(), 1u) << result.describe();
    EXPECT_EQ(lines[0], "sparsejit: " + why);
  } else {
    EXPECT_EQ(result.exit_code, 0) << result.describe();
    EXPECT_FALSE(report.contains("no_gpu")) << result.describe();
    ASSERT_GE(report["gpus"].size(), 1u) << result.describe();
    for (const json& gpu : report["gpus"]) {
      ASSERT_TRUE(gpu.is_object()) << result.describe();
      EXPECT_FALSE(gpu.value("name", "").empty()) << gpu.dump();
      EXPECT_TRUE(gpu.value("target", "").starts_with("sm_")) << gpu.dump();
      EXPECT_GT(gpu.value("sm_count", 0), 0) << gpu.dump();
    }
    EXPECT_EQ(report["gpus"][0].value("target", ""), local_target());
    EXPECT_EQ(report["gpus"][0].value("sm_count", 0), jit::query_device(0).sm_count);
  }
}

// Without NVRTC (SPARSEJIT_NVRTC_LIBRARY names no file): info still reports, saying why there is
// no NVRTC; what needs it fails with exit 1 and the one clear error.
TEST_F(CliTest, WithoutNvrtcInfoSaysWhyAndPrecompileFailsClearly) {
  const EnvironmentOverrides no_nvrtc = {{"SPARSEJIT_NVRTC_LIBRARY", (temp_ / "no" / "libnvrtc.so.13").string()}};
  {
    SCOPED_TRACE("info --json");
    const CliResult result = run({"info", "--json"}, no_nvrtc);
    EXPECT_EQ(result.exit_code, gpu_present() ? 0 : 2) << result.describe();
    const json report = parse_json(result);
    const std::string nvrtc = report.value("nvrtc", "");
    EXPECT_TRUE(nvrtc.starts_with("unavailable: NVRTC is needed for reading NVRTC's version")) << nvrtc;
    EXPECT_TRUE(has(nvrtc, (temp_ / "no" / "libnvrtc.so.13").string() + " (")) << nvrtc;
    EXPECT_TRUE(report.contains("nvrtc_library") && report["nvrtc_library"].is_null()) << result.describe();
  }
  {
    SCOPED_TRACE("precompile");
    const CliResult result =
        run({"--db", (temp_ / "p.db").string(), "precompile", "--arch", "sm_90", "--family", "permute_tokens"}, no_nvrtc);
    EXPECT_EQ(result.exit_code, 1) << result.describe();
    EXPECT_TRUE(has(result.err, "NVRTC is needed for checking the target 'sm_90'")) << result.describe();
    EXPECT_TRUE(has(result.err, "No such file or directory")) << result.describe();
    EXPECT_TRUE(has(result.err, "$SPARSEJIT_NVRTC_LIBRARY")) << result.describe();
  }
}

// ----------------------------------------------------------------------------- precompile

// Counts the rows of `db cubins --json` per target, checking the fields of every row.
std::map<std::string, int> cubins_per_target(const json& rows, std::set<std::string>* keys) {
  static const std::regex kSha256("^[0-9a-f]{64}$");
  std::map<std::string, int> counts;
  for (const json& row : rows) {
    EXPECT_EQ(row.value("family", ""), "permute_tokens") << row.dump();
    const std::string key = row.value("key", "");
    EXPECT_TRUE(std::regex_match(key, kSha256)) << "key is not 64 hex digits: " << row.dump();
    EXPECT_GT(row.value("binary_bytes", 0), 0) << row.dump();
    EXPECT_EQ(row.value("nvrtc_version", ""), jit::nvrtc_version().to_string()) << row.dump();
    keys->insert(key);
    ++counts[row.value("target", "")];
  }
  return counts;
}

// One flow (each gtest case runs in its own process under CTest, so the compiled database
// cannot be shared between cases): compile, recompile nothing, inspect, add two targets.
TEST_F(CliTest, PrecompileCompilesOnceThenFindsEverythingStored) {
  const fs::path database = temp_ / "t.db";
  const fs::path environment_database = temp_ / "env.db";
  // --db wins over SPARSEJIT_DB and XDG_CACHE_HOME (both set here).
  const EnvironmentOverrides with_env = {{"SPARSEJIT_DB", environment_database.string()}};
  {
    SCOPED_TRACE("first precompile");
    const CliResult result = run({"--db", database.string(), "precompile", "--arch", "sm_90", "--family", "permute_tokens"}, with_env);
    ASSERT_EQ(result.exit_code, 0) << result.describe();
    const std::vector<std::string> lines = lines_of(result.out);
    ASSERT_EQ(lines.size(), 1u) << result.describe();
    EXPECT_TRUE(lines[0].starts_with("108 specializations for sm_90: 108 compiled, 0 already in " +
                                     database.string()))
        << result.describe();
    EXPECT_TRUE(fs::exists(database));
    EXPECT_FALSE(fs::exists(environment_database)) << "--db must override SPARSEJIT_DB";
    EXPECT_FALSE(fs::exists(xdg_database())) << "--db must override XDG_CACHE_HOME";
    EXPECT_FALSE(fs::exists(home_database()));
  }
  {
    SCOPED_TRACE("second precompile");
    const CliResult result = run({"--db", database.string(), "precompile", "--arch", "sm_90", "--family", "permute_tokens"});
    ASSERT_EQ(result.exit_code, 0) << result.describe();
    EXPECT_TRUE(has(result.out, "108 specializations for sm_90: 0 compiled, 108 already in " +
                                    database.string()))
        << result.describe();
  }
  {
    SCOPED_TRACE("db stats --json");
    const CliResult result = run({"--db", database.string(), "db", "stats", "--json"});
    ASSERT_EQ(result.exit_code, 0) << result.describe();
    const json stats = parse_json(result);
    EXPECT_EQ(stats.value("cubins", -1), 108) << result.describe();
    EXPECT_EQ(stats.value("schema_version", -1), db::kCurrentSchemaVersion) << result.describe();
    EXPECT_EQ(stats.value("gpus", -1), 0) << "precompile records no GPU\n" << result.describe();
    EXPECT_GT(stats.value("cubin_bytes", 0), 108 * 1000) << result.describe();
    EXPECT_EQ(stats.value("path", ""), database.string()) << result.describe();
  }
  {
    SCOPED_TRACE("db stats (table)");
    const CliResult result = run({"--db", database.string(), "db", "stats"});
    ASSERT_EQ(result.exit_code, 0) << result.describe();
    EXPECT_TRUE(std::regex_search(result.out, std::regex("CUBINs +108 ")))
        << result.describe();
    const std::regex version("schema version +" + std::to_string(db::kCurrentSchemaVersion) + "\n");
    EXPECT_TRUE(std::regex_search(result.out, version)) << result.describe();
  }
  {
    SCOPED_TRACE("db cubins --json");
    const CliResult result = run({"--db", database.string(), "db", "cubins", "--json"});
    ASSERT_EQ(result.exit_code, 0) << result.describe();
    const json rows = parse_json(result);
    ASSERT_TRUE(rows.is_array()) << result.describe();
    EXPECT_EQ(rows.size(), 108u);
    std::set<std::string> keys;
    const std::map<std::string, int> counts = cubins_per_target(rows, &keys);
    EXPECT_EQ(counts, (std::map<std::string, int>{{"sm_90", 108}}));
    EXPECT_EQ(keys.size(), 108u) << "every specialization has its own key";
  }
  {
    SCOPED_TRACE("db cubins (table)");
    const CliResult result = run({"--db", database.string(), "db", "cubins"});
    ASSERT_EQ(result.exit_code, 0) << result.describe();
    const std::vector<std::string> lines = lines_of(result.out);
    ASSERT_EQ(lines.size(), 110u) << "header, rule and 108 rows\n" << result.describe();
    EXPECT_TRUE(lines[0].starts_with("family") && has(lines[0], "target") && has(lines[0], "key"))
        << lines[0];
    EXPECT_EQ(lines[1].find_first_not_of('-'), std::string::npos) << lines[1];
    for (std::size_t i = 2; i < lines.size(); ++i) {
      EXPECT_TRUE(std::regex_search(lines[i], std::regex("^permute_tokens +sm_90 +permute_tokens<D=")))
          << lines[i];
    }
  }
  {
    SCOPED_TRACE("db cubins --family");
    const CliResult other = run({"--db", database.string(), "db", "cubins", "--family", "nope", "--json"});
    ASSERT_EQ(other.exit_code, 0) << other.describe();
    EXPECT_EQ(parse_json(other), json::array());
    const CliResult text = run({"--db", database.string(), "db", "cubins", "--family", "nope"});
    EXPECT_TRUE(has(text.out, "no CUBINs stored in " + database.string())) << text.describe();
  }
  {
    SCOPED_TRACE("db gpus");
    const CliResult text = run({"--db", database.string(), "db", "gpus"});
    ASSERT_EQ(text.exit_code, 0) << text.describe();
    EXPECT_TRUE(has(text.out, "no GPUs recorded")) << text.describe();
    const CliResult as_json = run({"--db", database.string(), "db", "gpus", "--json"});
    ASSERT_EQ(as_json.exit_code, 0) << as_json.describe();
    EXPECT_EQ(parse_json(as_json), json::array()) << as_json.describe();
  }
  {
    SCOPED_TRACE("two more targets, database named by SPARSEJIT_DB");
    const CliResult result =
        run({"precompile", "--arch", "sm_80", "--arch", "sm_90a", "--family", "permute_tokens", "-j", "2"},
            {{"SPARSEJIT_DB", database.string()}});
    ASSERT_EQ(result.exit_code, 0) << result.describe();
    EXPECT_TRUE(has(result.out, "216 specializations for sm_80, sm_90a: 216 compiled, 0 already in " +
                                    database.string()))
        << result.describe();
    EXPECT_FALSE(fs::exists(xdg_database())) << "SPARSEJIT_DB must override XDG_CACHE_HOME";
    const CliResult listed = run({"--db", database.string(), "db", "cubins", "--json"});
    ASSERT_EQ(listed.exit_code, 0) << listed.describe();
    const json rows = parse_json(listed);
    ASSERT_TRUE(rows.is_array());
    std::set<std::string> keys;
    EXPECT_EQ(cubins_per_target(rows, &keys),
              (std::map<std::string, int>{{"sm_80", 108}, {"sm_90", 108}, {"sm_90a", 108}}));
    EXPECT_EQ(keys.size(), 324u) << "the target is part of the key";
    const CliResult stats = run({"--db", database.string(), "db", "stats", "--json"});
    EXPECT_EQ(parse_json(stats).value("cubins", -1), 324) << stats.describe();
  }
}

TEST_F(CliTest, PrecompileOfAnUnknownFamilyNamesTheRegisteredOnes) {
  const fs::path database = temp_ / "t.db";
  const CliResult result =
      run({"--db", database.string(), "precompile", "--arch", "sm_90", "--family", "nope"});
  EXPECT_EQ(result.exit_code, 1) << result.describe();
  EXPECT_TRUE(result.out.empty()) << result.describe();
  EXPECT_TRUE(result.err.starts_with("sparsejit: ")) << result.describe();
  EXPECT_TRUE(has(result.err, "'nope'")) << result.describe();
  ASSERT_FALSE(templates::registered_families().empty());
  for (const templates::KernelFamily* family : templates::registered_families())
    EXPECT_TRUE(has(result.err, std::string(family->name()))) << result.describe();
  EXPECT_FALSE(fs::exists(database)) << "a refused precompile must not create the database";
}

TEST_F(CliTest, PrecompileForAnUnsupportedTargetListsTheSupportedOnes) {
  const fs::path database = temp_ / "t.db";
  const CliResult result = run({"--db", database.string(), "precompile", "--arch", "sm_12"});
  EXPECT_EQ(result.exit_code, 1) << result.describe();
  EXPECT_TRUE(result.out.empty()) << result.describe();
  EXPECT_TRUE(result.err.starts_with("sparsejit: ")) << result.describe();
  EXPECT_TRUE(has(result.err, "'sm_12'")) << result.describe();
  for (const char* supported : {"sm_80", "sm_90"})
    EXPECT_TRUE(has(result.err, supported)) << "should list " << supported << "\n" << result.describe();
  EXPECT_FALSE(fs::exists(database));
}

TEST_F(CliTest, PrecompileWithoutArchNeedsAGpu) {
  const fs::path database = temp_ / "t.db";
  std::string why;
  if (!gpu_present(&why)) {
    const CliResult result = run({"--db", database.string(), "precompile"});
    EXPECT_EQ(result.exit_code, 1) << result.describe();
    EXPECT_TRUE(result.out.empty()) << result.describe();
    EXPECT_EQ(lines_of(result.err).size(), 1u) << result.describe();
    EXPECT_TRUE(has(result.err, why)) << result.describe();
    EXPECT_TRUE(has(result.err, "name the target to build for with --arch")) << result.describe();
    EXPECT_FALSE(fs::exists(database));
  } else {
    // With a GPU it builds for the local target.
    const CliResult result = run({"--db", database.string(), "precompile", "--family", "permute_tokens"});
    ASSERT_EQ(result.exit_code, 0) << result.describe();
    EXPECT_TRUE(has(result.out, "108 specializations for " + local_target() + ": ")) << result.describe();
  }
}

// ------------------------------------------------------------------------------------ db

TEST_F(CliTest, DbCommandsOnAMissingFileSayThereIsNoDatabase) {
  const fs::path missing = temp_ / "missing.db";
  const std::string other = (temp_ / "other.db").string();
  create_database(other);
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"stats"}, {"gpus"}, {"cubins"}, {"stats", "--json"}, {"problems"}, {"best"},
        {"trials", "--problem", "p"}, {"export"}, {"prune"}, {"prune", "--dry-run"}, {"diff", other}}) {
    std::vector<std::string> args = {"--db", missing.string(), "db"};
    args.insert(args.end(), command.begin(), command.end());
    const CliResult result = run(args);
    SCOPED_TRACE(joined(args));
    EXPECT_EQ(result.exit_code, 1) << result.describe();
    EXPECT_TRUE(result.out.empty()) << result.describe();
    EXPECT_TRUE(has(result.err, "no database at " + missing.string())) << result.describe();
    EXPECT_EQ(lines_of(result.err).size(), 1u) << result.describe();
    EXPECT_FALSE(fs::exists(missing)) << "only import and merge create the database";
  }
  // The default path is named when no --db is given.
  const CliResult result = run({"db", "stats"});
  EXPECT_EQ(result.exit_code, 1) << result.describe();
  EXPECT_TRUE(has(result.err, "no database at " + xdg_database().string())) << result.describe();
  EXPECT_FALSE(fs::exists(xdg_database()));
}

TEST_F(CliTest, DbCommandsRefuseAGarbageFileAndLeaveItUntouched) {
  const fs::path garbage = temp_ / "garbage.db";
  std::mt19937_64 generator = fresh_generator();
  std::vector<char> bytes(8192);
  for (char& byte : bytes) byte = static_cast<char>(generator() & 0xff);
  bytes[0] = 'X';  // never the SQLite magic header by chance
  write_bytes(garbage, bytes);
  // Valid inputs beside it (in a subdirectory: the listing below counts the top level only).
  const fs::path valid = temp_ / "inputs" / "valid.db";
  fs::create_directories(valid.parent_path());
  create_database(valid);
  const fs::path tuning_file = temp_ / "inputs" / "valid.json";
  ASSERT_EQ(run({"--db", valid.string(), "db", "export", "--out", tuning_file.string()}).exit_code, 0);
  const std::vector<std::vector<std::string>> commands = {
      {"stats"}, {"gpus"}, {"cubins"}, {"problems"}, {"best"}, {"trials", "--problem", "p"}, {"export"},
      {"prune"}, {"prune", "--dry-run"}, {"import", tuning_file.string()}, {"merge", valid.string()},
      {"diff", valid.string()}};
  for (const std::vector<std::string>& command : commands) {
    std::vector<std::string> args = {"--db", garbage.string(), "db"};
    args.insert(args.end(), command.begin(), command.end());
    const CliResult result = run(args);
    SCOPED_TRACE(joined(args));
    EXPECT_EQ(result.exit_code, 1) << result.describe();
    EXPECT_TRUE(result.out.empty()) << result.describe();
    EXPECT_TRUE(std::regex_search(result.err, std::regex("not a (SQLite|sparsejit) database")))
        << result.describe();
    EXPECT_TRUE(has(result.err, garbage.string())) << result.describe();
    EXPECT_EQ(read_bytes(garbage), bytes) << "the file must be byte-identical afterwards";
  }
  // As the other database of merge and diff.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--db", valid.string(), "db", "merge", garbage.string()},
        {"db", "diff", valid.string(), garbage.string()}}) {
    const CliResult result = run(args);
    SCOPED_TRACE(joined(args));
    EXPECT_EQ(result.exit_code, 1) << result.describe();
    EXPECT_TRUE(has(result.err, garbage.string() + ": not a SQLite database")) << result.describe();
    EXPECT_EQ(read_bytes(garbage), bytes);
  }
  // No journal, WAL or shared-memory file was left beside it.
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(temp_.path()))
    if (entry.is_regular_file()) names.push_back(entry.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"garbage.db"});
}

TEST_F(CliTest, DbCommandsRefuseTheSqliteDatabaseOfAnotherProgram) {
  const fs::path foreign = temp_ / "foreign.db";
  {
    db::Connection connection = db::Connection::open(foreign, db::OpenMode::read_write_create);
    connection.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); "
                    "INSERT INTO notes (text) VALUES ('keep me');");
  }
  const std::vector<char> before = read_bytes(foreign);
  ASSERT_FALSE(before.empty());
  const CliResult result = run({"--db", foreign.string(), "db", "stats"});
  EXPECT_EQ(result.exit_code, 1) << result.describe();
  EXPECT_TRUE(has(result.err, "not a sparsejit")) << result.describe();
  EXPECT_EQ(read_bytes(foreign), before);
}

TEST_F(CliTest, DbStatsOnAnEmptyFileSaysItIsNotADatabaseYet) {
  const fs::path empty = temp_ / "empty.db";
  write_bytes(empty, {});
  const CliResult result = run({"--db", empty.string(), "db", "stats"});
  EXPECT_EQ(result.exit_code, 1) << result.describe();
  EXPECT_TRUE(has(result.err, "empty")) << result.describe();
  EXPECT_EQ(fs::file_size(empty), 0u) << "a read-only command must not initialize the file";
}

TEST_F(CliTest, DbOnAFreshDatabaseHasNoGpusAndNoCubins) {
  const fs::path database = temp_ / "fresh.db";
  create_database(database);
  const CliResult gpus = run({"--db", database.string(), "db", "gpus"});
  EXPECT_EQ(gpus.exit_code, 0) << gpus.describe();
  EXPECT_EQ(gpus.out, "no GPUs recorded in " + database.string() + "\n") << gpus.describe();
  const CliResult gpus_json = run({"--db", database.string(), "db", "gpus", "--json"});
  EXPECT_EQ(gpus_json.exit_code, 0) << gpus_json.describe();
  EXPECT_EQ(parse_json(gpus_json), json::array());
  const CliResult cubins_json = run({"--db", database.string(), "db", "cubins", "--json"});
  EXPECT_EQ(cubins_json.exit_code, 0) << cubins_json.describe();
  EXPECT_EQ(parse_json(cubins_json), json::array());
  const CliResult stats = run({"--db", database.string(), "db", "stats", "--json"});
  const json report = parse_json(stats);
  EXPECT_EQ(report.value("cubins", -1), 0) << stats.describe();
  EXPECT_EQ(report.value("gpus", -1), 0) << stats.describe();
  EXPECT_EQ(report.value("schema_version", -1), db::kCurrentSchemaVersion) << stats.describe();
}

// ---------------------------------------------------------------------- database location

// The database a command opens: --db, else $SPARSEJIT_DB, else $XDG_CACHE_HOME/sparsejit/
// tuning.db (absolute paths only), else $HOME/.cache/sparsejit/tuning.db. Every candidate
// holds a database, so the path that `db stats` reports is the one it chose.
TEST_F(CliTest, DbFlagOverridesSparsejitDbWhichOverridesXdgWhichOverridesHome) {
  const fs::path flag = temp_ / "flag.db";
  const fs::path environment_variable = temp_ / "env.db";
  for (const fs::path& path : {flag, environment_variable, xdg_database(), home_database()})
    create_database(path);
  struct Case {
    std::string name;
    std::vector<std::string> args;
    EnvironmentOverrides environment;
    fs::path expected;
  };
  const std::vector<Case> cases = {
      {"--db with everything set", {"--db", flag.string()}, {{"SPARSEJIT_DB", environment_variable.string()}}, flag},
      {"SPARSEJIT_DB over XDG and HOME", {}, {{"SPARSEJIT_DB", environment_variable.string()}},
       environment_variable},
      {"XDG over HOME", {}, {}, xdg_database()},
      {"empty SPARSEJIT_DB is ignored", {}, {{"SPARSEJIT_DB", ""}}, xdg_database()},
      {"HOME when XDG is unset", {}, {{"XDG_CACHE_HOME", std::nullopt}}, home_database()},
      {"relative XDG is ignored", {}, {{"XDG_CACHE_HOME", "relative/cache"}}, home_database()},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::string> args = c.args;
    for (const char* word : {"db", "stats", "--json"}) args.push_back(word);
    const CliResult stats = run(args, c.environment);
    ASSERT_EQ(stats.exit_code, 0) << stats.describe();
    EXPECT_EQ(parse_json(stats).value("path", ""), c.expected.string()) << stats.describe();
    // info reports the same choice.
    std::vector<std::string> info_args = c.args;
    for (const char* word : {"info", "--json"}) info_args.push_back(word);
    const CliResult info = run(info_args, c.environment);
    EXPECT_EQ(parse_json(info).value("database", ""), c.expected.string()) << info.describe();
  }
}

TEST_F(CliTest, WithoutDbSparsejitDbXdgOrHomeTheCliExplainsWhatToSet) {
  const EnvironmentOverrides nothing = {{"HOME", std::nullopt}, {"XDG_CACHE_HOME", std::nullopt}};
  const CliResult stats = run({"db", "stats"}, nothing);
  EXPECT_EQ(stats.exit_code, 1) << stats.describe();
  EXPECT_TRUE(has(stats.err, "SPARSEJIT_DB") && has(stats.err, "--db")) << stats.describe();
  const CliResult info = run({"info", "--json"}, nothing);
  EXPECT_TRUE(parse_json(info).value("database", "").starts_with("(none: ")) << info.describe();
}

// ---------------------------------------------------------------------------------- bench

// tune: without a GPU it says so and pre-compiles for the common targets (the README's first
// command must do useful work on any machine); with one it tunes, and a second run resumes.
TEST_F(CliTest, TuneTunesOnAGpuAndPrecompilesWithoutOne) {
  const fs::path database = temp_ / "tune.db";
  std::string why;
  if (!gpu_present(&why)) {
    // Without a GPU, tune compiles the candidates of the tuning problems (permute_tokens'
    // only, today), not whole spaces.
    const CliResult result = run({"--db", database.string(), "tune", "--family", "permute_tokens"});
    ASSERT_EQ(result.exit_code, 0) << result.describe();
    const std::vector<std::string> lines = lines_of(result.err);
    ASSERT_FALSE(lines.empty()) << result.describe();
    EXPECT_EQ(lines[0], "sparsejit: " + why +
                            ": tuning needs a GPU; pre-compiling the candidates for sm_80, sm_86, "
                            "sm_89, sm_90 instead")
        << result.describe();
    EXPECT_TRUE(has(result.out, "432 specializations for sm_80, sm_86, sm_89, sm_90: 432 compiled"))
        << result.describe();
    EXPECT_EQ(parse_json(run({"--db", database.string(), "db", "stats", "--json"})).value("cubins", 0), 432);
    return;
  }
  // Every vector width x threads x unroll of the family's space, per (head dim, direction).
  constexpr int kCandidatesPerProblem = static_cast<int>(
      templates::kPermuteVectorBytes.size() * templates::kPermuteThreads.size() *
      templates::kPermuteUnroll.size());
  const CliResult first =
      run({"--db", database.string(), "tune", "--family", "permute_tokens", "--measure-ms", "3", "--json"});
  ASSERT_EQ(first.exit_code, 0) << first.describe();
  const json problems = parse_json(first);
  ASSERT_EQ(problems.size(), 6u) << first.describe();  // 3 head dims x gather/scatter
  for (const json& problem : problems) {
    EXPECT_EQ(problem.value("measured", -1), kCandidatesPerProblem) << problem.dump();
    EXPECT_TRUE(problem["best_config"].is_object()) << problem.dump();
    EXPECT_GT(problem.value("best_ms", 0.0), 0.0) << problem.dump();
    EXPECT_LE(problem.value("best_ms", 0.0), problem.value("default_ms", 0.0)) << problem.dump();
  }
  // The complete run keeps only the binaries of the 6 best configs (a kernel per head dim and
  // direction), and says so.
  EXPECT_TRUE(has(first.err, "kept the CUBINs the best configs need: removed " +
                                 std::to_string(6 * kCandidatesPerProblem - 6) + " other binaries"))
      << first.describe();
  EXPECT_EQ(parse_json(run({"--db", database.string(), "db", "stats", "--json"})).value("cubins", 0), 6);
  // The rerun neither measures nor compiles anything: the pruned losers' trials are stored.
  const CliResult second =
      run({"--db", database.string(), "tune", "--family", "permute_tokens", "--measure-ms", "3", "--json"});
  ASSERT_EQ(second.exit_code, 0) << second.describe();
  EXPECT_TRUE(has(second.err, ": 0 kernels: 0 compiled")) << second.describe();
  for (const json& problem : parse_json(second)) {
    EXPECT_EQ(problem.value("measured", -1), 0) << problem.dump();
    EXPECT_EQ(problem.value("resumed", -1), kCandidatesPerProblem) << problem.dump();
  }
  const json stats = parse_json(run({"--db", database.string(), "db", "stats", "--json"}));
  EXPECT_EQ(stats.value("trials", 0), 6 * kCandidatesPerProblem);
  EXPECT_EQ(stats.value("best_configs", 0), 6);
  EXPECT_EQ(stats.value("cubins", 0), 6);

  // Shards run by hand into one database keep every candidate's binary for each other (the
  // other shard's problems are not measured yet) and say how to prune after the last.
  const fs::path sharded = temp_ / "sharded.db";
  for (const char* shard : {"0/2", "1/2"}) {
    const CliResult part = run({"--db", sharded.string(), "tune", "--family", "permute_tokens", "--measure-ms", "3",
                                "--shard", shard, "--json"});
    ASSERT_EQ(part.exit_code, 0) << part.describe();
    EXPECT_EQ(parse_json(part).size(), 3u) << part.describe();
    EXPECT_TRUE(has(part.err, std::string("shard ") + shard + " done") && has(part.err, "`sparsejit db prune`"))
        << part.describe();
    EXPECT_FALSE(has(part.err, "removed")) << part.describe();
  }
  const json shard_stats = parse_json(run({"--db", sharded.string(), "db", "stats", "--json"}));
  EXPECT_EQ(shard_stats.value("trials", 0), 6 * kCandidatesPerProblem);
  EXPECT_EQ(shard_stats.value("cubins", 0), 6 * kCandidatesPerProblem);
  const CliResult pruned = run({"--db", sharded.string(), "db", "prune"});
  ASSERT_EQ(pruned.exit_code, 0) << pruned.describe();
  EXPECT_EQ(parse_json(run({"--db", sharded.string(), "db", "stats", "--json"})).value("cubins", 0), 6);
}

// kill -9 in the middle of a tuning run: the database is whole (SQLite's integrity check),
// every problem's best row is the fastest ok trial stored for it (trial and best are one
// transaction), and a rerun measures exactly what is missing: no trial lost, none twice.
TEST_F(CliTest, TuneKilledWithSigkillResumesWithoutLosingTrials) {
  std::string why;
  if (!gpu_present(&why)) SPARSEJIT_SKIP_WITHOUT_GPU("tuning needs a GPU", why);
  const fs::path database = temp_ / "killed.db";
  const std::vector<std::string> tune = {"--db", database.string(), "tune", "--family", "permute_tokens",
                                         "--measure-ms", "3"};
  std::vector<std::string> argv_strings = {cli_path().string()};
  argv_strings.insert(argv_strings.end(), tune.begin(), tune.end());
  std::vector<char*> argv;
  for (std::string& arg : argv_strings) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const pid_t child = fork();
  ASSERT_GE(child, 0) << std::strerror(errno);
  if (child == 0) {  // quiet: the parent reads the database, not the output
    std::freopen("/dev/null", "w", stdout);
    std::freopen("/dev/null", "w", stderr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  const auto stored_trials = [&] {  // 0 while the tuner is still creating the file
    const CliResult stats = run({"--db", database.string(), "db", "stats", "--json"});
    const json parsed = json::parse(stats.out, nullptr, /*allow_exceptions=*/false);
    return stats.exit_code == 0 && parsed.is_object() ? parsed.value("trials", 0) : 0;
  };
  int before_kill = 0;
  for (int poll = 0; poll < 600 && before_kill < 20; ++poll) {  // up to a minute
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (fs::exists(database)) before_kill = stored_trials();
  }
  ASSERT_EQ(kill(child, SIGKILL), 0) << std::strerror(errno);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the tuner ended on its own before the kill (" << before_kill << " trials): nothing was tested";
  ASSERT_GE(before_kill, 20);

  {
    const db::Connection connection = db::Connection::open(database, db::OpenMode::read_only);
    db::Statement check = connection.prepare("PRAGMA integrity_check");
    ASSERT_TRUE(check.step());
    EXPECT_EQ(check.column_text(0), "ok");
  }
  // Every stored trial, problem by problem (db trials lists one problem).
  const CliResult listed = run({"--db", database.string(), "db", "problems", "--json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.describe();
  const json stored_problems = parse_json(listed);
  ASSERT_TRUE(stored_problems.is_array()) << listed.describe();
  json trials = json::array();
  for (const json& problem : stored_problems) {
    const CliResult of_problem =
        run({"--db", database.string(), "db", "trials", "--problem", problem.value("problem_key", ""), "--json"});
    ASSERT_EQ(of_problem.exit_code, 0) << of_problem.describe();
    const json rows = parse_json(of_problem);
    ASSERT_TRUE(rows.is_array()) << of_problem.describe();
    trials.insert(trials.end(), rows.begin(), rows.end());
  }
  const int after_kill = static_cast<int>(trials.size());
  EXPECT_GE(after_kill, before_kill);
  std::map<std::string, double> fastest_ok;
  std::map<std::string, std::vector<double>> best_rows;
  for (const json& trial : trials) {
    const std::string problem = trial.value("problem_key", "");
    if (trial.value("status", "") == "ok") {
      const double ms = trial["median_ms"].get<double>();
      fastest_ok[problem] = fastest_ok.contains(problem) ? std::min(fastest_ok[problem], ms) : ms;
    }
    if (trial.value("best", false)) best_rows[problem].push_back(trial["median_ms"].get<double>());
  }
  EXPECT_FALSE(fastest_ok.empty());
  for (const auto& [problem, ms] : fastest_ok) {
    ASSERT_EQ(best_rows[problem].size(), 1u) << problem << ": one best row per problem with ok trials";
    EXPECT_EQ(best_rows[problem][0], ms) << problem << ": the best row is the fastest stored trial";
  }
  EXPECT_EQ(best_rows.size(), fastest_ok.size()) << "no best row without an ok trial behind it";

  constexpr int kCandidatesPerProblem = static_cast<int>(
      templates::kPermuteVectorBytes.size() * templates::kPermuteThreads.size() *
      templates::kPermuteUnroll.size());
  std::vector<std::string> rerun = tune;
  rerun.push_back("--json");
  const CliResult resumed = run(rerun);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.describe();
  const json problems = parse_json(resumed);
  ASSERT_TRUE(problems.is_array()) << resumed.describe();
  int measured = 0, reused = 0;
  for (const json& problem : problems) {
    EXPECT_EQ(problem.value("measured", -1) + problem.value("resumed", -1), kCandidatesPerProblem) << problem.dump();
    measured += problem.value("measured", 0);
    reused += problem.value("resumed", 0);
  }
  EXPECT_EQ(reused, after_kill) << "every trial stored before the kill is reused";
  const CliResult final_stats = run({"--db", database.string(), "db", "stats", "--json"});
  const json stats = parse_json(final_stats);
  ASSERT_TRUE(stats.is_object()) << final_stats.describe();
  EXPECT_EQ(stats.value("trials", 0), 6 * kCandidatesPerProblem) << "none lost, none measured twice";
  EXPECT_EQ(stats.value("best_configs", 0), 6);
  EXPECT_EQ(measured + reused, 6 * kCandidatesPerProblem);
}

// --devices and --shard are checked before any work: a GPU listed twice, a shard out of range,
// both together. Without a GPU a shard pre-compiles its share of the candidates.
TEST_F(CliTest, TuneDevicesAndShardsAreChecked) {
  const fs::path database = temp_ / "tune.db";
  const CliResult twice = run({"--db", database.string(), "tune", "--devices", "0,0"});
  EXPECT_EQ(twice.exit_code, 1) << twice.describe();
  EXPECT_TRUE(has(twice.err, "--devices lists a GPU twice")) << twice.describe();
  const CliResult outside = run({"--db", database.string(), "tune", "--shard", "2/2"});
  EXPECT_NE(outside.exit_code, 0) << outside.describe();
  EXPECT_TRUE(has(outside.err, "--shard: takes I/K with 0 <= I < K")) << outside.describe();
  const CliResult both = run({"--db", database.string(), "tune", "--shard", "0/2", "--devices", "0,1"});
  EXPECT_NE(both.exit_code, 0) << both.describe();
  EXPECT_TRUE(has(both.err, "excludes")) << both.describe();
  EXPECT_FALSE(fs::exists(database)) << "nothing is created for a refused command";
  if (gpu_present()) return;  // the shares on GPUs: TuneDevicesShareOutTheProblems
  const CliResult half = run({"--db", database.string(), "tune", "--family", "permute_tokens", "--shard", "1/2"});
  ASSERT_EQ(half.exit_code, 0) << half.describe();
  EXPECT_TRUE(has(half.out, "216 specializations for sm_80, sm_86, sm_89, sm_90: 216 compiled")) << half.describe();
}

// --devices on a host with two GPUs or more: one process each into one database. Identical
// GPUs (one fingerprint) share the problems out; different ones each tune all of them.
TEST_F(CliTest, TuneDevicesShareOutTheProblems) {
  std::string why;
  if (!gpu_present(&why)) SPARSEJIT_SKIP_WITHOUT_GPU("tuning needs a GPU", why);
  int count = 0;
  SJ_CU(cuDeviceGetCount(&count));
  if (count < 2) GTEST_SKIP() << "--devices needs two GPUs; this machine has " << count;
  const fs::path database = temp_ / "devices.db";
  const CliResult result = run({"--db", database.string(), "tune", "--family", "permute_tokens", "--devices", "0,1",
                                "--measure-ms", "3", "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.describe();
  const json problems = parse_json(result);
  ASSERT_TRUE(problems.is_array()) << result.describe();
  EXPECT_TRUE(has(result.err, "[GPU 0] ") && has(result.err, "[GPU 1] ")) << result.describe();
  std::map<int, std::set<std::string>> by_device;
  for (const json& problem : problems) by_device[problem.value("device", -1)].insert(problem.value("problem", ""));
  ASSERT_EQ(by_device.size(), 2u) << result.describe();
  const json gpus = parse_json(run({"--db", database.string(), "db", "gpus", "--json"}));
  if (gpus.size() == 1) {  // identical: the 6 problems split between them, none twice
    EXPECT_EQ(by_device[0].size() + by_device[1].size(), 6u);
    for (const std::string& key : by_device[0]) EXPECT_EQ(by_device[1].count(key), 0u) << key;
  } else {
    EXPECT_EQ(by_device[0].size(), 6u);
    EXPECT_EQ(by_device[1].size(), 6u);
  }
  const json stats = parse_json(run({"--db", database.string(), "db", "stats", "--json"}));
  constexpr int kCandidatesPerProblem = static_cast<int>(
      templates::kPermuteVectorBytes.size() * templates::kPermuteThreads.size() *
      templates::kPermuteUnroll.size());
  EXPECT_EQ(stats.value("trials", 0), static_cast<int>(gpus.size()) * 6 * kCandidatesPerProblem);
}

// tune --head-dim and --density select problems; a selection that leaves none is an error
// that names the options (before any GPU or compile work).
TEST_F(CliTest, TuneRefusesASelectionWithoutProblems) {
  const fs::path database = temp_ / "tune.db";
  for (const std::vector<std::string>& selection :
       {std::vector<std::string>{"--family", "permute_tokens", "--density", "0.3"},  // permute has no density
        std::vector<std::string>{"--family", "sparse_attention", "--density", "0.7"},
        std::vector<std::string>{"--head-dim", "256"}}) {
    std::vector<std::string> args = {"--db", database.string(), "tune"};
    args.insert(args.end(), selection.begin(), selection.end());
    const CliResult result = run(args);
    EXPECT_EQ(result.exit_code, 1) << result.describe();
    EXPECT_TRUE(has(result.err, "no tuning problem matches the selection (--family, --head-dim, --density)"))
        << result.describe();
  }
  EXPECT_FALSE(fs::exists(database)) << "nothing is created for an empty selection";
}

// bench attention: one line of reason without a GPU; with one, a small run, also from mask
// files as tools/compare_peers.py writes them, and a clear error for a malformed file.
TEST_F(CliTest, BenchAttentionRunsOnAGpuAndReadsMaskFiles) {
  const fs::path database = temp_ / "attention.db";
  std::string why;
  if (!gpu_present(&why)) {
    const CliResult result = run({"--db", database.string(), "bench", "attention"});
    EXPECT_EQ(result.exit_code, 2) << result.describe();
    ASSERT_EQ(lines_of(result.err).size(), 1u) << result.describe();
    EXPECT_TRUE(has(result.err, why)) << result.describe();
    return;
  }
  const std::vector<std::string> shape = {"--heads", "2", "--tokens", "1000", "--head-dim", "64", "--json"};
  std::vector<std::string> random_mask = {"--db",      database.string(), "bench",        "attention", "--density",
                                          "0.5",       "--warmup-ms",     "0",            "--measure-ms", "0"};
  random_mask.insert(random_mask.end(), shape.begin(), shape.end());
  const CliResult first = run(random_mask);
  ASSERT_EQ(first.exit_code, 0) << first.describe();
  const json report = parse_json(first);
  EXPECT_GT(report.value("median_ms", 0.0), 0.0) << first.describe();
  EXPECT_NEAR(report.value("density", 0.0), 0.5, 0.07) << first.describe();
  EXPECT_EQ(report.value("repetitions", 0), 5) << "--measure-ms 0 times the minimum of 5 runs\n" << first.describe();

  // --kernel alone runs that kernel with its own built-in default tile (mma.sync on any GPU;
  // before, it kept the other kernel's tile, which the mma.sync kernel refuses).
  std::vector<std::string> portable = random_mask;
  portable.insert(portable.end(), {"--kernel", "mma"});
  const CliResult mma = run(portable);
  ASSERT_EQ(mma.exit_code, 0) << mma.describe();
  const std::string mma_config = parse_json(mma).value("config", "");
  EXPECT_TRUE(has(mma_config, "sparse_attention<") && !has(mma_config, "wgmma")) << mma.describe();
  if (has(report.value("config", ""), "wgmma")) {
    // And wgmma where the built-in default of the problem is mma.sync (fine bits at D = 64, 64 x
    // 64 blocks): its widest tile, not a refusal.
    std::vector<std::string> hopper = random_mask;
    hopper.insert(hopper.end(), {"--block", "64", "--fine-n", "16"});
    const CliResult by_default = run(hopper);
    ASSERT_EQ(by_default.exit_code, 0) << by_default.describe();
    EXPECT_FALSE(has(parse_json(by_default).value("config", ""), "wgmma")) << by_default.describe();
    hopper.insert(hopper.end(), {"--kernel", "wgmma"});
    const CliResult wgmma = run(hopper);
    ASSERT_EQ(wgmma.exit_code, 0) << wgmma.describe();
    EXPECT_TRUE(has(parse_json(wgmma).value("config", ""), "wgmma")) << wgmma.describe();
  }

  // QB = KB = 8 blocks of 128: every query block keeps blocks 0 and its own.
  const fs::path prefix = temp_ / "mask";
  std::vector<int> count(2 * 8, 2), index;
  for (int h = 0; h < 2; ++h)
    for (int qb = 0; qb < 8; ++qb) {
      index.push_back(0);
      index.push_back(qb == 0 ? 1 : qb);
    }
  const auto write_ints = [](const fs::path& path, const std::vector<int>& values) {
    std::vector<char> bytes(values.size() * 4);
    std::memcpy(bytes.data(), values.data(), bytes.size());
    testing::write_bytes(path, bytes);
  };
  write_ints(prefix.string() + ".count.i32", count);
  write_ints(prefix.string() + ".index.i32", index);
  std::vector<std::string> from_file = {"--db", database.string(), "bench", "attention", "--mask-file",
                                        prefix.string()};
  from_file.insert(from_file.end(), shape.begin(), shape.end());
  const CliResult second = run(from_file);
  ASSERT_EQ(second.exit_code, 0) << second.describe();
  EXPECT_NEAR(parse_json(second).value("density", 0.0), 2.0 / 8.0, 1e-9) << second.describe();

  write_ints(prefix.string() + ".count.i32", std::vector<int>(5, 1));  // not [B, H, QB]
  const CliResult bad = run(from_file);
  EXPECT_EQ(bad.exit_code, 1) << bad.describe();
  EXPECT_TRUE(has(bad.err, "count.i32")) << bad.describe();
}

// bench mask --quality: one line of reason without a GPU; with one, a tiny grid (3 x 16 x 16:
// 768 tokens, 6 blocks of 128) and a dump of the same size: the report's shape and the
// invariants of the measure (the oracle bounds block-only recall at the same k, fine bits keep
// no more sub-tiles than block-only, recall and error within their ranges).
TEST_F(CliTest, BenchMaskQualityOnATinyGridAndADump) {
  const fs::path database = temp_ / "quality.db";
  std::string why;
  if (!gpu_present(&why)) {
    const CliResult result = run({"--db", database.string(), "bench", "mask", "--quality"});
    EXPECT_EQ(result.exit_code, 2) << result.describe();
    ASSERT_EQ(lines_of(result.err).size(), 1u) << result.describe();
    EXPECT_TRUE(has(result.err, why)) << result.describe();
    return;
  }
  const auto check_report = [](const json& report, std::size_t inputs) {
    ASSERT_EQ(report["inputs"].size(), inputs);
    for (const json& input : report["inputs"]) {
      EXPECT_EQ(input["oracle_density_for_95"].size(), 2u);
      for (double density : input["oracle_density_for_95"]) {
        EXPECT_GT(density, 0.0);
        EXPECT_LE(density, 1.0);
      }
      ASSERT_EQ(input["densities"].size(), 2u);
      for (const json& d : input["densities"]) {
        const double oracle = d["oracle_recall"], hierarchical = d["hierarchical"]["recall"];
        EXPECT_GT(hierarchical, 0.0) << d.dump();
        EXPECT_LE(hierarchical, oracle + 2e-3) << "the oracle bounds any selection of k blocks\n" << d.dump();
        EXPECT_LE(oracle, 1.0 + 1e-3) << d.dump();
        EXPECT_GE(d["hierarchical"]["relative_error"].get<double>(), 0.0) << d.dump();
        EXPECT_GE(d["fine"]["top_k"].get<int>(), d["top_k"].get<int>()) << d.dump();
        EXPECT_LE(d["fine"]["subtile_share"].get<double>(), 1.0) << d.dump();
        EXPECT_GT(d["fine"]["recall"].get<double>(), 0.0) << d.dump();
      }
    }
    EXPECT_EQ(report["targets"].size(), 1u);
  };
  const std::vector<std::string> common = {"--db", database.string(), "bench", "mask", "--quality", "--heads", "2",
                                           "--densities", "0.5", "0.25", "--json"};
  std::vector<std::string> synthetic = common;
  synthetic.insert(synthetic.end(), {"--grid", "3x16x16"});
  const CliResult first = run(synthetic);
  ASSERT_EQ(first.exit_code, 0) << first.describe();
  check_report(parse_json(first), 6);  // 3 mixes x 2 orders

  // The same with random V: the same masks and recall, another output error.
  synthetic.insert(synthetic.end(), {"--synthetic-v", "random"});
  const CliResult random_v = run(synthetic);
  ASSERT_EQ(random_v.exit_code, 0) << random_v.describe();
  const json with_random_v = parse_json(random_v), with_generator_v = parse_json(first);
  check_report(with_random_v, 6);
  for (std::size_t i = 0; i < 6; ++i) {
    const json &a = with_generator_v["inputs"][i], &b = with_random_v["inputs"][i];
    EXPECT_EQ(b["source"].get<std::string>(), a["source"].get<std::string>() + ", random V");
    EXPECT_EQ(b["densities"][0]["hierarchical"]["recall"], a["densities"][0]["hierarchical"]["recall"]) << "V is not in the mask";
    EXPECT_NE(b["densities"][0]["hierarchical"]["relative_error"], a["densities"][0]["hierarchical"]["relative_error"]);
  }

  // The first block kept only for its score: the same oracle, other hierarchical masks (at k = 2
  // of 6 key blocks, a forced first block takes the place of a row's best other block).
  std::vector<std::string> by_score = common;
  by_score.insert(by_score.end(), {"--grid", "3x16x16", "--first-block-by-score"});
  const CliResult first_by_score = run(by_score);
  ASSERT_EQ(first_by_score.exit_code, 0) << first_by_score.describe();
  const json scored = parse_json(first_by_score);
  check_report(scored, 6);
  EXPECT_EQ(scored["first_block_by_score"], true);
  EXPECT_EQ(with_generator_v["first_block_by_score"], false);
  int masks_differ = 0;
  for (std::size_t i = 0; i < 6; ++i)
    for (std::size_t d = 0; d < 2; ++d) {
      const json &a = with_generator_v["inputs"][i]["densities"][d], &b = scored["inputs"][i]["densities"][d];
      EXPECT_EQ(b["oracle_recall"], a["oracle_recall"]);
      masks_differ += b["hierarchical"]["recall"] != a["hierarchical"]["recall"];
    }
  EXPECT_GT(masks_differ, 0) << "--first-block-by-score changed no mask";

  // A dump [H, N, D] float32 (random values), V left to the seed; with the grid, both orders.
  std::mt19937_64 generator(5);
  std::normal_distribution<float> normal;
  std::vector<float> values(2 * 768 * 128);
  for (const char* name : {"q.npy", "k.npy"}) {
    for (float& value : values) value = normal(generator);
    write_bytes(temp_ / name, npy_bytes("<f4", "(2, 768, 128)", raw_bytes(values)));
  }
  std::vector<std::string> dump = common;
  dump.insert(dump.end(), {"--q", (temp_ / "q.npy").string(), "--k", (temp_ / "k.npy").string(), "--grid", "3x16x16"});
  const CliResult second = run(dump);
  ASSERT_EQ(second.exit_code, 0) << second.describe();
  check_report(parse_json(second), 2);

  write_bytes(temp_ / "k.npy", npy_bytes("<f4", "(2, 768, 128)", raw_bytes(std::vector<float>(100))));
  const CliResult truncated = run(dump);
  EXPECT_EQ(truncated.exit_code, 1) << truncated.describe();
  EXPECT_TRUE(has(truncated.err, "truncated")) << truncated.describe();
}

TEST_F(CliTest, BenchPermuteNeedsAGpu) {
  const fs::path database = temp_ / "bench.db";
  std::string why;
  if (!gpu_present(&why)) {
    const CliResult result = run({"--db", database.string(), "bench", "permute"});
    EXPECT_EQ(result.exit_code, 2) << result.describe();
    EXPECT_TRUE(result.out.empty()) << result.describe();
    const std::vector<std::string> lines = lines_of(result.err);
    ASSERT_EQ(lines.size(), 1u) << "exactly one line on stderr\n" << result.describe();
    EXPECT_TRUE(lines[0].starts_with("sparsejit: " + why)) << result.describe();
    EXPECT_TRUE(has(lines[0], "GPU")) << result.describe();
    EXPECT_FALSE(fs::exists(database));
  } else {
    // A small shape: compiles one kernel into a fresh database, times it, records the GPU.
    const CliResult result = run({"--db", database.string(), "bench", "permute", "--tokens", "4096",
                                  "--heads", "2", "--head-dim", "64", "--json"});
    ASSERT_EQ(result.exit_code, 0) << result.describe();
    const json report = parse_json(result);
    EXPECT_GT(report["permute_ms"].value("median", 0.0), 0.0) << result.describe();
    EXPECT_GT(report.value("copy_gb_per_s", 0.0), 0.0) << result.describe();
    EXPECT_EQ(report.value("kernels_compiled", -1) + report.value("kernels_from_database", -1), 1)
        << result.describe();
    const CliResult gpus = run({"--db", database.string(), "db", "gpus", "--json"});
    EXPECT_EQ(parse_json(gpus).size(), 1u) << gpus.describe();
  }
}

// ---------------------------------------------------------------------------------- order

// order: the table of the chosen order and raster, with the library's figures; no database.
TEST_F(CliTest, OrderPrintsTheLocalityOfTheOrderAndOfRaster) {
  const runtime::VideoGrid grid{21, 45, 80};
  const CliResult result = run({"order", "--grid", "21x45x80"});
  ASSERT_EQ(result.exit_code, 0) << result.describe();
  EXPECT_TRUE(result.err.empty()) << result.describe();
  const std::vector<std::string> lines = lines_of(result.out);
  ASSERT_EQ(lines.size(), 6u) << "summary, blank, header, rule, hilbert, raster\n" << result.describe();
  EXPECT_EQ(lines[0], "grid 21x45x80: 75600 video tokens + 0 extra; 591 blocks of 128 video tokens");
  EXPECT_TRUE(lines[2].starts_with("order") && has(lines[2], "mean block box (cells)") &&
              has(lines[2], "non-neighbour steps"))
      << lines[2];
  for (const auto& [line, order] : {std::pair{lines[4], runtime::TokenOrder::hilbert},
                                   std::pair{lines[5], runtime::TokenOrder::raster}}) {
    const runtime::OrderLocality locality =
        runtime::measure_locality(runtime::token_order(order, grid, 0), grid, 128);
    const std::regex row("^" + std::string(to_string(order)) + " +([0-9.]+) +([0-9.]+)%$");
    std::smatch match;
    ASSERT_TRUE(std::regex_match(line, match, row)) << line;
    EXPECT_NEAR(std::stod(match[1]), locality.mean_block_bbox_cells, 0.05) << line;
    EXPECT_NEAR(std::stod(match[2]), 100 * locality.non_neighbour_step_share, 0.005) << line;
  }
  EXPECT_FALSE(fs::exists(xdg_database())) << "order needs no database";
}

// order --json --out: the figures for the order and raster, and the gather indices in the
// file, text tokens last; with raster chosen there is one set of figures.
TEST_F(CliTest, OrderJsonAndTheGatherIndexFile) {
  const runtime::VideoGrid grid{13, 30, 45};
  const fs::path file = temp_ / "order.i32";
  const CliResult result = run({"order", "--grid", "13x30x45", "--extra", "226", "--order", "tile3d",
                                "--tile", "4x8x8", "--block", "64", "--json", "--out", file.string()});
  ASSERT_EQ(result.exit_code, 0) << result.describe();
  const json report = parse_json(result);
  EXPECT_EQ(report["grid"], (json{{"frames", 13}, {"height", 30}, {"width", 45}})) << result.describe();
  EXPECT_EQ(report.value("video_tokens", 0), 17550);
  EXPECT_EQ(report.value("extra_tokens", 0), 226);
  EXPECT_EQ(report.value("order", ""), "tile3d");
  EXPECT_EQ(report["tile"], (json{{"frames", 4}, {"height", 8}, {"width", 8}})) << result.describe();
  EXPECT_EQ(report.value("block_tokens", 0), 64);
  EXPECT_EQ(report.value("video_blocks", 0), (17550 + 63) / 64);
  EXPECT_EQ(report.value("out", ""), file.string());

  const std::vector<int> order = runtime::token_order(runtime::TokenOrder::tile3d, grid, 226, {4, 8, 8});
  const std::vector<int> raster = runtime::token_order(runtime::TokenOrder::raster, grid, 0);
  ASSERT_EQ(report["locality"].size(), 2u) << result.describe();
  for (const auto& [name, expected] : {std::pair{"tile3d", runtime::measure_locality(order, grid, 64)},
                                      std::pair{"raster", runtime::measure_locality(raster, grid, 64)}}) {
    const json& figures = report["locality"][name];
    EXPECT_DOUBLE_EQ(figures.value("mean_block_bbox_cells", 0.0), expected.mean_block_bbox_cells) << name;
    EXPECT_DOUBLE_EQ(figures.value("non_neighbour_step_share", -1.0), expected.non_neighbour_step_share) << name;
  }

  const std::vector<char> bytes = read_bytes(file);
  ASSERT_EQ(bytes.size(), order.size() * sizeof(int));
  std::vector<int> written(order.size());
  std::memcpy(written.data(), bytes.data(), bytes.size());
  EXPECT_EQ(written, order);
  EXPECT_EQ(written.back(), 17550 + 225) << "the text tokens come last, in order";

  const CliResult only_raster = run({"order", "--grid", "13x30x45", "--order", "raster", "--json"});
  ASSERT_EQ(only_raster.exit_code, 0) << only_raster.describe();
  const json raster_report = parse_json(only_raster);
  EXPECT_EQ(raster_report["locality"].size(), 1u) << only_raster.describe();
  EXPECT_FALSE(raster_report.contains("out")) << only_raster.describe();
  EXPECT_FALSE(raster_report.contains("tile")) << only_raster.describe();
}

// Errors past the usage: too many tokens for int32, a file that cannot be written.
TEST_F(CliTest, OrderRefusesGridsBeyondInt32AndSaysWhenTheFileCannotBeWritten) {
  const CliResult too_big = run({"order", "--grid", "2048x1024x1024"});
  EXPECT_EQ(too_big.exit_code, 1) << too_big.describe();
  EXPECT_TRUE(too_big.out.empty()) << too_big.describe();
  ASSERT_EQ(lines_of(too_big.err).size(), 1u) << too_big.describe();
  EXPECT_TRUE(too_big.err.starts_with("sparsejit: error: video grid 2048x1024x1024")) << too_big.describe();
  EXPECT_TRUE(has(too_big.err, "int32")) << too_big.describe();

  const fs::path unwritable = temp_ / "missing-folder" / "order.i32";
  const CliResult no_file = run({"order", "--grid", "4x4x4", "--out", unwritable.string()});
  EXPECT_EQ(no_file.exit_code, 1) << no_file.describe();
  EXPECT_TRUE(no_file.out.empty()) << no_file.describe();
  EXPECT_TRUE(has(no_file.err, "cannot write " + unwritable.string())) << no_file.describe();
}

}  // namespace
}  // namespace sparsejit::testing
