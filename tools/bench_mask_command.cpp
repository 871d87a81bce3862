// sparsejit bench mask: time the mask build on this GPU (block_score's pool and score, then
// block_select) for one shape, by the tuner's protocol: each step alone and the whole build,
// with the configs used. tools/compare_peers.py mask puts it next to cuDNN's dense attention
// for the same shape (the budget: the whole build within 2% of it).
// With --quality it measures the masks' quality against exact dense attention instead
// (tools/bench_mask_quality.h).
#include <algorithm>
#include <cmath>
#include <iostream>
#include <random>

#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "runtime/runtime.h"
#include "templates/block_score/block_score_family.h"
#include "templates/block_select/block_select_family.h"
#include "templates/sparse_attention/block_mask.h"
#include "tools/bench_mask_quality.h"
#include "tools/cli_common.h"
#include "tuner/timing.h"

namespace sparsejit::tools {
namespace {

struct MaskBenchOptions {
  int heads = 40;
  int tokens = 75600;
  int head_dim = 128;
  int tile = 16;
  int block = 128;
  double density = 0.3;
  int fine_n = 0;
  double fine_share = 0.9;
  bool first_block_by_score = false;
  std::string dtype = "bf16";
  std::uint64_t seed = 0;
  bool no_database = false;
  bool json = false;
  tuner::TimingOptions timing;
};

nlohmann::json timing_json(const tuner::Timing& timing) {
  return {{"median_ms", timing.median_ms}, {"p20_ms", timing.p20_ms}, {"p80_ms", timing.p80_ms}};
}

int run_bench_mask(const GlobalOptions& global, const MaskBenchOptions& o) {
  using namespace templates;
  const HalfDtype dtype = o.dtype == "fp16" ? HalfDtype::fp16 : HalfDtype::bf16;
  const BlockSelectConfig select_config = block_select_config(o.block, o.block, o.fine_n, dtype, o.head_dim, o.tile);
  if (const std::string problem = block_select_config_problem(select_config); !problem.empty())
    throw CLI::ValidationError("--fine-n", problem);  // before any GPU work, not as NVRTC's static assertion
  std::string why;
  if (!jit::driver_available(&why)) {
    std::fprintf(stderr, "sparsejit: %s; bench needs a GPU\n", why.c_str());
    return kExitNoGpu;
  }
  runtime::Runtime runtime(runtime_options(global, !o.no_database));
  runtime.context().make_current();
  const int max_shared = runtime.device().max_shared_bytes_per_block;
  const BlockScoreConfig score_config =
      default_block_score_config(dtype, o.head_dim, o.tile, o.block, o.block, max_shared);
  const BlockScoreShape shape = block_score_shape(o.tokens, o.tokens, o.tile, o.block, o.block);
  const int top_k = kept_blocks_per_row(o.density, shape.kv_blocks);

  // Q and K in the models' [B, N, H, D] layout, B = 1; K is Q's values rotated by a third.
  std::mt19937_64 generator(o.seed);
  std::vector<std::uint16_t> values =
      repeated_random_half(static_cast<std::size_t>(o.heads) * o.tokens * o.head_dim, dtype, generator);
  const jit::DeviceBuffer q = jit::DeviceBuffer::from_host(values);
  std::rotate(values.begin(), values.begin() + static_cast<long>(values.size() / 3), values.end());
  const jit::DeviceBuffer k = jit::DeviceBuffer::from_host(values);
  const std::size_t heads = static_cast<std::size_t>(o.heads);
  jit::DeviceBuffer pooled_q(heads * shape.tiles_q * o.head_dim * 2), pooled_k(heads * shape.tiles_k * o.head_dim * 2),
      tile_lse(heads * shape.tiles_q * 4), scores(heads * shape.q_blocks * shape.kv_blocks * 4),
      count(heads * shape.q_blocks * 4), index(heads * shape.q_blocks * std::max(top_k, 1) * 4),
      fine(heads * shape.q_blocks * std::max(top_k, 1) * 8);

  BlockScoreParams score_params{};
  score_params.q = q.pointer();
  score_params.k = k.pointer();
  score_params.q_batch_stride = score_params.k_batch_stride = static_cast<long long>(o.tokens) * o.heads * o.head_dim;
  score_params.q_head_stride = score_params.k_head_stride = o.head_dim;
  score_params.q_token_stride = score_params.k_token_stride = static_cast<long long>(o.heads) * o.head_dim;
  score_params.pooled_q = pooled_q.pointer();
  score_params.pooled_k = pooled_k.pointer();
  score_params.tile_lse = static_cast<float*>(tile_lse.pointer());
  score_params.scores = static_cast<float*>(scores.pointer());
  score_params.batch = 1;
  score_params.heads = o.heads;
  score_params.tokens_q = score_params.tokens_kv = o.tokens;
  score_params.softmax_scale = 1.0f / std::sqrt(static_cast<float>(o.head_dim));

  BlockSelectParams select_params{};
  select_params.scores = score_params.scores;
  select_params.kv_block_count = static_cast<int*>(count.pointer());
  select_params.kv_block_index = static_cast<int*>(index.pointer());
  select_params.fine_bits = o.fine_n > 0 ? static_cast<unsigned long long*>(fine.pointer()) : nullptr;
  select_params.pooled_q = pooled_q.pointer();
  select_params.pooled_k = pooled_k.pointer();
  select_params.tile_lse = score_params.tile_lse;
  select_params.max_kv_blocks = top_k;
  select_params.batch = 1;
  select_params.heads = o.heads;
  select_params.tokens_q = select_params.tokens_kv = o.tokens;
  select_params.top_k = top_k;
  select_params.fine_share = static_cast<float>(o.fine_share);
  select_params.first_block_by_score = o.first_block_by_score ? 1 : 0;
  select_params.softmax_scale = score_params.softmax_scale;

  jit::KernelProvider& kernels = runtime.kernels();
  const jit::Kernel pool = kernels.kernel(runtime.context(), BlockScoreFamily::render_pool(score_config, runtime.target()));
  const jit::Kernel score = kernels.kernel(runtime.context(), BlockScoreFamily::render_score(score_config, runtime.target()));
  const jit::Kernel select = kernels.kernel(runtime.context(), BlockSelectFamily::render(select_config, runtime.target()));

  jit::Stream stream;
  const auto pool_and_score = [&] {
    BlockScoreFamily::launch(pool, score, score_config, score_params, max_shared, stream.handle());
  };
  const auto select_blocks = [&] { BlockSelectFamily::launch(select, select_config, select_params, stream.handle()); };
  const tuner::Timing scoring = tuner::time_on_stream(pool_and_score, stream.handle(), o.timing);
  const tuner::Timing selecting = tuner::time_on_stream(select_blocks, stream.handle(), o.timing);
  const tuner::Timing whole = tuner::time_on_stream(
      [&] {
        pool_and_score();
        select_blocks();
      },
      stream.handle(), o.timing);
  stream.synchronize();

  const nlohmann::json report = {{"gpu", runtime.device().name},
                                 {"heads", o.heads},
                                 {"tokens", o.tokens},
                                 {"head_dim", o.head_dim},
                                 {"tile", o.tile},
                                 {"block", o.block},
                                 {"dtype", o.dtype},
                                 {"density", o.density},
                                 {"top_k", top_k},
                                 {"fine_n", o.fine_n},
                                 {"pool_and_score", timing_json(scoring)},
                                 {"select", timing_json(selecting)},
                                 {"whole", timing_json(whole)},
                                 {"score_config", score_config.label()},
                                 {"select_config", select_config.label()}};
  if (o.json) {
    std::cout << report.dump() << "\n";
    return kExitOk;
  }
  std::cout << runtime.device().name << ", " << o.dtype << " H=" << o.heads << " N=" << o.tokens
            << " D=" << o.head_dim << ", tiles of " << o.tile << ", blocks " << o.block << ", density "
            << format_fixed(o.density, 2) << " (k = " << top_k << ")"
            << (o.fine_n > 0 ? ", fine " + std::to_string(o.fine_n) : "") << "\n";
  Table table({"step", "median ms", "p20", "p80", "config"});
  const auto add = [&](const char* step, const tuner::Timing& t, const std::string& config) {
    table.add({step, format_fixed(t.median_ms, 3), format_fixed(t.p20_ms, 3), format_fixed(t.p80_ms, 3), config});
  };
  add("pool + score", scoring, score_config.label());
  add("select", selecting, select_config.label());
  add("whole build", whole, "");
  std::cout << table.render();
  return kExitOk;
}

}  // namespace

void add_bench_mask_command(CLI::App& bench, GlobalOptions& global) {
  auto options = std::make_shared<MaskBenchOptions>();
  CLI::App* mask = bench.add_subcommand(
      "mask", "The mask build (pool and score Q/K tiles, select key blocks) for one shape");
  mask->add_option("--heads", options->heads, "heads")->check(CLI::Range(1, 65535));
  mask->add_option("--tokens", options->tokens, "tokens (queries = keys)")->check(CLI::Range(1, 1 << 30));
  mask->add_option("--head-dim", options->head_dim, "head dim")->check(CLI::IsMember({64, 96, 128}));
  mask->add_option("--tile", options->tile, "tokens pooled per tile")->check(CLI::IsMember({8, 16, 32}));
  mask->add_option("--block", options->block, "sparse block size (queries and keys)")
      ->check(CLI::IsMember({64, 128}));
  mask->add_option("--density", options->density, "share of key blocks kept per query block")
      ->check(CLI::Range(0.0, 1.0));
  mask->add_option("--fine-n", options->fine_n, "keys per fine sub-tile (0: no fine bits)")
      ->check(CLI::IsMember({0, 8, 16, 32}));
  mask->add_option("--fine-share", options->fine_share, "share of a kept block's mass its fine bits keep")
      ->check(CLI::Range(0.0, 1.0));
  mask->add_flag("--first-block-by-score", options->first_block_by_score,
                 "keep key block 0 only for its score (default: always, as DFSAttn keeps it for the attention sink)");
  mask->add_option("--dtype", options->dtype, "bf16 or fp16")->check(CLI::IsMember({"bf16", "fp16"}));
  mask->add_option("--seed", options->seed, "seed of the random inputs");
  mask->add_flag("--no-db", options->no_database, "use no database: compile in-process");
  add_timing_options(*mask, options->timing);
  mask->add_flag("--json", options->json, "print one line of JSON");

  // --quality: recall and output error against exact dense attention (bench_mask_quality.h).
  auto quality = std::make_shared<MaskQualityOptions>();
  auto measure_quality = std::make_shared<bool>(false);
  mask->add_flag("--quality", *measure_quality,
                 "measure the masks' quality against exact dense attention instead of timing the build "
                 "(with --quality: --heads defaults to 12 and --fine-n to 16)");
  CLI::Option* grids = mask->add_option("--grid", quality->grids,
                                        "--quality: latent grids FxHxW (default 21x30x52 21x45x80; with --q, "
                                        "the dump's video tokens in raster order)")
                           ->check(shape_validator());
  mask->add_option("--mix", quality->mixes, "--quality: synthetic head mixes (default diffuse mixed local)")
      ->check(CLI::IsMember({"diffuse", "mixed", "local"}));
  mask->add_option("--densities", quality->densities, "--quality: densities (default 0.3 0.2 0.1 0.05)")
      ->check(CLI::Range(0.0, 1.0));
  mask->add_option("--synthetic-v", quality->synthetic_v,
                   "--quality: V of the synthetic inputs, generator (default: a projection of the smooth latent "
                   "features) or random (seeded, i.i.d. per token, following each token into either order: a "
                   "diagnostic that takes V's spatial smoothness out of the output error)")
      ->check(CLI::IsMember({"generator", "random"}));
  mask->add_option("--q", quality->q_file, "--quality: a user's Q dump (.npy, [N, H, D] or [H, N, D])")
      ->check(CLI::ExistingFile);
  mask->add_option("--k", quality->k_file, "--quality: the K dump (with --q)")->check(CLI::ExistingFile);
  mask->add_option("--v", quality->v_file, "--quality: the V dump (optional; without: seeded random V)")
      ->check(CLI::ExistingFile);
  mask->add_option("--layout", quality->layout, "--quality: the dumps' layout, auto, nhd or hnd (default auto)")
      ->check(CLI::IsMember({"auto", "nhd", "hnd"}));
  CLI::Option* heads = mask->get_option("--heads");
  CLI::Option* fine_n = mask->get_option("--fine-n");
  mask->callback([&global, options, quality, measure_quality, grids, heads, fine_n] {
    if (!*measure_quality) {
      global.exit_code = run_bench_mask(global, *options);
      return;
    }
    if (quality->q_file.empty() != quality->k_file.empty())
      throw CLI::ValidationError("--q and --k", "a dump needs both Q and K");
    if (!quality->q_file.empty() && quality->synthetic_v != "generator")
      throw CLI::ValidationError("--synthetic-v", "is for the synthetic inputs; a dump's V is --v (else seeded random)");
    MaskQualityOptions o = *quality;
    if (heads->count() > 0) o.heads = options->heads;
    if (fine_n->count() > 0) o.fine_n = options->fine_n;
    if (!o.q_file.empty() && grids->count() == 0) o.grids.clear();
    o.head_dim = options->head_dim;
    o.tile = options->tile;
    o.block = options->block;
    o.fine_share = options->fine_share;
    o.first_block_by_score = options->first_block_by_score;
    o.dtype = options->dtype;
    o.seed = options->seed;
    o.no_database = options->no_database;
    o.json = options->json;
    global.exit_code = run_mask_quality(global, o);
  });
}

}  // namespace sparsejit::tools
