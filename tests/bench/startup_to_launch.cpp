// Process start to first sparse_attention launch with a warm database (issue 5's target:
// 20 ms, no NVRTC). Not a CTest test: run it on a GPU machine.
//
//   startup_to_launch [--db PATH] [--runs N] [--tokens N]
//
// The parent starts the program N + 1 times as a child (fork + exec, the start time passed
// in SPARSEJIT_STARTUP_T0_NS on the system-wide CLOCK_MONOTONIC, read just before exec). The
// first child warms the database (it may compile the kernel with NVRTC); each of the N
// timed children then records, from exec on:
//   main         the dynamic loader and static initializers (libsqlite3, libcrypto, ... mapped;
//                not libnvrtc, which sparsejit opens only to compile)
//   driver       dlopen of libcuda and cuInit (jit::driver_available)
//   context      the primary context of GPU 0 (created here, retained by the runtime below)
//   runtime      sparsejit's runtime: the database opened, this GPU's row, the lookup tables
//   inputs       the caller's work: Q, K, V, O and a block mask allocated and uploaded
//   lookup       the call's configuration looked up in the database (Runtime::attention_config)
//   launched     Runtime::sparse_attention returned: the CUBIN read from the database by its
//                source key, the module loaded, the launch enqueued (were NVRTC opened on
//                the way, for a CUBIN stored without a source key, it would count here)
//   done         the kernel finished (stream synchronized)
// and reports them with the kernels it compiled (must be 0), the CUBINs read from the
// database and whether the process opened NVRTC (jit::nvrtc_loaded; a warm database needs
// none). The parent prints the median of each phase over the timed children, and the share
// that is sparsejit's: runtime, lookup and launched, plus main (mostly the mapping of the
// libraries it links). An earlier version had a phase nvrtc_tag between inputs and lookup,
// NVRTC's build tag read for the cache key (3.7-4.4 ms): the lookup by source key needs none.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "jit/device.h"
#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "jit/kernel_provider.h"
#include "jit/nvrtc_compiler.h"
#include "runtime/runtime.h"
#include "templates/sparse_attention/attention_tuning.h"
#include "tests/bench/attention_call.h"
#include "tuner/timing.h"

namespace {

using namespace sparsejit;

constexpr const char* kStartEnvironment = "SPARSEJIT_STARTUP_T0_NS";
constexpr const char* kPhases[] = {"main", "driver", "context", "runtime", "inputs", "lookup", "launched", "done"};
constexpr int kLaunchedPhase = 6;
constexpr int kPhaseCount = static_cast<int>(std::size(kPhases));

long long monotonic_ns() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec * 1'000'000'000LL + now.tv_nsec;
}

// One attention layer's shape: 1 x 12 heads x `tokens`, D = 128, blocks of 128, density 0.3
// (the mask schedule's first sparse window), bf16, [B, H, N, D].
struct ChildOutcome {
  std::vector<double> phase_ms;  // per kPhases, since exec
  std::size_t compiled = 0, from_database = 0;
  bool nvrtc_loaded = false;
};

// The child: does the work of a fresh inference process and prints one line
// "phase_ms m1 ... m8 compiled C from_database S nvrtc_loaded 0|1".
int run_child(const std::filesystem::path& database, int tokens, long long start_ns) {
  std::vector<long long> marks;
  marks.push_back(monotonic_ns());
  std::string why;
  if (!jit::driver_available(&why)) {
    std::fprintf(stderr, "startup_to_launch: no GPU: %s\n", why.c_str());
    return 2;
  }
  marks.push_back(monotonic_ns());
  jit::DeviceContext context(0);
  context.make_current();
  marks.push_back(monotonic_ns());
  runtime::Runtime runtime(runtime::RuntimeOptions{.device = 0, .database_path = database, .use_database = true});
  marks.push_back(monotonic_ns());

  constexpr int kHeadDim = 128, kBlock = 128;
  const bench::AttentionCall call(12, tokens, kHeadDim, kBlock, 0.3, 11);
  const SparseAttentionParams& params = call.params;
  jit::Stream stream;
  marks.push_back(monotonic_ns());

  const runtime::AttentionProblem problem{templates::HalfDtype::bf16, kHeadDim, kBlock, kBlock, 0};
  runtime.attention_config(problem, templates::attention_call_shape(params, kBlock));
  marks.push_back(monotonic_ns());
  runtime.sparse_attention(params, problem, stream.handle());
  marks.push_back(monotonic_ns());
  stream.synchronize();
  marks.push_back(monotonic_ns());

  std::printf("phase_ms");
  for (long long mark : marks) std::printf(" %.3f", (mark - start_ns) / 1e6);
  std::printf(" compiled %zu from_database %zu nvrtc_loaded %d\n", runtime.kernels().compiled(),
              runtime.kernels().store_hits(), jit::nvrtc_loaded() ? 1 : 0);
  return 0;
}

// Starts this program as a child with the start time in the environment; its outcome, or
// an error naming its exit status.
ChildOutcome start_child(const std::string& self, const std::filesystem::path& database, int tokens) {
  int out[2];
  if (::pipe(out) != 0) throw std::runtime_error("cannot create a pipe");
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("cannot fork");
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    ::close(out[1]);
    const std::string start = std::to_string(monotonic_ns());
    ::setenv(kStartEnvironment, start.c_str(), 1);
    const std::string tokens_text = std::to_string(tokens);
    ::execl(self.c_str(), self.c_str(), "--child", "--db", database.c_str(), "--tokens", tokens_text.c_str(),
            static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(out[1]);
  std::string text;
  char buffer[512];
  for (ssize_t n; (n = ::read(out[0], buffer, sizeof buffer)) > 0;) text.append(buffer, static_cast<std::size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("a child failed (exit status " +
                             std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)) + ")");
  std::istringstream line(text);
  std::string word;
  ChildOutcome outcome;
  line >> word;
  outcome.phase_ms.resize(kPhaseCount);
  for (double& ms : outcome.phase_ms) line >> ms;
  int nvrtc_loaded = 0;
  line >> word >> outcome.compiled >> word >> outcome.from_database >> word >> nvrtc_loaded;
  outcome.nvrtc_loaded = nvrtc_loaded != 0;
  if (!line) throw std::runtime_error("a child printed an unexpected line: " + text);
  return outcome;
}

double median(const std::vector<double>& values) { return tuner::summarize(values).median_ms; }

int usage() {
  std::fprintf(stderr, "usage: startup_to_launch [--db PATH] [--runs N] [--tokens N]\n"
                       "  --db PATH   the warm database (default: a new one in a temporary folder)\n"
                       "  --runs N    timed processes (default 10)\n"
                       "  --tokens N  tokens of the attention call, 12 heads, D = 128 (default 4096)\n");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path database;
  int runs = 10, tokens = 4096;
  bool child = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--child") child = true;
    else if (arg == "--db" && i + 1 < argc) database = argv[++i];
    else if (arg == "--runs" && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (arg == "--tokens" && i + 1 < argc) tokens = std::atoi(argv[++i]);
    else return usage();
  }
  if (runs < 1 || tokens < 1) return usage();
  try {
    if (child) {
      const char* start = std::getenv(kStartEnvironment);
      if (start == nullptr) {
        std::fprintf(stderr, "startup_to_launch: --child is started by the program itself\n");
        return 1;
      }
      return run_child(database, tokens, std::atoll(start));
    }
    std::string why;
    if (!jit::driver_available(&why)) {  // before any child: the parent's own check
      std::fprintf(stderr, "startup_to_launch: no GPU: %s\n", why.c_str());
      return 2;
    }
    std::filesystem::path folder;
    if (database.empty()) {
      folder = std::filesystem::temp_directory_path() / ("sparsejit-startup-" + std::to_string(::getpid()));
      std::filesystem::create_directories(folder);
      database = folder / "warm.db";
    }
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    const ChildOutcome warm = start_child(self, database, tokens);
    std::printf("warm-up process: %zu kernel(s) compiled, %zu from the database, NVRTC %s, first launch done at "
                "%.1f ms\n",
                warm.compiled, warm.from_database, warm.nvrtc_loaded ? "loaded" : "not loaded", warm.phase_ms.back());
    std::vector<std::vector<double>> deltas(kPhaseCount);
    std::vector<double> to_launch;
    int nvrtc_loaded = 0;
    for (int run = 0; run < runs; ++run) {
      const ChildOutcome outcome = start_child(self, database, tokens);
      if (outcome.compiled != 0 || outcome.from_database != 1)
        throw std::runtime_error("a timed process compiled " + std::to_string(outcome.compiled) +
                                 " kernel(s) and read " + std::to_string(outcome.from_database) +
                                 " from the database: the database is not warm");
      for (int p = 0; p < kPhaseCount; ++p)
        deltas[p].push_back(outcome.phase_ms[p] - (p > 0 ? outcome.phase_ms[p - 1] : 0.0));
      to_launch.push_back(outcome.phase_ms[kLaunchedPhase]);
      nvrtc_loaded += outcome.nvrtc_loaded ? 1 : 0;
    }
    std::printf("%d processes, 1 x 12 heads x %d tokens, D = 128, blocks 128, density 0.3; medians, ms:\n", runs,
                tokens);
    for (int p = 0; p < kPhaseCount; ++p) std::printf("  %-9s %8.2f\n", kPhases[p], median(deltas[p]));
    const double ours = median(deltas[0]) + median(deltas[3]) + median(deltas[5]) + median(deltas[6]);
    std::printf("  start to first launch %.2f (median of the totals); sparsejit's share (main + runtime + "
                "lookup + launched) %.2f; the driver's (driver + context) %.2f\n",
                median(to_launch), ours, median(deltas[1]) + median(deltas[2]));
    std::printf("  NVRTC loaded in %d of %d timed processes%s\n", nvrtc_loaded, runs,
                nvrtc_loaded == 0 ? "" : " (CUBINs stored without a source key are found by the cache key, "
                                         "which needs NVRTC; they learn theirs on the way)");
    if (!folder.empty()) std::filesystem::remove_all(folder);
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "startup_to_launch: %s\n", error.what());
    return 1;
  }
}
