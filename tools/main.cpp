// sparsejit: tune, inspect and use run-time specialized sparse attention kernels.
#include <cstdio>
#include <exception>

#include "tools/cli_common.h"

int main(int argc, char** argv) {
  using namespace sparsejit::tools;
  CLI::App app{"sparsejit: run-time specialized sparse attention for video diffusion transformers.\n"
               "Kernels are compiled with NVRTC for each configuration and kept in a SQLite\n"
               "database (default $SPARSEJIT_DB, else $XDG_CACHE_HOME/sparsejit/tuning.db,\n"
               "else ~/.cache/sparsejit/tuning.db).",
               "sparsejit"};
  app.require_subcommand(1);
  GlobalOptions global;
  app.add_option("--db", global.database, "tuning database (default: see above)");
  add_info_command(app, global);
  add_tune_command(app, global);
  add_precompile_command(app, global);
  add_db_command(app, global);
  add_bench_command(app, global);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  } catch (const std::exception& error) {
    // Subcommand callbacks run inside parse(); their failures land here.
    std::fprintf(stderr, "sparsejit: error: %s\n", error.what());
    return kExitError;
  }
  return global.exit_code;
}
