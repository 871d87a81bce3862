// sparsejit db: inspect a tuning database (gpus, cubins, stats, problems, best, trials).
// Tables for people, --json for scripts. The commands that move rows between databases or
// remove them are in db_exchange_command.cpp.
#include <algorithm>
#include <iostream>
#include <map>
#include <optional>
#include <stdexcept>

#include "tools/cli_common.h"

namespace sparsejit::tools {
namespace {

int run_gpus(const GlobalOptions& global, bool json) {
  db::Database database = open_existing_database(database_path(global));
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
  if (json) print_json(rows);
  else if (rows.empty()) std::cout << "no GPUs recorded in " << database.path().string() << "\n";
  else std::cout << table.render();
  return kExitOk;
}

int run_cubins(const GlobalOptions& global, bool json, const std::string& family) {
  db::Database database = open_existing_database(database_path(global));
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
  if (json) print_json(rows);
  else if (rows.empty()) std::cout << "no CUBINs stored in " << database.path().string() << "\n";
  else std::cout << table.render();
  return kExitOk;
}

int run_stats(const GlobalOptions& global, bool json) {
  db::Database database = open_existing_database(database_path(global));
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
    print_json(report);
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

// The GPU rows by id, for naming the GPU of a best config or trial.
std::map<std::int64_t, db::StoredGpu> gpus_by_id(const db::Database& database) {
  std::map<std::int64_t, db::StoredGpu> gpus;
  for (db::StoredGpu& gpu : database.list_gpus()) gpus.emplace(gpu.id, std::move(gpu));
  return gpus;
}

std::string gpu_label(const std::map<std::int64_t, db::StoredGpu>& gpus, std::int64_t id) {
  const auto found = gpus.find(id);
  return std::to_string(id) + " " + (found != gpus.end() ? found->second.gpu.name : "?");
}

std::string gpu_fingerprint(const std::map<std::int64_t, db::StoredGpu>& gpus, std::int64_t id) {
  const auto found = gpus.find(id);
  return found != gpus.end() ? found->second.gpu.fingerprint() : std::string();
}

std::string format_ms(const std::optional<double>& ms) { return ms ? format_fixed(*ms, 4) : "-"; }

// The first line of `text`, cut to `width` characters (failure messages can be whole NVRTC logs).
std::string first_line(const std::string& text, std::size_t width) {
  const std::string line = text.substr(0, text.find('\n'));
  const bool cut = line.size() > width || line.size() < text.size();
  return cut ? line.substr(0, width) + "..." : line;
}

nlohmann::json optional_json(const std::optional<double>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

nlohmann::json best_config_json(const db::BestConfig& best, const std::string& fingerprint) {
  return {{"gpu_id", best.gpu_id},
          {"gpu_fingerprint", fingerprint},
          {"family", best.family},
          {"problem_key", best.problem_key},
          {"config_json", best.config_json},
          {"median_ms", best.median_ms},
          {"trial_id", best.trial_id},
          {"updated_at", best.updated_at}};
}

struct ListingOptions {
  bool json = false;
  std::string gpu;          // --gpu: an id or a fingerprint; empty: every GPU
  std::string family;       // --family; empty: every family
  std::string problem_key;  // --problem (trials only)
};

int run_problems(const GlobalOptions& global, const ListingOptions& options) {
  db::Database database = open_existing_database(database_path(global));
  const std::optional<std::int64_t> gpu = selected_gpu(database, options.gpu);
  const std::map<std::int64_t, db::StoredGpu> gpus = gpus_by_id(database);
  nlohmann::json rows = nlohmann::json::array();
  Table table({"GPU", "family", "problem", "ok", "failed", "incorrect", "best ms", "best config"});
  for (const db::ProblemSummary& problem : database.list_problems()) {
    if ((gpu && problem.gpu_id != *gpu) || (!options.family.empty() && problem.family != options.family)) continue;
    const std::string fingerprint = gpu_fingerprint(gpus, problem.gpu_id);
    rows.push_back({{"gpu_id", problem.gpu_id},
                    {"gpu_fingerprint", fingerprint},
                    {"family", problem.family},
                    {"problem_key", problem.problem_key},
                    {"trials",
                     {{"ok", problem.ok_trials}, {"failed", problem.failed_trials},
                      {"incorrect", problem.incorrect_trials}}},
                    {"best", problem.best ? best_config_json(*problem.best, fingerprint) : nlohmann::json(nullptr)}});
    table.add({gpu_label(gpus, problem.gpu_id), problem.family, problem.problem_key,
               std::to_string(problem.ok_trials), std::to_string(problem.failed_trials),
               std::to_string(problem.incorrect_trials),
               problem.best ? format_ms(problem.best->median_ms) : "-",
               problem.best ? problem.best->config_json : "(none: no trial was ok)"});
  }
  if (options.json) print_json(rows);
  else if (rows.empty()) std::cout << "no tuned problems in " << database.path().string() << "\n";
  else std::cout << table.render();
  return kExitOk;
}

int run_best(const GlobalOptions& global, const ListingOptions& options) {
  db::Database database = open_existing_database(database_path(global));
  const std::optional<std::int64_t> gpu = selected_gpu(database, options.gpu);
  const std::map<std::int64_t, db::StoredGpu> gpus = gpus_by_id(database);
  nlohmann::json rows = nlohmann::json::array();
  Table table({"GPU", "family", "problem", "median ms", "config", "updated"});
  for (const db::BestConfig& best : database.list_best_configs()) {
    if ((gpu && best.gpu_id != *gpu) || (!options.family.empty() && best.family != options.family)) continue;
    rows.push_back(best_config_json(best, gpu_fingerprint(gpus, best.gpu_id)));
    table.add({gpu_label(gpus, best.gpu_id), best.family, best.problem_key, format_ms(best.median_ms),
               best.config_json, best.updated_at});
  }
  if (options.json) print_json(rows);
  else if (rows.empty()) std::cout << "no best configs in " << database.path().string() << "\n";
  else std::cout << table.render();
  return kExitOk;
}

int run_trials(const GlobalOptions& global, const ListingOptions& options) {
  db::Database database = open_existing_database(database_path(global));
  const db::TrialFilter filter{.gpu_id = selected_gpu(database, options.gpu),
                               .family = options.family,
                               .problem_key = options.problem_key};
  const std::map<std::int64_t, db::StoredGpu> gpus = gpus_by_id(database);
  nlohmann::json rows = nlohmann::json::array();
  Table table({"id", "GPU", "family", "status", "median ms", "p20-p80 ms", "rel error", "best", "config", "message"});
  for (const db::StoredTrial& stored : database.list_trials(filter)) {
    const db::TrialRecord& trial = stored.trial;
    const std::optional<db::BestConfig> best = database.find_best(trial.gpu_id, trial.family, trial.problem_key);
    const bool is_best = best && best->trial_id == stored.id;
    rows.push_back({{"id", stored.id},
                    {"gpu_id", trial.gpu_id},
                    {"gpu_fingerprint", gpu_fingerprint(gpus, trial.gpu_id)},
                    {"family", trial.family},
                    {"problem_key", trial.problem_key},
                    {"config_json", trial.config_json},
                    {"status", db::to_string(trial.status)},
                    {"median_ms", optional_json(trial.median_ms)},
                    {"p20_ms", optional_json(trial.p20_ms)},
                    {"p80_ms", optional_json(trial.p80_ms)},
                    {"rel_error", optional_json(trial.rel_error)},
                    {"sm_clock_khz", trial.sm_clock_khz},
                    {"cubin_key", trial.cubin_key.empty() ? nlohmann::json(nullptr) : nlohmann::json(trial.cubin_key)},
                    {"message", trial.message},
                    {"created_at", stored.created_at},
                    {"best", is_best}});
    table.add({std::to_string(stored.id), gpu_label(gpus, trial.gpu_id), trial.family,
               std::string(db::to_string(trial.status)), format_ms(trial.median_ms),
               trial.p20_ms && trial.p80_ms ? format_ms(trial.p20_ms) + "-" + format_ms(trial.p80_ms) : "-",
               trial.rel_error ? format_fixed(*trial.rel_error, 6) : "-", is_best ? "*" : "", trial.config_json,
               first_line(trial.message, 60)});
  }
  if (options.json) print_json(rows);
  else if (rows.empty())
    std::cout << "no trials of problem '" << options.problem_key << "' in " << database.path().string()
              << " ('sparsejit db problems' lists the problems)\n";
  else std::cout << table.render();
  return kExitOk;
}

// The sparsity profiles of `sparsejit profile`: per (model, step, layer) for people, every
// head's density for scripts.
int run_profiles(const GlobalOptions& global, const std::string& model, bool json) {
  db::Database database = open_existing_database(database_path(global));
  const std::vector<db::SparsityProfile> profiles =
      model.empty() ? database.list_sparsity_profiles() : database.list_sparsity_profiles(model);
  nlohmann::json rows = nlohmann::json::array();
  Table table({"model", "step", "layer", "heads", "min density", "median density", "max density", "tau"});
  for (std::size_t first = 0; first < profiles.size();) {  // rows are ordered by model, step, layer, head
    const db::SparsityProfile& key = profiles[first];
    std::size_t end = first;
    std::vector<double> densities;
    for (; end < profiles.size() && profiles[end].model == key.model && profiles[end].step == key.step &&
           profiles[end].layer == key.layer;
         ++end)
      densities.push_back(profiles[end].density);
    rows.push_back({{"model", key.model}, {"step", key.step}, {"layer", key.layer}, {"tau", key.tau},
                    {"densities", densities}});
    table.add({key.model, std::to_string(key.step), std::to_string(key.layer), std::to_string(densities.size()),
               format_fixed(*std::min_element(densities.begin(), densities.end()), 3),
               format_fixed(median_of(densities), 3),
               format_fixed(*std::max_element(densities.begin(), densities.end()), 3), format_fixed(key.tau, 3)});
    first = end;
  }
  if (json) print_json(rows);
  else if (rows.empty())
    std::cout << "no sparsity profiles" << (model.empty() ? "" : " of model '" + model + "'") << " in "
              << database.path().string() << " ('sparsejit profile' writes them)\n";
  else std::cout << table.render();
  return kExitOk;
}

}  // namespace

void add_db_command(CLI::App& app, GlobalOptions& global) {
  CLI::App* db = app.add_subcommand(
      "db", "Inspect and manage tuning databases: list, export and import, merge, diff, prune.");
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

  auto problems_options = std::make_shared<ListingOptions>();
  CLI::App* problems = db->add_subcommand(
      "problems", "tuned problems per GPU: trial counts by status and the best config");
  problems->add_flag("--json", problems_options->json, "print JSON");
  problems->add_option("--gpu", problems_options->gpu, "only this GPU (id or fingerprint, see 'db gpus')");
  problems->add_option("--family", problems_options->family, "only this kernel family");
  problems->callback([&global, problems_options] { global.exit_code = run_problems(global, *problems_options); });

  auto best_options = std::make_shared<ListingOptions>();
  CLI::App* best = db->add_subcommand("best", "the best config of every tuned problem per GPU");
  best->add_flag("--json", best_options->json, "print JSON");
  best->add_option("--gpu", best_options->gpu, "only this GPU (id or fingerprint, see 'db gpus')");
  best->add_option("--family", best_options->family, "only this kernel family");
  best->callback([&global, best_options] { global.exit_code = run_best(global, *best_options); });

  auto trials_options = std::make_shared<ListingOptions>();
  CLI::App* trials = db->add_subcommand(
      "trials", "every trial of a problem (ok, failed and incorrect ones with their message); * marks the best");
  trials->add_option("--problem", trials_options->problem_key, "the problem key, as 'db problems' shows it")
      ->required();
  trials->add_option("--family", trials_options->family, "only this kernel family");
  trials->add_option("--gpu", trials_options->gpu, "only this GPU (id or fingerprint, see 'db gpus')");
  trials->add_flag("--json", trials_options->json, "print JSON");
  trials->callback([&global, trials_options] { global.exit_code = run_trials(global, *trials_options); });

  auto profiles_model = std::make_shared<std::string>();
  auto profiles_json = std::make_shared<bool>(false);
  CLI::App* profiles = db->add_subcommand(
      "profiles", "sparsity profiles (sparsejit profile): per model, step and layer, the heads' densities");
  profiles->add_option("--model", *profiles_model, "only this model");
  profiles->add_flag("--json", *profiles_json, "print JSON: every head's density");
  profiles->callback([&global, profiles_model, profiles_json] {
    global.exit_code = run_profiles(global, *profiles_model, *profiles_json);
  });

  add_db_exchange_commands(*db, global);
}

}  // namespace sparsejit::tools
