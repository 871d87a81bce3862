// sparsejit tune: measure every registered family's candidates on this GPU and keep the
// best per problem in the database. Without a GPU it says so and pre-compiles the
// candidates for the common targets instead, so a later run on a GPU starts warm.
#include <unistd.h>

#include <chrono>
#include <set>
#include <cstdio>
#include <iostream>
#include <thread>

#include "jit/device.h"
#include "jit/driver_api.h"
#include "jit/kernel_provider.h"
#include "runtime/database_cubin_store.h"
#include "runtime/gpu_record.h"
#include "templates/registry.h"
#include "tools/cli_common.h"
#include "tuner/tuner.h"

namespace sparsejit::tools {
namespace {

// Targets pre-compiled when tuning is asked for on a machine without a GPU: Ampere
// (A100, A10/RTX 30), Ada (L4/L40/RTX 40) and Hopper (H100/H200).
constexpr const char* kPrecompileTargetsWithoutGpu[] = {"sm_80", "sm_86", "sm_89", "sm_90"};

struct TuneCommandOptions {
  int device = 0;
  std::vector<std::string> families;
  double measure_ms = tuner::TuneOptions{}.measure_ms;
  bool json = false;
};

// "[3/6] permute_tokens|d128|gather  gated 12/27  ETA 0:41" on a terminal; nothing otherwise
// (the per-problem lines below say enough in a log).
class TuneProgress {
 public:
  TuneProgress(std::size_t problems) : problems_(problems), terminal_(::isatty(STDERR_FILENO) == 1) {}
  void start_problem(const std::string& key) {
    ++problem_;
    key_ = key;
  }
  void update(std::string_view what, int done, int total) {
    if (!terminal_) return;
    const double elapsed = seconds_since(start_);
    const double fraction =
        (static_cast<double>(problem_ - 1) + static_cast<double>(done) / total) / problems_;
    const int eta = fraction > 0 ? static_cast<int>(elapsed / fraction - elapsed) : 0;
    std::fprintf(stderr, "\r\033[K[%zu/%zu] %s  %.*s %d/%d  ETA %d:%02d", problem_, problems_,
                 key_.c_str(), static_cast<int>(what.size()), what.data(), done, total, eta / 60,
                 eta % 60);
  }
  void end_problem() {
    if (terminal_) std::fputs("\r\033[K", stderr);
  }

 private:
  static double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  std::size_t problems_;
  std::size_t problem_ = 0;
  bool terminal_;
  std::string key_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

int run_tune(const GlobalOptions& global, const TuneCommandOptions& options) {
  const std::vector<const templates::KernelFamily*> families = selected_families(options.families);
  std::vector<std::unique_ptr<templates::TuningProblem>> problems;
  for (const templates::KernelFamily* family : families)
    for (auto& problem : family->tuning_problems()) problems.push_back(std::move(problem));
  std::string why;
  if (!jit::driver_available(&why)) {
    std::fprintf(stderr, "sparsejit: %s: tuning needs a GPU; pre-compiling the candidates for ",
                 why.c_str());
    std::vector<jit::Target> targets;
    for (const char* arch : kPrecompileTargetsWithoutGpu) {
      targets.push_back(jit::Target::parse(arch));
      std::fprintf(stderr, "%s%s", targets.size() > 1 ? ", " : "", arch);
    }
    std::fprintf(stderr, " instead\n");
    // The candidates of the tuning problems, the binaries a later tune on a GPU will load.
    std::set<std::string> seen;
    std::vector<jit::KernelSpec> work;
    for (const jit::Target& target : targets)
      for (const auto& problem : problems)
        for (templates::TuningCandidate& candidate : problem->candidates(target))
          if (seen.insert(candidate.specialization.request.cache_key()).second)
            work.push_back(std::move(candidate.specialization));
    precompile(global, work, targets, std::max(1u, std::thread::hardware_concurrency()));
    return kExitOk;
  }

  const jit::DeviceInfo device = jit::query_device(options.device);
  jit::DeviceContext context(options.device);
  db::Database database = db::Database::open(database_path(global));
  const std::int64_t gpu_id = database.upsert_gpu(runtime::to_gpu_record(device));
  runtime::DatabaseCubinStore store(database);
  jit::KernelProvider kernels(&store);
  const tuner::TuneEnvironment environment{
      context, jit::Target::for_compute_capability(device.cc_major, device.cc_minor), kernels,
      database, gpu_id, device.sm_clock_khz};
  tuner::TuneOptions tune_options;
  tune_options.measure_ms = options.measure_ms;

  std::cerr << "tuning " << problems.size() << " problem(s) on GPU " << options.device << " ("
            << device.name << ") into " << database.path().string() << "\n";

  TuneProgress progress(problems.size());
  nlohmann::json reports = nlohmann::json::array();
  Table table({"problem", "timed shape", "candidates", "new", "stored", "rejected", "best config",
               "best ms", "default ms", "speedup"});
  for (auto& problem : problems) {
    progress.start_problem(problem->key());
    const tuner::ProblemReport report = tuner::tune_problem(
        *problem, environment, tune_options,
        [&](std::string_view what, int done, int total) { progress.update(what, done, total); });
    progress.end_problem();
    const std::string best = report.best ? report.best->config_json : "(none correct)";
    const std::string best_ms = report.best ? format_fixed(report.best->median_ms, 4) : "-";
    const std::string default_ms = report.default_ms ? format_fixed(*report.default_ms, 4) : "-";
    const std::string speedup = report.best && report.default_ms
                                    ? format_fixed(*report.default_ms / report.best->median_ms, 2) + "x"
                                    : "-";
    table.add({report.key, report.description, std::to_string(report.candidates),
               std::to_string(report.measured), std::to_string(report.resumed),
               std::to_string(report.incorrect + report.failed), best, best_ms, default_ms, speedup});
    reports.push_back({{"problem", report.key},
                       {"description", report.description},
                       {"candidates", report.candidates},
                       {"measured", report.measured},
                       {"resumed", report.resumed},
                       {"incorrect", report.incorrect},
                       {"failed", report.failed},
                       {"best_config", report.best ? nlohmann::json::parse(best) : nlohmann::json()},
                       {"best_ms", report.best ? nlohmann::json(report.best->median_ms) : nlohmann::json()},
                       {"default_ms", report.default_ms ? nlohmann::json(*report.default_ms) : nlohmann::json()}});
    if (!options.json)
      std::cerr << report.key << ": " << report.measured << " timed, " << report.resumed
                << " already stored, best " << best << " " << best_ms << " ms\n";
  }
  if (options.json) std::cout << reports.dump(2) << "\n";
  else std::cout << table.render();
  return kExitOk;
}

}  // namespace

void add_tune_command(CLI::App& app, GlobalOptions& global) {
  auto options = std::make_shared<TuneCommandOptions>();
  CLI::App* command = app.add_subcommand(
      "tune",
      "Measure every candidate of every registered kernel family on this GPU and keep the\n"
      "best per problem in the database. Every trial is stored; an interrupted run resumes.\n"
      "Without a GPU: says so and pre-compiles the candidates for sm_80/86/89/90 instead.");
  command->add_option("--device", options->device, "GPU ordinal")->check(CLI::NonNegativeNumber);
  command->add_option("--family", options->families, "only these kernel families");
  command->add_option("--measure-ms", options->measure_ms,
                      "timing budget per candidate in ms (split over 3 interleaved rounds)")
      ->check(CLI::Range(1.0, 10000.0));
  command->add_flag("--json", options->json, "print the per-problem results as JSON");
  command->callback([&global, options] { global.exit_code = run_tune(global, *options); });
}

}  // namespace sparsejit::tools
