// What the CLI test files share: the CliTest fixture (a child process with HOME and
// XDG_CACHE_HOME in a temporary directory) and small checks on its output.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "db/database.h"
#include "tests/support/test_support.h"
#include "tests/tools/cli_runner.h"

namespace sparsejit::testing {

namespace fs = std::filesystem;
using nlohmann::json;

inline bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Parses `text` as JSON; a parse failure fails the test with the text.
inline json parse_json(const CliResult& result) {
  const json parsed = json::parse(result.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(parsed.is_discarded()) << "stdout is not JSON\n" << result.describe();
  return parsed;
}

class CliTest : public ::testing::Test {
 protected:
  CliTest() {
    fs::create_directories(home());
    fs::create_directories(xdg());
  }
  fs::path home() const { return temp_ / "home"; }
  fs::path xdg() const { return temp_ / "xdg"; }
  fs::path xdg_database() const { return xdg() / "sparsejit" / "tuning.db"; }
  fs::path home_database() const { return home() / ".cache" / "sparsejit" / "tuning.db"; }

  // HOME and XDG_CACHE_HOME in the temp dir, SPARSEJIT_DB unset; `extra` replaces them.
  EnvironmentOverrides environment(const EnvironmentOverrides& extra = {}) const {
    EnvironmentOverrides overrides = {{"HOME", home().string()},
                                      {"XDG_CACHE_HOME", xdg().string()},
                                      {"SPARSEJIT_DB", std::nullopt}};
    for (const auto& [name, value] : extra) overrides[name] = value;
    return overrides;
  }
  CliResult run(const std::vector<std::string>& args, const EnvironmentOverrides& extra = {}) const {
    return run_cli(args, environment(extra), temp_.path());
  }
  // A valid, empty sparsejit database at `path` (created in-process: no compile needed).
  static void create_database(const fs::path& path) { db::Database::open(path); }

  TempDirectory temp_;
};

}  // namespace sparsejit::testing
