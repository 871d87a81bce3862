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
  app.fallthrough();  // --db may come after the subcommand too
  app.failure_message(CLI::FailureMessage::help);  // a usage error prints the usage
  GlobalOptions global;
  app.add_option("--db", global.database, "tuning database (default: see above)");
  add_info_command(app, global);
  add_tune_command(app, global);
  add_precompile_command(app, global);
  add_db_command(app, global);
  add_bench_command(app, global);
  add_order_command(app, global);
  add_report_command(app, global);
  add_profile_command(app, global);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    if (error.get_exit_code() == 0) return app.exit(error);  // --help
    // CLI11 checks for a missing subcommand before unexpected words: name the word.
    if (dynamic_cast<const CLI::RequiredError*>(&error) != nullptr && app.remaining_size() > 0)
      std::fprintf(stderr, "sparsejit: unknown subcommand or option '%s'\n",
                   app.remaining().front().c_str());
    app.exit(error);
    return kExitError;  // usage errors exit 1, like every other error
  } catch (const std::exception& error) {
    // Subcommand callbacks run inside parse(); their failures land here.
    std::fprintf(stderr, "sparsejit: error: %s\n", error.what());
    return kExitError;
  }
  return global.exit_code;
}
