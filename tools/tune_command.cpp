// sparsejit tune: measure every registered family's candidates on this GPU and keep the
// best per problem in the database. Without a GPU it says so and pre-compiles the
// candidates for the common targets instead, so a later run on a GPU starts warm.
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <ctime>
#include <iostream>
#include <map>
#include <numeric>
#include <set>
#include <thread>

#include "jit/device.h"
#include "jit/driver_api.h"
#include "jit/kernel_provider.h"
#include "runtime/database_cubin_store.h"
#include "runtime/gpu_record.h"
#include "templates/registry.h"
#include "tools/cli_common.h"
#include "tuner/compile_pool.h"
#include "tuner/tuner.h"

namespace sparsejit::tools {
namespace {

// Targets pre-compiled when tuning is asked for on a machine without a GPU: Ampere
// (A100, A10/RTX 30), Ada (L4/L40/RTX 40) and Hopper (H100/H200).
constexpr const char* kPrecompileTargetsWithoutGpu[] = {"sm_80", "sm_86", "sm_89", "sm_90"};

struct TuneCommandOptions {
  int device = 0;
  std::vector<int> devices;  // --devices: several GPUs in parallel, a child process each
  // --shard I/K: only the selected problems whose index is I modulo K (how --devices splits
  // the problems between identical GPUs, whose results are one GPU's rows).
  int shard = 0, shards = 1;
  std::vector<std::string> families;
  std::vector<int> head_dims;
  std::vector<double> densities;
  double measure_ms = tuner::TuneOptions{}.measure_ms;
  double budget_s = 0;  // 0: no budget, every candidate of every problem
  unsigned jobs = std::max(1u, std::thread::hardware_concurrency());
  bool json = false;
  // Keep the losers' CUBINs after a run no signal stopped (by default only those the best
  // configs need stay; the losers' trials always do). --devices children keep them: the
  // parent prunes once every GPU is done. A --shard run keeps them too (`db prune` after
  // the last shard).
  bool keep_losers = false;
};

// Ctrl-C (SIGINT) or SIGTERM: the first sets stop_requested and the tuner stops between two
// trials. The same signal again more than a second later ends the process at once (the
// default action); every trial already stored stays, each being its own transaction. Within
// the second it is taken for one request delivered twice (`timeout` and `kill -- -PGID`
// signal the process and its group).
std::atomic<bool> stop_requested{false};
std::atomic<int> stop_signal{0};
std::atomic<long long> first_stop_ns{0};
static_assert(std::atomic<long long>::is_always_lock_free, "used in a signal handler");
extern "C" void on_stop_signal(int signal) {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);  // async-signal-safe
  const long long ns = now.tv_sec * 1'000'000'000LL + now.tv_nsec;
  if (!stop_requested.exchange(true)) {
    stop_signal.store(signal);
    first_stop_ns.store(ns);
  } else if (ns - first_stop_ns.load() > 1'000'000'000LL) {
    std::signal(signal, SIG_DFL);
    std::raise(signal);
  }
}

// Installs on_stop_signal for SIGINT and SIGTERM while alive; restores the previous handlers.
class StopSignals {
 public:
  StopSignals() {
    stop_requested.store(false);
    stop_signal.store(0);
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &previous_interrupt_);
    sigaction(SIGTERM, &action, &previous_terminate_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &previous_interrupt_, nullptr);
    sigaction(SIGTERM, &previous_terminate_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction previous_interrupt_ {}, previous_terminate_ {};
};

// The problems of the selected families that --head-dim and --density select.
std::vector<std::unique_ptr<templates::TuningProblem>> selected_problems(const TuneCommandOptions& options) {
  std::vector<std::unique_ptr<templates::TuningProblem>> problems;
  for (const templates::KernelFamily* family : selected_families(options.families))
    for (auto& problem : family->tuning_problems()) {
      const std::optional<int> head_dim = problem->head_dim();
      const std::optional<double> density = problem->density();
      const auto listed = [](const auto& values, auto value) {
        return std::any_of(values.begin(), values.end(), [&](auto v) { return std::abs(v - value) < 1e-9; });
      };
      if (!options.head_dims.empty() && !(head_dim && listed(options.head_dims, *head_dim))) continue;
      if (!options.densities.empty() && !(density && listed(options.densities, *density))) continue;
      problems.push_back(std::move(problem));
    }
  if (problems.empty())
    throw std::runtime_error("no tuning problem matches the selection (--family, --head-dim, --density)");
  if (options.shards > 1) {
    std::vector<std::unique_ptr<templates::TuningProblem>> shard;
    for (std::size_t i = options.shard; i < problems.size(); i += options.shards) shard.push_back(std::move(problems[i]));
    return shard;  // may be empty: more identical GPUs than problems
  }
  return problems;
}

std::string clock_text(double seconds) {
  const int total = static_cast<int>(std::max(0.0, seconds) + 0.5);
  char text[32];
  std::snprintf(text, sizeof text, "%d:%02d", total / 60, total % 60);
  return text;
}

// Progress of a run over many problems, weighted by each problem's relative_cost, with an
// ETA: on a terminal a bar that rewrites itself ("[=====>    ] 41% 79/192 KEY gated 3/5
// ETA 5:12"), above it a line per finished problem; otherwise only the line per problem.
class TuneProgress {
 public:
  explicit TuneProgress(double total_cost) : total_cost_(total_cost), terminal_(::isatty(STDERR_FILENO) == 1) {}
  void start_problem(const std::string& key, double cost) {
    key_ = key;
    cost_ = cost;
  }
  void update(std::string_view what, int done, int total) {
    if (!terminal_) return;
    const double fraction = (done_cost_ + cost_ * done / std::max(1, total)) / total_cost_;
    constexpr int kWidth = 24;
    const int filled = std::clamp(static_cast<int>(fraction * kWidth), 0, kWidth);
    std::fprintf(stderr, "\r\033[K[%s%s] %3d%% %zu done  %s  %.*s %d/%d  ETA %s",
                 std::string(static_cast<std::size_t>(filled), '=').c_str(),
                 std::string(static_cast<std::size_t>(kWidth - filled), ' ').c_str(),
                 static_cast<int>(100 * fraction), problems_done_, key_.c_str(),
                 static_cast<int>(what.size()), what.data(), done, total, clock_text(eta(fraction)).c_str());
  }
  // `line` says how the problem went; the ETA goes after it.
  void end_problem(const std::string& line) {
    done_cost_ += cost_;
    ++problems_done_;
    std::fprintf(stderr, "%s%s  ETA %s\n", terminal_ ? "\r\033[K" : "", line.c_str(),
                 clock_text(eta(done_cost_ / total_cost_)).c_str());
  }
  double elapsed_s() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  double eta(double fraction) const {
    return fraction > 0 ? elapsed_s() / fraction * (1 - fraction) : 0.0;
  }
  double total_cost_;
  bool terminal_;
  std::string key_;
  double cost_ = 0;
  double done_cost_ = 0;
  std::size_t problems_done_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// How a --budget is shared out: each problem gets the remaining time in proportion to its
// relative_cost, and as many candidates as fit at the seconds per unit of cost seen so far
// (at least one: the built-in default is measured first).
class BudgetPlanner {
 public:
  explicit BudgetPlanner(double budget_s) : budget_s_(budget_s) {}
  bool spent(double elapsed_s) const { return elapsed_s >= budget_s_; }
  int max_candidates(double elapsed_s, double cost, double remaining_cost, int candidates) const {
    const double allowance_s = (budget_s_ - elapsed_s) * cost / std::max(cost, remaining_cost);
    const double per_candidate_s = seconds_per_cost_ * cost / std::max(1, candidates);
    return std::clamp(static_cast<int>(allowance_s / per_candidate_s), 1, std::max(1, candidates));
  }
  // After a problem: `measured` of its `candidates` took `seconds`.
  void observe(double seconds, double cost, int measured, int candidates) {
    if (measured == 0) return;
    seen_s_ += seconds;
    seen_cost_ += cost * measured / std::max(1, candidates);
    seconds_per_cost_ = seen_s_ / seen_cost_;
  }

 private:
  double budget_s_;
  double seen_s_ = 0, seen_cost_ = 0;
  double seconds_per_cost_ = 1.0;  // relative_cost is about seconds on an H100 for attention
};

int precompile_without_gpu(const GlobalOptions& global, const TuneCommandOptions& options,
                           const std::vector<std::unique_ptr<templates::TuningProblem>>& problems,
                           const std::string& why) {
  std::fprintf(stderr, "sparsejit: %s: tuning needs a GPU; pre-compiling the candidates for ", why.c_str());
  std::vector<jit::Target> targets;
  for (const char* arch : kPrecompileTargetsWithoutGpu) {
    targets.push_back(jit::Target::parse(arch));
    std::fprintf(stderr, "%s%s", targets.size() > 1 ? ", " : "", arch);
  }
  std::fprintf(stderr, " instead\n");
  // The candidates of the tuning problems, the binaries a later tune on a GPU will load, each
  // once (by source key: one NVRTC per process, and computing it does not open NVRTC).
  std::set<std::string> seen;
  std::vector<jit::KernelSpec> work;
  for (const jit::Target& target : targets)
    for (const auto& problem : problems)
      for (templates::TuningCandidate& candidate : problem->candidates(target))
        if (seen.insert(candidate.specialization.request.source_key()).second)
          work.push_back(std::move(candidate.specialization));
  precompile(global, work, targets, options.jobs);
  return kExitOk;
}

// Compiles the candidates of `problems` for `target` into the database first, on all cores:
// NVRTC takes about a second per attention kernel, and the tiles of a kernel kind repeat over
// every bucket of it. A candidate every GPU of `gpu_ids` has a trial of is left out: no run
// measures it again (after a complete run its binary was pruned, so a rerun would otherwise
// compile every loser again for nothing). Returns each problem's number of candidates.
std::vector<int> compile_candidates(jit::KernelProvider& kernels, const db::Database& database,
                                    const std::vector<std::int64_t>& gpu_ids,
                                    const std::vector<std::unique_ptr<templates::TuningProblem>>& problems,
                                    const jit::Target& target, unsigned jobs) {
  std::set<std::string> seen;  // source keys: a candidate shared by several problems is compiled once
  std::vector<jit::KernelSpec> specs;
  std::vector<int> candidate_counts;
  for (const auto& problem : problems) {
    std::vector<templates::TuningCandidate> candidates = problem->candidates(target);
    candidate_counts.push_back(static_cast<int>(candidates.size()));
    std::map<std::string, std::size_t> measured_by;  // config -> GPUs with a trial of it
    for (const std::int64_t gpu_id : gpu_ids)
      for (const db::StoredTrial& stored : database.list_trials(gpu_id, problem->family(), problem->key()))
        ++measured_by[stored.trial.config_json];
    for (templates::TuningCandidate& candidate : candidates) {
      const auto measured = measured_by.find(candidate.config_json);
      if (measured != measured_by.end() && measured->second >= gpu_ids.size()) continue;
      if (seen.insert(candidate.specialization.request.source_key()).second)
        specs.push_back(std::move(candidate.specialization));
    }
  }
  const auto start = std::chrono::steady_clock::now();
  std::size_t done = 0;
  const tuner::CompileSummary compiled =
      tuner::compile_in_parallel(kernels, specs, jobs, [&](const jit::KernelSpec&, bool) {
        if (::isatty(STDERR_FILENO) == 1) std::fprintf(stderr, "\r\033[Kcompiling %zu/%zu", ++done, specs.size());
      });
  std::fprintf(stderr, "%s%s: %zu kernels: %zu compiled, %zu already stored, %zu failed (%.1f s)\n",
               ::isatty(STDERR_FILENO) == 1 ? "\r\033[K" : "", target.name().c_str(), specs.size(),
               compiled.compiled, compiled.stored, compiled.failures.size(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return candidate_counts;
}

// After a run that no signal stopped: drops the binaries no run loads again
// (Database::prune_cubins: the losers', the superseded, and keyless ones of another NVRTC),
// then compacts the file.
// Their trials stay, so a rerun resumes with nothing to measure or compile.
void prune_losers(db::Database& database) {
  const db::PruneReport pruned = database.prune_cubins(jit::nvrtc_version().to_string(), /*dry_run=*/false);
  const db::VacuumReport vacuumed = database.vacuum();
  std::fprintf(stderr, "kept the CUBINs the best configs need: removed %zu other binaries (%s); the database is %s%s\n",
               pruned.cubins.size(), format_bytes(pruned.binary_bytes).c_str(),
               format_bytes(vacuumed.file_bytes_after).c_str(),
               vacuumed.checkpointed ? "" : " (another process reads it: it shrinks at a later checkpoint)");
}

int run_tune_on_devices(const GlobalOptions& global, const TuneCommandOptions& options);

int run_tune(const GlobalOptions& global, const TuneCommandOptions& options) {
  if (options.devices.size() > 1) return run_tune_on_devices(global, options);
  // Each problem is destroyed once tuned: its inputs (over a GiB for the longest sequences)
  // must not pile up over the grid.
  std::vector<std::unique_ptr<templates::TuningProblem>> problems = selected_problems(options);
  std::string why;
  if (!jit::driver_available(&why)) return precompile_without_gpu(global, options, problems, why);

  const int ordinal = options.devices.size() == 1 ? options.devices[0] : options.device;
  const jit::DeviceInfo device = jit::query_device(ordinal);
  jit::DeviceContext context(ordinal);
  db::Database database = db::Database::open(database_path(global));
  const std::int64_t gpu_id = database.upsert_gpu(runtime::to_gpu_record(device));
  runtime::DatabaseCubinStore store(database);
  jit::KernelProvider kernels(&store);
  const jit::Target target = jit::Target::for_compute_capability(device.cc_major, device.cc_minor);
  const tuner::TuneEnvironment environment{context, target, kernels, database, gpu_id, device.sm_clock_khz};

  std::cerr << "tuning " << problems.size() << " problem(s) on GPU " << ordinal << " ("
            << device.name << ") into " << database.path().string() << "\n";

  const std::vector<int> candidate_counts = compile_candidates(kernels, database, {gpu_id}, problems, target, options.jobs);

  std::vector<double> costs;
  for (const auto& problem : problems) costs.push_back(problem->relative_cost());
  const double total_cost = std::accumulate(costs.begin(), costs.end(), 0.0);
  TuneProgress progress(total_cost);
  std::optional<BudgetPlanner> budget;
  if (options.budget_s > 0) budget.emplace(options.budget_s);
  tuner::TuneOptions tune_options;
  tune_options.measure_ms = options.measure_ms;
  tune_options.stop = &stop_requested;
  const StopSignals stop_signals;

  nlohmann::json reports = nlohmann::json::array();
  Table table({"problem", "timed shape", "candidates", "new", "stored", "rejected", "untried", "best config",
               "best ms", "default ms", "speedup"});
  double remaining_cost = total_cost;
  std::size_t finished = 0;
  std::string stopped_by;
  for (std::size_t p = 0; p < problems.size(); ++p) {
    templates::TuningProblem& problem = *problems[p];
    const double cost = costs[p];
    if (budget && budget->spent(progress.elapsed_s())) {
      stopped_by = "the budget of " + format_fixed(options.budget_s, 0) + " s is spent";
      break;
    }
    tune_options.max_candidates = std::nullopt;
    if (budget)
      tune_options.max_candidates =
          budget->max_candidates(progress.elapsed_s(), cost, remaining_cost, candidate_counts[p]);
    progress.start_problem(problem.key(), cost);
    const double started_s = progress.elapsed_s();
    const tuner::ProblemReport report = tuner::tune_problem(
        problem, environment, tune_options,
        [&](std::string_view what, int done, int total) { progress.update(what, done, total); });
    problems[p].reset();
    const double problem_s = progress.elapsed_s() - started_s;
    if (budget) budget->observe(problem_s, cost, report.measured, report.candidates);
    remaining_cost -= cost;
    const std::string best = report.best      ? report.best->config_json
                             : report.stopped ? "(stopped)"
                                              : "(none correct)";
    const std::string best_ms = report.best ? format_fixed(report.best->median_ms, 4) : "-";
    const std::string default_ms = report.default_ms ? format_fixed(*report.default_ms, 4) : "-";
    const std::string speedup = report.best && report.default_ms
                                    ? format_fixed(*report.default_ms / report.best->median_ms, 2) + "x"
                                    : "-";
    table.add({report.key, report.description, std::to_string(report.candidates),
               std::to_string(report.measured), std::to_string(report.resumed),
               std::to_string(report.incorrect + report.failed), std::to_string(report.untried), best,
               best_ms, default_ms, speedup});
    reports.push_back({{"problem", report.key},
                       {"description", report.description},
                       {"candidates", report.candidates},
                       {"measured", report.measured},
                       {"resumed", report.resumed},
                       {"incorrect", report.incorrect},
                       {"failed", report.failed},
                       {"untried", report.untried},
                       {"cut_after_first_round", report.cut},
                       {"best_config", report.best ? nlohmann::json::parse(best) : nlohmann::json()},
                       {"best_ms", report.best ? nlohmann::json(report.best->median_ms) : nlohmann::json()},
                       {"default_ms", report.default_ms ? nlohmann::json(*report.default_ms) : nlohmann::json()}});
    progress.end_problem("[" + std::to_string(p + 1) + "/" + std::to_string(problems.size()) + "] " +
                         report.key + ": " + std::to_string(report.measured) + " timed (" +
                         std::to_string(report.cut) + " cut after the first round), " +
                         std::to_string(report.resumed) + " stored, " + std::to_string(report.untried) +
                         " untried, best " + best + " " + best_ms + " ms, " + speedup + " over the default (" +
                         format_fixed(problem_s, 1) + " s)");
    if (report.stopped) {
      stopped_by = std::string("stopped by ") + (stop_signal.load() == SIGTERM ? "SIGTERM" : "SIGINT");
      break;
    }
    ++finished;
  }
  if (options.json) std::cout << reports.dump(2) << "\n";
  else std::cout << table.render();
  // A budget's end prunes too. A shard does not: the other shards may still measure the
  // binaries it would drop (they share the database), and would compile them again.
  if (stop_signal.load() == 0 && !options.keep_losers) {
    if (options.shards > 1)
      std::fprintf(stderr,
                   "sparsejit: shard %d/%d done; every candidate's CUBIN stays for the other shards: run "
                   "`sparsejit db prune` once all of them are done\n",
                   options.shard, options.shards);
    else
      prune_losers(database);
  }
  if (!stopped_by.empty()) {
    std::cerr << "sparsejit: " << stopped_by << " after " << finished << " of " << problems.size()
              << " problems; every trial so far is stored: run the same command again to resume\n";
    return stop_signal.load() != 0 ? 128 + stop_signal.load() : kExitOk;  // as shells report it
  }
  return kExitOk;
}

// --devices: a child `sparsejit --db PATH tune --device N` per GPU, run in parallel into the
// same database (each GPU's trials and best configs are its own rows; SQLite serializes the
// writes, and concurrent writers lose nothing). The candidates are compiled here first, once
// per target, so the children only load CUBINs. Their stderr comes through line by line as
// "[GPU N] ...", their results (tables or JSON) once each ends; Ctrl-C or SIGTERM is passed
// on, and every child stops between two trials.
int run_tune_on_devices(const GlobalOptions& global, const TuneCommandOptions& options) {
  std::set<int> unique(options.devices.begin(), options.devices.end());
  if (unique.size() != options.devices.size())
    throw std::invalid_argument("--devices lists a GPU twice: each GPU is tuned by one process");
  std::vector<std::unique_ptr<templates::TuningProblem>> problems = selected_problems(options);
  std::string why;
  if (!jit::driver_available(&why)) return precompile_without_gpu(global, options, problems, why);

  std::vector<jit::DeviceInfo> infos;
  for (int ordinal : options.devices) infos.push_back(jit::query_device(ordinal));
  {
    db::Database database = db::Database::open(database_path(global));
    runtime::DatabaseCubinStore store(database);
    jit::KernelProvider kernels(&store);
    std::map<std::string, std::vector<std::int64_t>> gpus_of_target;  // target -> GPU rows
    for (const jit::DeviceInfo& info : infos)
      gpus_of_target[jit::Target::for_compute_capability(info.cc_major, info.cc_minor).name()].push_back(
          database.upsert_gpu(runtime::to_gpu_record(info)));
    for (const auto& [target, gpu_ids] : gpus_of_target)
      compile_candidates(kernels, database, gpu_ids, problems, jit::Target::parse(target), options.jobs);
  }

  // Identical GPUs (one fingerprint, so one GPU's rows in the database) share the problems
  // out; different ones each tune all of them.
  std::map<std::string, std::vector<int>> identical;  // fingerprint -> ordinals
  for (std::size_t i = 0; i < infos.size(); ++i)
    identical[runtime::to_gpu_record(infos[i]).fingerprint()].push_back(options.devices[i]);
  const auto shard_of = [&](int ordinal) {
    for (const auto& [fingerprint, ordinals] : identical)
      for (std::size_t i = 0; i < ordinals.size(); ++i)
        if (ordinals[i] == ordinal) return std::pair<int, int>(static_cast<int>(i), static_cast<int>(ordinals.size()));
    return std::pair<int, int>(0, 1);
  };

  struct Child {
    int ordinal = 0;
    pid_t pid = -1;
    int out = -1, err = -1;  // read ends of its stdout and stderr
    std::string stdout_text, stderr_partial;
    int exit_code = -1;
  };
  std::vector<Child> children;
  const std::string executable = std::filesystem::read_symlink("/proc/self/exe").string();
  for (int ordinal : options.devices) {
    std::vector<std::string> args = {executable, "--db", database_path(global).string(), "tune", "--device",
                                     std::to_string(ordinal), "--measure-ms", format_fixed(options.measure_ms, 3),
                                     "-j", std::to_string(options.jobs)};
    for (const std::string& family : options.families) args.insert(args.end(), {"--family", family});
    for (int head_dim : options.head_dims) args.insert(args.end(), {"--head-dim", std::to_string(head_dim)});
    for (double density : options.densities) args.insert(args.end(), {"--density", format_fixed(density, 6)});
    if (options.budget_s > 0) args.insert(args.end(), {"--budget", format_fixed(options.budget_s, 3)});
    if (options.json) args.push_back("--json");
    args.push_back("--keep-losers");  // pruned here once all are done
    if (const auto [shard, shards] = shard_of(ordinal); shards > 1)
      args.insert(args.end(), {"--shard", std::to_string(shard) + "/" + std::to_string(shards)});
    int out_pipe[2], err_pipe[2];
    if (::pipe(out_pipe) != 0 || ::pipe(err_pipe) != 0) throw std::runtime_error("cannot create a pipe");
    Child child;
    child.ordinal = ordinal;
    child.pid = ::fork();
    if (child.pid < 0) throw std::runtime_error("cannot start a tuning process for GPU " + std::to_string(ordinal));
    if (child.pid == 0) {
      ::dup2(out_pipe[1], STDOUT_FILENO);
      ::dup2(err_pipe[1], STDERR_FILENO);
      for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
      std::vector<char*> argv;
      for (std::string& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      _exit(127);
    }
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    child.out = out_pipe[0];
    child.err = err_pipe[0];
    children.push_back(std::move(child));
  }

  const StopSignals stop_signals;
  bool stop_passed_on = false;
  std::size_t open_streams = 2 * children.size();
  while (open_streams > 0) {
    if (stop_requested.load() && !stop_passed_on) {
      for (const Child& child : children) ::kill(child.pid, stop_signal.load() != 0 ? stop_signal.load() : SIGTERM);
      stop_passed_on = true;
    }
    std::vector<pollfd> polled;
    for (const Child& child : children)
      for (int fd : {child.out, child.err})
        if (fd >= 0) polled.push_back({fd, POLLIN, 0});
    if (::poll(polled.data(), polled.size(), 200) < 0 && errno != EINTR) throw std::runtime_error("poll failed");
    for (const pollfd& ready : polled) {
      if ((ready.revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      Child& child = *std::find_if(children.begin(), children.end(),
                                   [&](const Child& c) { return c.out == ready.fd || c.err == ready.fd; });
      char buffer[4096];
      const ssize_t n = ::read(ready.fd, buffer, sizeof(buffer));
      if (n <= 0) {
        ::close(ready.fd);
        (ready.fd == child.out ? child.out : child.err) = -1;
        --open_streams;
        continue;
      }
      if (ready.fd == child.out) {
        child.stdout_text.append(buffer, static_cast<std::size_t>(n));
        continue;
      }
      // stderr: whole lines, each marked with its GPU (progress redraws end in '\r').
      child.stderr_partial.append(buffer, static_cast<std::size_t>(n));
      std::size_t end;
      while ((end = child.stderr_partial.find_first_of("\n\r")) != std::string::npos) {
        const std::string line = child.stderr_partial.substr(0, end);
        child.stderr_partial.erase(0, end + 1);
        if (!line.empty() && line.find_first_not_of(" \033[K") != std::string::npos)
          std::cerr << "[GPU " << child.ordinal << "] " << line << "\n";
      }
    }
  }
  int exit_code = kExitOk;
  nlohmann::json merged = nlohmann::json::array();
  for (std::size_t i = 0; i < children.size(); ++i) {
    Child& child = children[i];
    int status = 0;
    while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
    }
    child.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (child.exit_code != kExitOk && exit_code == kExitOk) exit_code = child.exit_code;
    if (options.json) {
      nlohmann::json results = nlohmann::json::parse(child.stdout_text, nullptr, /*allow_exceptions=*/false);
      if (!results.is_array()) continue;  // its error is on stderr
      for (nlohmann::json& result : results) {
        result["device"] = child.ordinal;
        merged.push_back(std::move(result));
      }
    } else {
      std::cout << "== GPU " << child.ordinal << " (" << infos[i].name << "), exit code " << child.exit_code
                << "\n"
                << child.stdout_text;
    }
  }
  if (options.json) std::cout << merged.dump(2) << "\n";
  if (exit_code == kExitOk && !stop_requested.load() && !options.keep_losers) {
    db::Database database = db::Database::open(database_path(global));
    prune_losers(database);
  }
  return exit_code;
}

}  // namespace

void add_tune_command(CLI::App& app, GlobalOptions& global) {
  auto options = std::make_shared<TuneCommandOptions>();
  CLI::App* command = app.add_subcommand(
      "tune",
      "Measure every candidate of every registered kernel family on this GPU and keep the\n"
      "best per problem in the database. Every trial is stored; Ctrl-C (or SIGTERM) stops\n"
      "between two trials (exit 130 or 143) and a second run resumes. Without a GPU: says\n"
      "so and pre-compiles the candidates for sm_80/86/89/90 instead.");
  CLI::Option* device = command->add_option("--device", options->device, "GPU ordinal")->check(CLI::NonNegativeNumber);
  command
      ->add_option("--devices", options->devices,
                   "tune these GPUs in parallel into the one database (ordinals, e.g. --devices 0,1): a process\n"
                   "each, the candidates compiled once first")
      ->delimiter(',')
      ->check(CLI::NonNegativeNumber)
      ->excludes(device);
  command
      ->add_option_function<std::string>(
          "--shard",
          [options](const std::string& text) {
            int shard = -1, shards = 0;
            char rest = 0;
            if (std::sscanf(text.c_str(), "%d/%d%c", &shard, &shards, &rest) != 2 || shards < 1 || shard < 0 ||
                shard >= shards)
              throw CLI::ValidationError("--shard", "takes I/K with 0 <= I < K, e.g. 1/4 (got " + text + ")");
            options->shard = shard;
            options->shards = shards;
          },
          "only every K-th selected problem, starting at the I-th (I/K): how --devices shares the\n"
          "problems out between identical GPUs. A shard keeps every candidate's CUBIN for the others:\n"
          "run `sparsejit db prune` after the last")
      ->excludes("--devices");
  command->add_option("--family", options->families, "only these kernel families");
  command->add_option("--head-dim", options->head_dims, "only problems of these head dims");
  command->add_option("--density", options->densities,
                      "only problems of these densities (sparse_attention: 1, 0.5, 0.3, 0.2, 0.1, 0.05)");
  command->add_option("--measure-ms", options->measure_ms,
                      "timing budget per candidate in ms (split over 3 interleaved rounds)")
      ->check(CLI::Range(1.0, 10000.0));
  command->add_option("--budget", options->budget_s,
                      "stop after about this many seconds; shared out over the problems by their cost, each\n"
                      "measuring the most promising candidates that fit (exhaustive where all fit). A later\n"
                      "run resumes with the candidates left out")
      ->check(CLI::PositiveNumber);
  command->add_option("-j,--jobs", options->jobs, "parallel NVRTC compiles")->check(CLI::Range(1u, 256u));
  command->add_flag("--json", options->json, "print the per-problem results as JSON");
  command->add_flag("--keep-losers", options->keep_losers,
                    "keep every candidate's CUBIN at the end (by default a run that no signal stopped keeps\n"
                    "only the binaries the best configs need, as `db prune` leaves them; every trial stays)");
  command->callback([&global, options] { global.exit_code = run_tune(global, *options); });
}

}  // namespace sparsejit::tools
