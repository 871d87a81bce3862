// sparsejit db: inspect a tuning database. Tables for people, --json for scripts.
#include <iostream>

#include "tools/cli_common.h"

namespace sparsejit::tools {
namespace {

void print(const nlohmann::json& json) { std::cout << json.dump(2) << "\n"; }

int run_gpus(const GlobalOptions& global, bool json) {
  db::Database database = open_existing_database(global);
  nlohmann::json rows = nlohmann::json::array();
  Table table({"id", "name", "cc", "SMs", "memory", "driver", "uuid", "last seen"});
  for (const db::StoredGpu& stored : database.list_gpus()) {
    const db::GpuRecord& gpu = stored.gpu;
    const std::string cc = std::to_string(gpu.cc_major) + "." + std::to_string(gpu.cc_minor);
    rows.push_back({{"id", stored.id},
                    {"name", gpu.name},
                    {"compute_capability", cc},
                    {"sm_count", gpu.sm_count},
                    {"memory_bytes", gpu.memory_bytes},
                    {"driver_version", gpu.driver_version},
                    {"uuid", gpu.uuid},
                    {"sm_clock_khz", gpu.sm_clock_khz},
                    {"memory_clock_khz", gpu.memory_clock_khz},
                    {"fingerprint", gpu.fingerprint()},
                    {"first_seen", stored.first_seen},
                    {"last_seen", stored.last_seen}});
    table.add({std::to_string(stored.id), gpu.name, cc, std::to_string(gpu.sm_count),
               format_bytes(gpu.memory_bytes), gpu.driver_version, gpu.uuid, stored.last_seen});
  }
  if (json) print(rows);
  else if (rows.empty()) std::cout << "no GPUs recorded in " << database.path().string() << "\n";
  else std::cout << table.render();
  return kExitOk;
}

int run_cubins(const GlobalOptions& global, bool json, const std::string& family) {
  db::Database database = open_existing_database(global);
  nlohmann::json rows = nlohmann::json::array();
  Table table({"family", "target", "specialization", "size", "compile ms", "NVRTC", "key"});
  for (const db::CubinSummary& cubin : database.list_cubins()) {
    if (!family.empty() && cubin.family != family) continue;
    rows.push_back({{"key", cubin.key},
                    {"family", cubin.family},
                    {"target", cubin.target},
                    {"specialization", cubin.specialization},
                    {"nvrtc_version", cubin.nvrtc_version},
                    {"binary_bytes", cubin.binary_bytes},
                    {"compile_ms", cubin.compile_ms},
                    {"created_at", cubin.created_at}});
    table.add({cubin.family, cubin.target, cubin.specialization, format_bytes(cubin.binary_bytes),
               format_fixed(cubin.compile_ms, 1), cubin.nvrtc_version, cubin.key.substr(0, 12)});
  }
  if (json) print(rows);
  else if (rows.empty()) std::cout << "no CUBINs stored in " << database.path().string() << "\n";
  else std::cout << table.render();
  return kExitOk;
}

int run_stats(const GlobalOptions& global, bool json) {
  db::Database database = open_existing_database(global);
  const db::DatabaseStats stats = database.stats();
  const nlohmann::json report = {{"path", database.path().string()},
                                 {"schema_version", stats.schema_version},
                                 {"file_bytes", stats.file_bytes},
                                 {"gpus", stats.gpus},
                                 {"cubins", stats.cubins},
                                 {"cubin_bytes", stats.cubin_bytes},
                                 {"trials", stats.trials},
                                 {"best_configs", stats.best_configs},
                                 {"sparsity_profiles", stats.sparsity_profiles}};
  if (json) {
    print(report);
    return kExitOk;
  }
  Table table({"what", "value"});
  table.add({"path", database.path().string()});
  table.add({"schema version", std::to_string(stats.schema_version)});
  table.add({"size", format_bytes(stats.file_bytes)});
  table.add({"GPUs", std::to_string(stats.gpus)});
  table.add({"CUBINs", std::to_string(stats.cubins) + " (" + format_bytes(stats.cubin_bytes) + ")"});
  table.add({"trials", std::to_string(stats.trials)});
  table.add({"best configs", std::to_string(stats.best_configs)});
  table.add({"sparsity profiles", std::to_string(stats.sparsity_profiles)});
  std::cout << table.render();
  return kExitOk;
}

}  // namespace

void add_db_command(CLI::App& app, GlobalOptions& global) {
  CLI::App* db = app.add_subcommand("db", "Inspect a tuning database (read-only).");
  db->require_subcommand(1);

  auto gpus_json = std::make_shared<bool>(false);
  CLI::App* gpus = db->add_subcommand("gpus", "GPUs recorded in the database");
  gpus->add_flag("--json", *gpus_json, "print JSON");
  gpus->callback([&global, gpus_json] { global.exit_code = run_gpus(global, *gpus_json); });

  auto cubins_json = std::make_shared<bool>(false);
  auto cubins_family = std::make_shared<std::string>();
  CLI::App* cubins = db->add_subcommand("cubins", "compiled specializations stored in the database");
  cubins->add_flag("--json", *cubins_json, "print JSON");
  cubins->add_option("--family", *cubins_family, "only this kernel family");
  cubins->callback([&global, cubins_json, cubins_family] {
    global.exit_code = run_cubins(global, *cubins_json, *cubins_family);
  });

  auto stats_json = std::make_shared<bool>(false);
  CLI::App* stats = db->add_subcommand("stats", "size and row counts of the database");
  stats->add_flag("--json", *stats_json, "print JSON");
  stats->callback([&global, stats_json] { global.exit_code = run_stats(global, *stats_json); });
}

}  // namespace sparsejit::tools
