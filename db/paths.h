// Where the tuning database lives when the user names none.
#pragma once

#include <filesystem>

namespace sparsejit::db {

// The first that applies:
//   1. $SPARSEJIT_DB, if set and non-empty (used as given);
//   2. $XDG_CACHE_HOME/sparsejit/tuning.db, if XDG_CACHE_HOME is an absolute path
//      (the XDG spec says to ignore a relative one);
//   3. $HOME/.cache/sparsejit/tuning.db, if HOME is set and non-empty.
// Throws std::runtime_error when none applies. The directory is not created here;
// Database::open creates it.
std::filesystem::path default_database_path();

}  // namespace sparsejit::db
