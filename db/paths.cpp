#include "db/paths.h"

#include <cstdlib>
#include <stdexcept>
#include <string_view>

namespace sparsejit::db {
namespace {

std::string_view environment(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::string_view(value) : std::string_view();
}

}  // namespace

std::filesystem::path default_database_path() {
  const std::filesystem::path relative = std::filesystem::path("sparsejit") / "tuning.db";
  if (const std::string_view explicit_path = environment("SPARSEJIT_DB"); !explicit_path.empty()) {
    return explicit_path;
  }
  if (const std::filesystem::path cache = environment("XDG_CACHE_HOME"); cache.is_absolute()) {
    return cache / relative;
  }
  if (const std::string_view home = environment("HOME"); !home.empty()) {
    return std::filesystem::path(home) / ".cache" / relative;
  }
  throw std::runtime_error(
      "cannot determine the default tuning database path: SPARSEJIT_DB, XDG_CACHE_HOME and HOME are all "
      "unset or empty; set one of them or pass the database path explicitly (--db)");
}

}  // namespace sparsejit::db
