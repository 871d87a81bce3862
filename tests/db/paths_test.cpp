#include "db/paths.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>

namespace sparsejit::db {
namespace {

// Sets or unsets one environment variable for the life of the object, then restores it.
class ScopedEnvironmentVariable {
 public:
  ScopedEnvironmentVariable(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) saved_ = old;
    apply(value);
  }
  ScopedEnvironmentVariable(const ScopedEnvironmentVariable&) = delete;
  ScopedEnvironmentVariable& operator=(const ScopedEnvironmentVariable&) = delete;
  ~ScopedEnvironmentVariable() { apply(saved_); }

 private:
  void apply(const std::optional<std::string>& value) {
    if (value) {
      ::setenv(name_, value->c_str(), /*overwrite=*/1);
    } else {
      ::unsetenv(name_);
    }
  }

  const char* name_;
  std::optional<std::string> saved_;
};

struct Environment {
  std::optional<std::string> sparsejit_db;
  std::optional<std::string> xdg_cache_home;
  std::optional<std::string> home;
};

std::filesystem::path default_path_with(const Environment& environment) {
  ScopedEnvironmentVariable sparsejit_db("SPARSEJIT_DB", environment.sparsejit_db);
  ScopedEnvironmentVariable xdg_cache_home("XDG_CACHE_HOME", environment.xdg_cache_home);
  ScopedEnvironmentVariable home("HOME", environment.home);
  return default_database_path();
}

TEST(DefaultDatabasePath, SparsejitDbComesFirst) {
  EXPECT_EQ(default_path_with({"/data/my.db", "/xdg", "/home/u"}), "/data/my.db");
  EXPECT_EQ(default_path_with({"relative.db", std::nullopt, std::nullopt}), "relative.db");
}

TEST(DefaultDatabasePath, ThenXdgCacheHome) {
  EXPECT_EQ(default_path_with({"", "/xdg", "/home/u"}), "/xdg/sparsejit/tuning.db");
  EXPECT_EQ(default_path_with({std::nullopt, "/xdg", std::nullopt}), "/xdg/sparsejit/tuning.db");
}

TEST(DefaultDatabasePath, ThenHomeCache) {
  EXPECT_EQ(default_path_with({std::nullopt, std::nullopt, "/home/u"}), "/home/u/.cache/sparsejit/tuning.db");
  EXPECT_EQ(default_path_with({"", "", "/home/u"}), "/home/u/.cache/sparsejit/tuning.db");
  EXPECT_EQ(default_path_with({std::nullopt, "relative/xdg", "/home/u"}), "/home/u/.cache/sparsejit/tuning.db")
      << "a relative XDG_CACHE_HOME is ignored";
}

TEST(DefaultDatabasePath, ThrowsWhenNothingIsSet) {
  try {
    default_path_with({std::nullopt, std::nullopt, ""});
    FAIL() << "no variable set must throw";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("SPARSEJIT_DB"), std::string::npos) << error.what();
  }
}

TEST(DefaultDatabasePath, RestoresTheEnvironment) {
  const char* before = std::getenv("HOME");
  const std::optional<std::string> home = before ? std::optional<std::string>(before) : std::nullopt;
  default_path_with({"/x.db", std::nullopt, "/elsewhere"});
  const char* after = std::getenv("HOME");
  EXPECT_EQ(after ? std::optional<std::string>(after) : std::nullopt, home);
}

}  // namespace
}  // namespace sparsejit::db
