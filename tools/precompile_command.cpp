// sparsejit precompile: compile every registered specialization for a target into the
// database. Needs no GPU; a second run finds everything stored and compiles nothing.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "jit/device.h"
#include "jit/driver_api.h"
#include "jit/kernel_provider.h"
#include "jit/target.h"
#include "runtime/database_cubin_store.h"
#include "templates/registry.h"
#include "tools/cli_common.h"
#include "tuner/compile_pool.h"

namespace sparsejit::tools {
namespace {

struct PrecompileOptions {
  std::vector<std::string> archs;
  std::vector<std::string> families;
  unsigned jobs = std::max(1u, std::thread::hardware_concurrency());
};

std::vector<jit::Target> targets_to_build(const PrecompileOptions& options) {
  std::vector<jit::Target> targets;
  for (const std::string& arch : options.archs) targets.push_back(jit::Target::parse(arch));
  if (!targets.empty()) return targets;
  std::string why;
  if (!jit::driver_available(&why))
    throw std::runtime_error(why + "; name the target to build for with --arch (e.g. --arch sm_90)");
  for (int ordinal = 0; ordinal < jit::device_count(); ++ordinal) {
    const jit::DeviceInfo device = jit::query_device(ordinal);
    const jit::Target target = jit::Target::for_compute_capability(device.cc_major, device.cc_minor);
    if (std::find(targets.begin(), targets.end(), target) == targets.end()) targets.push_back(target);
  }
  return targets;
}

// One line that rewrites itself on a terminal, and a line per tenth of the work otherwise.
// Called one step at a time (compile_in_parallel serializes its progress calls).
class Progress {
 public:
  explicit Progress(std::size_t total) : total_(total), terminal_(::isatty(STDERR_FILENO) == 1) {}
  void step(const std::string& label, bool compiled) {
    ++done_;
    const bool tenth = done_ * 10 / total_ != (done_ - 1) * 10 / total_;
    if (terminal_) {
      std::fprintf(stderr, "\r\033[K[%zu/%zu] %s %s", done_, total_, compiled ? "compiled" : "stored  ",
                   label.c_str());
      if (done_ == total_) std::fputc('\n', stderr);
    } else if (tenth || done_ == total_) {
      std::fprintf(stderr, "[%zu/%zu] %s %s\n", done_, total_, compiled ? "compiled" : "stored",
                   label.c_str());
    }
  }

 private:
  std::size_t total_;
  bool terminal_;
  std::size_t done_ = 0;
};

}  // namespace

std::vector<const templates::KernelFamily*> selected_families(const std::vector<std::string>& names) {
  if (names.empty()) {
    const auto all = templates::registered_families();
    return {all.begin(), all.end()};
  }
  std::vector<const templates::KernelFamily*> families;
  for (const std::string& name : names) families.push_back(&templates::find_family(name));
  return families;
}

void precompile(const GlobalOptions& global, const std::vector<jit::KernelSpec>& work,
                const std::vector<jit::Target>& targets, unsigned jobs) {
  const auto start = std::chrono::steady_clock::now();
  if (work.empty()) throw std::runtime_error("nothing to compile");

  db::Database database = db::Database::open(database_path(global));
  runtime::DatabaseCubinStore store(database);
  jit::KernelProvider provider(&store);
  Progress progress(work.size());
  const tuner::CompileSummary summary =
      tuner::compile_in_parallel(provider, work, jobs, [&](const jit::KernelSpec& spec, bool compiled) {
        progress.step(spec.label + " " + spec.request.target.name(), compiled);
      });
  if (!summary.failures.empty())
    throw std::runtime_error("precompile: " + std::to_string(summary.failures.size()) +
                             " specialization(s) did not compile; the first: " + summary.failures.front());
  const std::size_t compiled = summary.compiled;

  std::string target_names;
  for (const jit::Target& target : targets)
    target_names += (target_names.empty() ? "" : ", ") + target.name();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << work.size() << " specializations for " << target_names << ": " << compiled
            << " compiled, " << work.size() - compiled << " already in "
            << database.path().string() << " (" << format_fixed(seconds, 1) << " s)\n";
}

void add_precompile_command(CLI::App& app, GlobalOptions& global) {
  auto options = std::make_shared<PrecompileOptions>();
  CLI::App* command = app.add_subcommand(
      "precompile",
      "Compile every registered kernel specialization into the database, without a GPU.\n"
      "A later run on a GPU of that target loads them instead of compiling.");
  command->add_option("--arch", options->archs,
                      "target(s), e.g. sm_80 sm_90 sm_90a (default: the local GPUs')");
  command->add_option("--family", options->families, "only these kernel families");
  command->add_option("-j,--jobs", options->jobs, "parallel NVRTC compiles")
      ->check(CLI::Range(1u, 256u));
  command->callback([&global, options] {
    const std::vector<const templates::KernelFamily*> families = selected_families(options->families);
    const std::vector<jit::Target> targets = targets_to_build(*options);
    std::vector<jit::KernelSpec> work;
    for (const jit::Target& target : targets)
      for (const templates::KernelFamily* family : families)
        for (jit::KernelSpec& spec : family->enumerate(target)) work.push_back(std::move(spec));
    precompile(global, work, targets, options->jobs);
  });
}

}  // namespace sparsejit::tools
