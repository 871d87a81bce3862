// sparsejit bench attention: time sparse attention on this GPU for one shape and mask, by the
// tuner's protocol; the mask is random at a density, or read from files (as
// tools/compare_peers.py writes them, so that the peers run the same kept blocks).
#include <cmath>
#include <functional>
#include <optional>
#include <fstream>
#include <iostream>
#include <random>
#include <tuple>
#include <vector>

#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "runtime/runtime.h"
#include "templates/sparse_attention/block_mask.h"
#include "tools/cli_common.h"
#include "tuner/timing.h"

namespace sparsejit::tools {
namespace {

struct AttentionBenchOptions {
  int batch = 1;
  int heads = 12;
  int tokens = 32768;
  int head_dim = 128;
  int block = 128;
  double density = 0.1;
  int fine_n = 0;
  double fine_density = 0.5;
  std::string dtype = "bf16";
  std::string mask_file;
  std::string mask_form = "csr";  // the form the kernel reads: csr or bitmask
  std::uint64_t seed = 0;
  int block_m = 0, block_n = 0, warps = 0;  // 0: the runtime's configuration
  std::string kernel;                        // mma or wgmma; empty: the runtime's
  int stages = 0;                            // wgmma pipeline stages; 0: the runtime's
  std::string grid;                          // wgmma: persistent or per-item; empty: the runtime's
  bool no_database = false;
  bool json = false;
  tuner::TimingOptions timing;
};

std::vector<int> read_int32_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot read " + path);
  const std::streamsize bytes = in.tellg();
  if (bytes % 4 != 0) throw std::runtime_error(path + ": size " + std::to_string(bytes) + " is not whole int32s");
  std::vector<int> values(static_cast<std::size_t>(bytes / 4));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(values.data()), bytes);
  return values;
}

// PREFIX.count.i32: int32 [B, H, QB]; PREFIX.index.i32: int32 [B, H, QB, max_kv] (C order).
templates::BlockMask read_mask(const AttentionBenchOptions& o) {
  templates::BlockMask mask;
  mask.batch = o.batch;
  mask.heads = o.heads;
  mask.q_blocks = mask.kv_blocks = (o.tokens + o.block - 1) / o.block;
  mask.block_q = mask.block_kv = o.block;
  mask.count = read_int32_file(o.mask_file + ".count.i32");
  mask.index = read_int32_file(o.mask_file + ".index.i32");
  const std::size_t rows = static_cast<std::size_t>(o.batch) * o.heads * mask.q_blocks;
  if (mask.count.size() != rows)
    throw std::runtime_error(o.mask_file + ".count.i32 holds " + std::to_string(mask.count.size()) +
                             " counts; [B, H, QB] needs " + std::to_string(rows));
  if (mask.index.size() % rows != 0)
    throw std::runtime_error(o.mask_file + ".index.i32 is not [B, H, QB, max_kv]");
  mask.max_kv_blocks = static_cast<int>(mask.index.size() / rows);
  templates::validate_block_mask(mask, o.tokens, o.tokens);
  return mask;
}

int run_bench_attention(const GlobalOptions& global, const AttentionBenchOptions& o) {
  std::string why;
  if (!jit::driver_available(&why)) {
    std::fprintf(stderr, "sparsejit: %s; bench needs a GPU\n", why.c_str());
    return kExitNoGpu;
  }
  runtime::Runtime runtime(runtime_options(global, !o.no_database));
  runtime.context().make_current();
  const auto dtype = o.dtype == "fp16" ? templates::HalfDtype::fp16 : templates::HalfDtype::bf16;

  std::mt19937_64 generator(o.seed);
  const templates::BlockMask mask =
      o.mask_file.empty() ? templates::random_block_mask(o.batch, o.heads, o.tokens, o.tokens, o.block,
                                                         o.block, o.density, generator, true, o.fine_n,
                                                         o.fine_density)
                          : read_mask(o);
  // Q, then K and V as the same values rotated by a third.
  const std::size_t elements = static_cast<std::size_t>(o.batch) * o.heads * o.tokens * o.head_dim;
  std::vector<std::uint16_t> host = repeated_random_half(elements, dtype, generator);
  jit::DeviceBuffer q = jit::DeviceBuffer::from_host(host);
  std::rotate(host.begin(), host.begin() + static_cast<long>(elements / 3), host.end());
  jit::DeviceBuffer k = jit::DeviceBuffer::from_host(host);
  std::rotate(host.begin(), host.begin() + static_cast<long>(elements / 3), host.end());
  jit::DeviceBuffer v = jit::DeviceBuffer::from_host(host);
  jit::DeviceBuffer out(elements * 2);
  const bool bitmask_form = o.mask_form == "bitmask";
  jit::DeviceBuffer count, index, bits;
  if (bitmask_form) {
    bits = jit::DeviceBuffer::from_host(templates::to_bitmask(mask).bits);
  } else {
    count = jit::DeviceBuffer::from_host(mask.count);
    index = jit::DeviceBuffer::from_host(mask.index.empty() ? std::vector<int>{0} : mask.index);
  }
  jit::DeviceBuffer fine;
  if (o.fine_n > 0) fine = jit::DeviceBuffer::from_host(mask.fine_bits);

  SparseAttentionParams params{};
  params.q = q.pointer();
  params.k = k.pointer();
  params.v = v.pointer();
  params.o = out.pointer();
  const long long d = o.head_dim, n = o.tokens, h = o.heads;
  params.q_batch_stride = params.k_batch_stride = params.v_batch_stride = params.o_batch_stride = h * n * d;
  params.q_head_stride = params.k_head_stride = params.v_head_stride = params.o_head_stride = n * d;
  params.q_token_stride = params.k_token_stride = params.v_token_stride = params.o_token_stride = d;
  if (bitmask_form) {
    params.kv_block_bits = static_cast<const unsigned long long*>(bits.pointer());
    params.kv_block_words = templates::bitmask_words(mask.kv_blocks);
  } else {
    params.kv_block_count = static_cast<const int*>(count.pointer());
    params.kv_block_index = static_cast<const int*>(index.pointer());
  }
  params.fine_bits = o.fine_n > 0 ? static_cast<const unsigned long long*>(fine.pointer()) : nullptr;
  params.max_kv_blocks = mask.max_kv_blocks;
  params.batch = o.batch;
  params.heads = o.heads;
  params.tokens_q = params.tokens_kv = o.tokens;
  params.softmax_scale = 1.0f / std::sqrt(static_cast<float>(o.head_dim));
  const runtime::AttentionProblem problem{dtype, o.head_dim, o.block, o.block, o.fine_n};

  jit::Stream stream;
  runtime.sparse_attention(params, problem, stream.handle(), /*check_mask=*/true);  // validates once
  stream.synchronize();
  // A tile given on the command line runs that specialization directly; otherwise the
  // runtime's choice, through its public entry point.
  const runtime::AttentionChoice& choice =
      runtime.attention_config(problem, templates::attention_call_shape(params, o.block));
  templates::AttentionConfig config = choice.config;
  config.bitmask = bitmask_form;
  std::function<void()> launch = [&] { runtime.sparse_attention(params, problem, stream.handle()); };
  std::optional<jit::Kernel> kernel;
  const bool tile_given = o.block_m != 0 || o.block_n != 0 || o.warps != 0 || !o.kernel.empty() || o.stages != 0 ||
                          !o.grid.empty();
  // Where the configuration came from: "exact (tuned for KEY)", "built-in default", ...
  std::string origin = tile_given ? "command line" : std::string(runtime::to_string(choice.level));
  if (!tile_given && !choice.source_key.empty())
    origin += " (tuned for " + choice.source_key +
              (choice.level == runtime::LookupLevel::same_compute_capability ? " on " + choice.source_gpu : "") + ")";
  if (tile_given) {
    // Another kernel than the runtime's choice starts from that kernel's built-in default tile
    // (for wgmma where the built-in default of the problem is the mma.sync kernel, as with fine
    // bits at D = 64 and 64 x 64 blocks: its widest tile, then the most stages).
    if (!o.kernel.empty() && (o.kernel == "wgmma") != config.wgmma) {
      const int max_shared = runtime.device().max_shared_bytes_per_block;
      if (o.kernel == "mma") {
        config = templates::default_attention_config(dtype, o.head_dim, o.block, o.block, o.fine_n, max_shared);
      } else {
        config = templates::default_attention_config(dtype, o.head_dim, o.block, o.block, o.fine_n, runtime.target());
        if (!config.wgmma) {
          std::optional<templates::AttentionConfig> widest;
          for (const templates::AttentionConfig& tile : templates::attention_tiles(
                   dtype, o.head_dim, o.block, o.block, o.fine_n, bitmask_form, runtime.target()))
            if (tile.wgmma && (!widest || std::tuple(tile.block_m, tile.block_n, tile.stages) >
                                              std::tuple(widest->block_m, widest->block_n, widest->stages)))
              widest = tile;
          if (!widest)
            throw std::invalid_argument("the wgmma kernel has no tile for this problem on this GPU (" +
                                        runtime.device().name + ", " + runtime.target().name() + ")");
          config = *widest;
        }
      }
      config.bitmask = bitmask_form;
    }
    if (o.block_m != 0) config.block_m = o.block_m;
    if (o.block_n != 0) config.block_n = o.block_n;
    if (config.wgmma) config.warps = templates::wgmma_warps(config.block_m);
    if (o.warps != 0) config.warps = o.warps;
    if (o.stages != 0) config.stages = o.stages;
    if (!o.grid.empty()) config.persistent = o.grid == "persistent";
    if (const std::string problem =
            templates::attention_config_problem(config, runtime.device().max_shared_bytes_per_block);
        !problem.empty())
      throw std::invalid_argument("the configuration given on the command line is not valid: " + problem);
    kernel = runtime.kernels().kernel(runtime.context(),
                                      templates::SparseAttentionFamily::render(config, runtime.target()));
    launch = [&] {
      templates::SparseAttentionFamily::launch(*kernel, config, params,
                                               runtime.device().max_shared_bytes_per_block, stream.handle());
    };
  }
  const tuner::Timing timing = tuner::time_on_stream(launch, stream.handle(), o.timing);
  // Effective TFLOP/s counts whole kept blocks, as DESIGN.md's peer figures do.
  const double kept = mask.density();
  const double flops = 4.0 * o.batch * h * static_cast<double>(n) * static_cast<double>(n) * d * kept;
  const double tflops = flops / (timing.median_ms * 1e9);
  const nlohmann::json report = {{"gpu", runtime.device().name},
                                 {"batch", o.batch},
                                 {"heads", o.heads},
                                 {"tokens", o.tokens},
                                 {"head_dim", o.head_dim},
                                 {"block", o.block},
                                 {"dtype", o.dtype},
                                 {"fine_n", o.fine_n},
                                 {"mask_form", o.mask_form},
                                 {"density", kept},
                                 {"median_ms", timing.median_ms},
                                 {"p20_ms", timing.p20_ms},
                                 {"p80_ms", timing.p80_ms},
                                 {"repetitions", timing.repetitions},
                                 {"effective_tflops", tflops},
                                 {"config", config.label()},
                                 {"problem_key", choice.problem_key},
                                 {"config_level", tile_given ? "command line" : runtime::to_string(choice.level)},
                                 {"config_tuned_for", tile_given || choice.source_key.empty()
                                                          ? nlohmann::json()
                                                          : nlohmann::json(choice.source_key)}};
  if (o.json) {
    std::cout << report.dump() << "\n";
    return kExitOk;
  }
  std::cout << runtime.device().name << ", " << o.dtype << " B=" << o.batch << " H=" << o.heads
            << " N=" << o.tokens << " D=" << o.head_dim << ", blocks " << o.block << ", kept "
            << format_fixed(100 * kept, 1) << "%" << (o.fine_n > 0 ? ", fine " + std::to_string(o.fine_n) : "")
            << (bitmask_form ? ", bitmask" : "")
            << "\n"
            << "config from: " << origin << "\n"
            << config.label() << ": median " << format_fixed(timing.median_ms, 3) << " ms (p20 "
            << format_fixed(timing.p20_ms, 3) << ", p80 " << format_fixed(timing.p80_ms, 3) << "), "
            << format_fixed(tflops, 0) << " effective TFLOP/s\n";
  return kExitOk;
}

}  // namespace

void add_bench_attention_command(CLI::App& bench, GlobalOptions& global) {
  auto options = std::make_shared<AttentionBenchOptions>();
  CLI::App* attention = bench.add_subcommand(
      "attention", "Sparse attention for one shape and block mask (random, or --mask-file)");
  attention->add_option("--batch", options->batch, "batch size")->check(CLI::Range(1, 65535));
  attention->add_option("--heads", options->heads, "heads")->check(CLI::Range(1, 65535));
  attention->add_option("--tokens", options->tokens, "tokens (queries = keys)")->check(CLI::PositiveNumber);
  attention->add_option("--head-dim", options->head_dim, "head dim")->check(CLI::IsMember({64, 96, 128}));
  attention->add_option("--block", options->block, "sparse block size (queries and keys)")
      ->check(CLI::IsMember({64, 128}));
  attention->add_option("--density", options->density, "share of key blocks kept per query block")
      ->check(CLI::Range(0.0, 1.0));
  attention->add_option("--fine-n", options->fine_n, "keys per fine sub-tile (0: no fine bits)")
      ->check(CLI::IsMember({0, 8, 16, 32}));
  attention->add_option("--fine-density", options->fine_density, "share of fine sub-tiles kept")
      ->check(CLI::Range(0.0, 1.0));
  attention->add_option("--dtype", options->dtype, "bf16 or fp16")->check(CLI::IsMember({"bf16", "fp16"}));
  attention->add_option("--mask-file", options->mask_file,
                        "read the mask from PREFIX.count.i32 [B,H,QB] and PREFIX.index.i32 [B,H,QB,max_kv]");
  attention->add_option("--mask-form", options->mask_form,
                        "the mask form the kernel reads: csr (count + index lists) or bitmask")
      ->check(CLI::IsMember({"csr", "bitmask"}));
  attention->add_option("--seed", options->seed, "seed of the random mask and inputs");
  attention->add_option("--block-m", options->block_m, "tile rows (default: the runtime's choice)")
      ->check(CLI::IsMember({64, 128}));
  attention->add_option("--block-n", options->block_n, "tile keys (default: the runtime's choice)")
      ->check(CLI::IsMember({32, 64, 128}));
  attention->add_option("--warps", options->warps, "warps per CTA (default: the runtime's choice)")
      ->check(CLI::IsMember({4, 8, 12}));
  attention->add_option("--kernel", options->kernel,
                        "mma (mma.sync, any GPU) or wgmma (wgmma + TMA, compute capability 9.0); default: the "
                        "runtime's choice. Another kernel than the runtime's choice starts from that kernel's "
                        "built-in default tile; --block-m, --block-n, --warps and --stages change it")
      ->check(CLI::IsMember({"mma", "wgmma"}));
  attention->add_option("--stages", options->stages, "wgmma K/V pipeline stages (default: the runtime's choice)")
      ->check(CLI::IsMember(std::vector<int>(templates::kWgmmaStages.begin(), templates::kWgmmaStages.end())));
  attention->add_option("--grid", options->grid,
                        "wgmma: persistent (one wave of CTAs walking the work items) or per-item (default: the\n"
                        "runtime's choice)")
      ->check(CLI::IsMember({"persistent", "per-item"}));
  attention->add_flag("--no-db", options->no_database, "use no database: compile in-process");
  add_timing_options(*attention, options->timing);
  attention->add_flag("--json", options->json, "print one line of JSON");
  attention->callback([&global, options] { global.exit_code = run_bench_attention(global, *options); });
}

}  // namespace sparsejit::tools
