// sparsejit db export|import|merge|diff|prune: move tuning results between databases, compare
// two databases, remove CUBINs no run will load. Every write is one transaction
// (db/snapshot.h, Database::prune_cubins); a failed command leaves the database as it was.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "db/compare.h"
#include "db/snapshot.h"
#include "db/tuning_file.h"
#include "jit/nvrtc_compiler.h"
#include "tools/cli_common.h"

namespace sparsejit::tools {
namespace {

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string() + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw std::runtime_error("cannot read " + path.string() + ": " + std::strerror(errno));
  return text.str();
}

// Writes `text` to a temporary file beside `path`, then renames it over `path`: readers never
// see half a file, and a failed export leaves an older file in place.
void write_text_file_atomically(const std::filesystem::path& path, const std::string& text) {
  const std::filesystem::path temporary = path.string() + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) {
      const std::string reason = std::strerror(errno);
      std::error_code ignored;
      std::filesystem::remove(temporary, ignored);
      throw std::runtime_error("cannot write " + path.string() + ": " + reason);
    }
  }
  std::filesystem::rename(temporary, path);
}

std::string counted(std::size_t count, const std::string& noun) {
  return std::to_string(count) + " " + noun;
}

// ---- export

struct ExportOptions {
  std::string out;  // empty: stdout
  bool with_cubins = false;
};

int run_export(const GlobalOptions& global, const ExportOptions& options) {
  const db::Database database = open_existing_database(database_path(global));
  const db::TuningSnapshot snapshot = database.read_snapshot(options.with_cubins);
  const std::string text = db::write_tuning_file(snapshot);
  if (options.out.empty()) {
    std::cout << text;
    return kExitOk;
  }
  write_text_file_atomically(options.out, text);
  std::cout << "wrote " << options.out << " (" << format_bytes(static_cast<std::int64_t>(text.size()))
            << "): " << counted(snapshot.gpus.size(), "GPUs") << ", " << counted(snapshot.trials.size(), "trials")
            << ", " << counted(snapshot.best_configs.size(), "best configs") << ", "
            << counted(snapshot.sparsity_profiles.size(), "sparsity profiles") << ", "
            << (options.with_cubins ? counted(snapshot.cubins.size(), "CUBINs") : "no CUBINs (--with-cubins adds them)")
            << "\n";
  return kExitOk;
}

// ---- import and merge: both apply a snapshot and report what it did

void print_import_summary(const db::ImportSummary& summary, const std::string& verb,
                          const std::string& source, const std::filesystem::path& target, bool json) {
  const std::pair<const char*, const db::ApplyCounts*> tables[] = {
      {"gpus", &summary.gpus},
      {"trials", &summary.trials},
      {"best_configs", &summary.best_configs},
      {"sparsity_profiles", &summary.sparsity_profiles},
      {"cubins", &summary.cubins}};
  if (json) {
    nlohmann::json report = {{"source", source}, {"database", target.string()}};
    for (const auto& [name, counts] : tables)
      report[name] = {{"added", counts->added}, {"updated", counts->updated}, {"unchanged", counts->unchanged}};
    print_json(report);
    return;
  }
  std::cout << verb << " " << source << " into " << target.string() << "\n";
  Table table({"table", "added", "updated", "unchanged"});
  for (const auto& [name, counts] : tables)
    table.add({name, std::to_string(counts->added), std::to_string(counts->updated),
               std::to_string(counts->unchanged)});
  std::cout << table.render();
}

struct ImportOptions {
  std::string source;  // the tuning file (import) or the other database (merge)
  bool json = false;
};

int run_import(const GlobalOptions& global, const ImportOptions& options) {
  // The whole file is read and checked before the database is opened: a file that is refused
  // leaves the database untouched (and does not create it).
  db::TuningSnapshot snapshot;
  try {
    snapshot = db::read_tuning_file(read_text_file(options.source));
  } catch (const db::TuningFileError& error) {
    throw std::runtime_error(options.source + ": " + error.what() + "; nothing was imported");
  }
  db::Database database = db::Database::open(database_path(global));
  const db::ImportSummary summary = database.import_snapshot(snapshot);
  print_import_summary(summary, "imported", options.source, database.path(), options.json);
  return kExitOk;
}

int run_merge(const GlobalOptions& global, const ImportOptions& options) {
  const std::filesystem::path target = database_path(global);
  std::error_code ignored;
  if (std::filesystem::equivalent(options.source, target, ignored))
    throw std::runtime_error(options.source + " is the database itself (--db); name another database to merge");
  const db::Database other = open_existing_database(options.source);
  const db::TuningSnapshot snapshot = other.read_snapshot(/*with_cubins=*/true);
  db::Database database = db::Database::open(target);
  const db::ImportSummary summary = database.import_snapshot(snapshot);
  print_import_summary(summary, "merged", options.source, database.path(), options.json);
  return kExitOk;
}

// ---- diff

struct DiffOptions {
  std::string first;   // A, or B when `second` is empty (then A is --db)
  std::string second;  // B, or empty
  bool json = false;
};

nlohmann::json side_json(const std::optional<db::BestConfig>& best) {
  if (!best) return nullptr;
  return {{"config_json", best->config_json}, {"median_ms", best->median_ms}};
}

int run_diff(const GlobalOptions& global, const DiffOptions& options) {
  const bool both_named = !options.second.empty();
  const std::filesystem::path a_path = both_named ? std::filesystem::path(options.first) : database_path(global);
  const std::filesystem::path b_path = both_named ? options.second : options.first;
  const db::Database a = open_existing_database(a_path);
  const db::Database b = open_existing_database(b_path);
  const std::vector<db::BestConfigDifference> differences = db::compare_best_configs(a, b);

  std::map<db::BestConfigComparison, std::int64_t> counts;
  nlohmann::json rows = nlohmann::json::array();
  Table table({"comparison", "GPU", "family", "problem", "A ms", "B ms", "B/A", "A config", "B config"});
  for (const db::BestConfigDifference& difference : differences) {
    ++counts[difference.comparison];
    const std::optional<double> ratio = difference.b_over_a();
    rows.push_back({{"comparison", db::to_string(difference.comparison)},
                    {"gpu_fingerprint", difference.gpu_fingerprint},
                    {"family", difference.family},
                    {"problem_key", difference.problem_key},
                    {"a", side_json(difference.a)},
                    {"b", side_json(difference.b)},
                    {"b_over_a", ratio ? nlohmann::json(*ratio) : nlohmann::json(nullptr)}});
    const auto ms = [](const std::optional<db::BestConfig>& best) {
      return best ? format_fixed(best->median_ms, 4) : "-";
    };
    table.add({std::string(db::to_string(difference.comparison)), difference.gpu_fingerprint, difference.family,
               difference.problem_key, ms(difference.a), ms(difference.b), ratio ? format_fixed(*ratio, 3) : "-",
               difference.a ? difference.a->config_json : "-", difference.b ? difference.b->config_json : "-"});
  }
  using enum db::BestConfigComparison;
  if (options.json) {
    nlohmann::json summary;
    for (const db::BestConfigComparison comparison : {only_in_a, only_in_b, different_config, same_config})
      summary[std::string(db::to_string(comparison))] = counts[comparison];
    print_json({{"a", a.path().string()}, {"b", b.path().string()}, {"summary", summary}, {"problems", rows}});
    return kExitOk;
  }
  std::cout << "A  " << a.path().string() << "\nB  " << b.path().string() << "\n";
  if (!differences.empty()) std::cout << table.render();
  std::cout << differences.size() << " problems with a best config: " << counts[only_in_a] << " only in A, "
            << counts[only_in_b] << " only in B, " << counts[different_config] << " with different configs, "
            << counts[same_config] << " the same\n";
  return kExitOk;
}

// ---- prune

struct PruneOptions {
  bool dry_run = false;
  bool json = false;
};

std::string_view reason_text(db::PruneReason reason) {
  switch (reason) {
    case db::PruneReason::other_nvrtc: return "other NVRTC";
    case db::PruneReason::superseded: return "a newer build of its source";
    case db::PruneReason::not_needed_by_best_configs: break;
  }
  return "no best config uses it";
}

std::string_view reason_token(db::PruneReason reason) {
  switch (reason) {
    case db::PruneReason::other_nvrtc: return "other_nvrtc";
    case db::PruneReason::superseded: return "superseded";
    case db::PruneReason::not_needed_by_best_configs: break;
  }
  return "not_needed_by_best_configs";
}

int run_prune(const GlobalOptions& global, const PruneOptions& options) {
  db::Database database = open_existing_database(database_path(global), /*writable=*/!options.dry_run);
  const std::string nvrtc = jit::nvrtc_version().to_string();
  const db::PruneReport report = database.prune_cubins(nvrtc, options.dry_run);
  std::optional<db::VacuumReport> vacuum;
  if (!options.dry_run) vacuum = database.vacuum();

  if (options.json) {
    nlohmann::json cubins = nlohmann::json::array();
    for (const db::PrunedCubin& pruned : report.cubins)
      cubins.push_back({{"key", pruned.cubin.key},
                        {"family", pruned.cubin.family},
                        {"target", pruned.cubin.target},
                        {"specialization", pruned.cubin.specialization},
                        {"nvrtc_version", pruned.cubin.nvrtc_version},
                        {"binary_bytes", pruned.cubin.binary_bytes},
                        {"reason", reason_token(pruned.reason)}});
    nlohmann::json out = {{"database", database.path().string()}, {"dry_run", options.dry_run},
                          {"nvrtc_version", nvrtc},           {"cubins", cubins},
                          {"binary_bytes", report.binary_bytes}};
    if (vacuum) {
      out["file_bytes_before"] = vacuum->file_bytes_before;
      out["file_bytes_after"] = vacuum->file_bytes_after;
      out["checkpointed"] = vacuum->checkpointed;
    }
    print_json(out);
    return kExitOk;
  }
  if (!report.cubins.empty()) {
    Table table({"family", "target", "specialization", "size", "NVRTC", "why", "key"});
    for (const db::PrunedCubin& pruned : report.cubins)
      table.add({pruned.cubin.family, pruned.cubin.target, pruned.cubin.specialization,
                 format_bytes(pruned.cubin.binary_bytes), pruned.cubin.nvrtc_version,
                 std::string(reason_text(pruned.reason)), pruned.cubin.key.substr(0, 12)});
    std::cout << table.render();
  }
  const std::string what = counted(report.cubins.size(), "CUBINs") + " (" + format_bytes(report.binary_bytes) + ")";
  if (options.dry_run) {
    std::cout << "dry run: would remove " << what << " from " << database.path().string()
              << "; trials stay. Run without --dry-run to remove them.\n";
    return kExitOk;
  }
  std::cout << "removed " << what << " from " << database.path().string() << "; trials stay. File "
            << format_bytes(vacuum->file_bytes_before) << " -> " << format_bytes(vacuum->file_bytes_after) << "\n";
  if (!vacuum->checkpointed)
    std::cout << "another process is reading the database: the file shrinks once it is done\n";
  return kExitOk;
}

}  // namespace

void add_db_exchange_commands(CLI::App& db, GlobalOptions& global) {
  auto export_options = std::make_shared<ExportOptions>();
  CLI::App* export_command = db.add_subcommand(
      "export", "write the database's GPUs, trials, best configs and sparsity profiles as a JSON tuning file "
                "(format sparsejit-tuning, version 1; see README)");
  export_command->add_option("--out", export_options->out, "the file to write (default: stdout)");
  export_command->add_flag("--with-cubins", export_options->with_cubins,
                           "include the compiled CUBINs (base64; big, and rebuildable)");
  export_command->callback([&global, export_options] { global.exit_code = run_export(global, *export_options); });

  auto import_options = std::make_shared<ImportOptions>();
  CLI::App* import_command = db.add_subcommand(
      "import", "add a tuning file's rows to the database (created if missing) in one transaction; "
                "importing a file again adds nothing");
  import_command->add_option("file", import_options->source, "the tuning file written by 'db export'")->required();
  import_command->add_flag("--json", import_options->json, "print JSON");
  import_command->callback([&global, import_options] { global.exit_code = run_import(global, *import_options); });

  auto merge_options = std::make_shared<ImportOptions>();
  CLI::App* merge = db.add_subcommand(
      "merge", "bring another database's GPUs, trials, best configs (the faster per problem and GPU wins), "
               "profiles and CUBINs into this one, in one transaction; merging again adds nothing");
  merge->add_option("other", merge_options->source, "the other database")->required();
  merge->add_flag("--json", merge_options->json, "print JSON");
  merge->callback([&global, merge_options] { global.exit_code = run_merge(global, *merge_options); });

  auto diff_options = std::make_shared<DiffOptions>();
  CLI::App* diff = db.add_subcommand(
      "diff", "compare the best configs of two databases per GPU and problem: only in A, only in B, "
              "different (with both times and B/A), same. A report: exits 0 whether or not they differ");
  diff->add_option("first", diff_options->first, "A.db (or, alone, OTHER.db: then A is --db and B is OTHER.db)")
      ->required();
  diff->add_option("second", diff_options->second, "B.db");
  diff->add_flag("--json", diff_options->json, "print JSON");
  diff->callback([&global, diff_options] { global.exit_code = run_diff(global, *diff_options); });

  auto prune_options = std::make_shared<PruneOptions>();
  CLI::App* prune = db.add_subcommand(
      "prune", "remove CUBINs no run will load (superseded by a newer build of their source, of another "
               "NVRTC without a source key, or measured only by losing trials), keep every trial, then "
               "compact the file");
  prune->add_flag("--dry-run", prune_options->dry_run, "only list what would be removed and the bytes freed");
  prune->add_flag("--json", prune_options->json, "print JSON");
  prune->callback([&global, prune_options] { global.exit_code = run_prune(global, *prune_options); });
}

}  // namespace sparsejit::tools
