// sparsejit bench: time kernels on this GPU by the tuner's protocol (tuner/timing.h).
//   bench permute: gather Q/K/V into a token order (or scatter O back) with a layout change,
//   against a device-to-device copy of the same bytes in the same run; also reports the time
//   from process start to the first launch, which shows whether the database was warm.
#include <iostream>
#include <numeric>
#include <random>

#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "runtime/runtime.h"
#include "tools/cli_common.h"
#include "tuner/timing.h"

namespace sparsejit::tools {
namespace {

struct PermuteBenchOptions {
  int batch = 1;
  int heads = 40;
  int tokens = 75600;
  int head_dim = 128;
  int tensors = 3;
  std::string direction = "gather";
  bool no_database = false;
  bool json = false;
  tuner::TimingOptions timing;
};

int run_bench_permute(const GlobalOptions& global, const PermuteBenchOptions& options) {
  const double driver_start_ms = ms_since_process_start();
  std::string why;  // driver_available() opens the driver and runs cuInit, the same for any CUDA program
  if (!jit::driver_available(&why)) {
    std::fprintf(stderr, "sparsejit: %s; bench needs a GPU\n", why.c_str());
    return kExitNoGpu;
  }
  const double driver_ready_ms = ms_since_process_start();
  runtime::Runtime runtime(runtime_options(global, !options.no_database));
  runtime.context().make_current();
  const double runtime_ready_ms = ms_since_process_start();
  const auto direction = options.direction == "scatter" ? templates::PermuteDirection::scatter
                                                        : templates::PermuteDirection::gather;

  // Gather: source [B,N,H,D] (the models' layout) to [B,H,N,D] (the kernels'); scatter: back.
  const long long elements = static_cast<long long>(options.batch) * options.tokens *
                             options.heads * options.head_dim;
  const std::size_t bytes = static_cast<std::size_t>(elements) * 2;
  std::vector<jit::DeviceBuffer> sources, destinations;
  for (int t = 0; t < options.tensors; ++t) {
    sources.emplace_back(bytes);
    destinations.emplace_back(bytes);
    sources.back().fill(static_cast<std::uint8_t>(0x3c + t));  // a bench needs no random data
  }
  std::vector<int> permutation(static_cast<std::size_t>(options.tokens));
  std::iota(permutation.begin(), permutation.end(), 0);
  std::shuffle(permutation.begin(), permutation.end(), std::mt19937(42));
  jit::DeviceBuffer permutation_device = jit::DeviceBuffer::from_host(permutation);

  PermuteParams params{};
  params.tensor_count = options.tensors;
  params.batch = options.batch;
  params.heads = options.heads;
  params.tokens = options.tokens;
  params.permutation = static_cast<const int*>(permutation_device.pointer());
  const bool gather = direction == templates::PermuteDirection::gather;
  for (int t = 0; t < options.tensors; ++t)
    params.tensors[t] = templates::dense_permute_tensor(
        sources[t].pointer(), gather ? templates::TokenLayout::bnhd : templates::TokenLayout::bhnd,
        destinations[t].pointer(), gather ? templates::TokenLayout::bhnd : templates::TokenLayout::bnhd,
        options.heads, options.tokens, options.head_dim);
  jit::Stream stream;
  const double inputs_ready_ms = ms_since_process_start();
  runtime.permute_tokens(params, options.head_dim, direction, stream.handle());
  stream.synchronize();
  const double first_launch_ms = ms_since_process_start();

  const tuner::Timing permute = tuner::time_on_stream(
      [&] { runtime.permute_tokens(params, options.head_dim, direction, stream.handle()); },
      stream.handle(), options.timing);
  const tuner::Timing copy = tuner::time_on_stream(
      [&] {
        for (int t = 0; t < options.tensors; ++t)
          SJ_CU(cuMemcpyDtoDAsync(destinations[t].address(), sources[t].address(), bytes,
                                  stream.handle()));
      },
      stream.handle(), options.timing);
  const runtime::PermuteChoice choice = runtime.permute_config(
      options.head_dim, direction, templates::PermuteFamily::max_vector_bytes(params));
  const double moved = 2.0 * static_cast<double>(bytes) * options.tensors;  // read + write
  const double permute_gbs = moved / (permute.median_ms * 1e6);
  const double copy_gbs = moved / (copy.median_ms * 1e6);
  const nlohmann::json report = {
      {"gpu", runtime.device().name},
      {"shape", {{"batch", options.batch}, {"heads", options.heads}, {"tokens", options.tokens},
                 {"head_dim", options.head_dim}, {"tensors", options.tensors}}},
      {"direction", options.direction},
      {"config", choice.config.label()},
      {"config_source", runtime::to_string(choice.source)},
      {"permute_ms", {{"median", permute.median_ms}, {"p20", permute.p20_ms}, {"p80", permute.p80_ms}}},
      {"copy_ms", {{"median", copy.median_ms}, {"p20", copy.p20_ms}, {"p80", copy.p80_ms}}},
      {"permute_gb_per_s", permute_gbs},
      {"copy_gb_per_s", copy_gbs},
      {"fraction_of_copy", permute_gbs / copy_gbs},
      {"process_start_to_first_launch_ms", first_launch_ms},
      {"startup_ms", {{"before_driver", driver_start_ms},
                      {"driver_init", driver_ready_ms - driver_start_ms},
                      {"context_and_database", runtime_ready_ms - driver_ready_ms},
                      {"bench_inputs", inputs_ready_ms - runtime_ready_ms},
                      {"first_launch", first_launch_ms - inputs_ready_ms}}},
      {"kernels_compiled", runtime.kernels().compiled()},
      {"kernels_from_database", runtime.kernels().store_hits()}};
  if (options.json) {
    std::cout << report.dump(2) << "\n";
    return kExitOk;
  }
  Table table({"what", "median ms", "p20", "p80", "GB/s (read+write)"});
  table.add({"permute " + options.direction, format_fixed(permute.median_ms, 3),
             format_fixed(permute.p20_ms, 3), format_fixed(permute.p80_ms, 3), format_fixed(permute_gbs, 0)});
  table.add({"device copy", format_fixed(copy.median_ms, 3), format_fixed(copy.p20_ms, 3),
             format_fixed(copy.p80_ms, 3), format_fixed(copy_gbs, 0)});
  std::cout << runtime.device().name << ", B=" << options.batch << " H=" << options.heads
            << " N=" << options.tokens << " D=" << options.head_dim << ", " << options.tensors
            << " tensor(s), " << (gather ? "[B,N,H,D] -> [B,H,N,D]" : "[B,H,N,D] -> [B,N,H,D]")
            << ", " << choice.config.label() << " (" << runtime::to_string(choice.source) << ")\n"
            << table.render() << "permute reaches " << format_fixed(100 * permute_gbs / copy_gbs, 1)
            << "% of the copy bandwidth\n"
            << "process start to first launch: " << format_fixed(first_launch_ms, 1) << " ms ("
            << runtime.kernels().store_hits() << " kernel(s) from the database, "
            << runtime.kernels().compiled() << " compiled): " << format_fixed(driver_start_ms, 1)
            << " ms to main, " << format_fixed(driver_ready_ms - driver_start_ms, 1)
            << " ms driver init (cuInit), " << format_fixed(runtime_ready_ms - driver_ready_ms, 1)
            << " ms context and database, " << format_fixed(inputs_ready_ms - runtime_ready_ms, 1)
            << " ms the bench's own inputs, " << format_fixed(first_launch_ms - inputs_ready_ms, 1)
            << " ms first launch (kernel lookup, module load, launch, completion)\n";
  return kExitOk;
}

}  // namespace

void add_bench_command(CLI::App& app, GlobalOptions& global) {
  CLI::App* bench = app.add_subcommand("bench", "Time kernels on this GPU (needs a GPU).");
  bench->require_subcommand(1);
  auto options = std::make_shared<PermuteBenchOptions>();
  CLI::App* permute = bench->add_subcommand(
      "permute", "Token permutation of Q/K/V with a layout change, against a plain copy");
  permute->add_option("--batch", options->batch, "batch size")->check(CLI::Range(1, 65535));
  permute->add_option("--heads", options->heads, "heads")->check(CLI::Range(1, 65535));
  permute->add_option("--tokens", options->tokens, "tokens per sequence")->check(CLI::PositiveNumber);
  permute->add_option("--head-dim", options->head_dim, "head dim")->check(CLI::IsMember({64, 96, 128}));
  permute->add_option("--tensors", options->tensors, "tensors per launch (Q, K, V)")->check(CLI::Range(1, 3));
  permute->add_option("--direction", options->direction, "gather or scatter")
      ->check(CLI::IsMember({"gather", "scatter"}));
  permute->add_flag("--no-db", options->no_database, "use no database: compile in-process");
  add_timing_options(*permute, options->timing);
  permute->add_flag("--json", options->json, "print JSON");
  permute->callback([&global, options] { global.exit_code = run_bench_permute(global, *options); });
  add_bench_attention_command(*bench, global);
  add_bench_mask_command(*bench, global);
}

}  // namespace sparsejit::tools
