#include "templates/block_score/block_score_family.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "templates/common/ceil_div.h"
#include "templates/sparse_attention/attention_family.h"

namespace sparsejit::templates {
namespace {

// The problem part of a config (everything but the tunable CTA and step).
std::string problem_part_problem(int head_dim, int tile, int block_q, int block_kv) {
  if (!table_contains(kScoreHeadDims, head_dim))
    return "head dim " + std::to_string(head_dim) + " is not supported (64, 96 or 128)";
  if (!table_contains(kScoreTileTokens, tile))
    return "tiles of " + std::to_string(tile) + " tokens are not supported (8, 16 or 32)";
  if (!table_contains(kScoreBlockSizes, block_q) || !table_contains(kScoreBlockSizes, block_kv))
    return "sparse block sizes must be 64 or 128 (got " + std::to_string(block_q) + "x" +
           std::to_string(block_kv) + ")";
  return {};
}

}  // namespace

std::string BlockScoreConfig::pool_name_expression() const {
  return "sparsejit::pool_tiles<" + std::to_string(dtype_template_code(dtype)) + ", " + std::to_string(head_dim) +
         ", " + std::to_string(tile) + ", " + std::to_string(kPoolThreads) + ">";
}

std::string BlockScoreConfig::score_name_expression() const {
  return "sparsejit::score_blocks<" + std::to_string(dtype_template_code(dtype)) + ", " + std::to_string(head_dim) +
         ", " + std::to_string(tile) + ", " + std::to_string(block_q) + ", " + std::to_string(block_kv) +
         ", " + std::to_string(warps) + ", " + std::to_string(step_tiles) + ">";
}

std::string BlockScoreConfig::label() const {
  return "block_score<" + std::string(to_string(dtype)) + " D=" + std::to_string(head_dim) + " t=" +
         std::to_string(tile) + " blocks " + std::to_string(block_q) + "x" + std::to_string(block_kv) +
         " w" + std::to_string(warps) + " step " + std::to_string(step_tiles) + ">";
}

int BlockScoreConfig::shared_bytes() const { return (16 * warps + 2 * step_tiles) * (head_dim + 8) * 2; }

std::string BlockScoreConfig::tuning_json() const {
  return nlohmann::json{{"warps", warps}, {"step_tiles", step_tiles}}.dump();
}

BlockScoreShape block_score_shape(int tokens_q, int tokens_kv, int tile, int block_q, int block_kv) {
  return {ceil_div(tokens_q, tile), ceil_div(tokens_kv, tile), ceil_div(tokens_q, block_q),
          ceil_div(tokens_kv, block_kv)};
}

std::string block_score_config_problem(const BlockScoreConfig& c, int max_shared_bytes) {
  if (std::string problem = problem_part_problem(c.head_dim, c.tile, c.block_q, c.block_kv);
      !problem.empty())
    return problem;
  if (!table_contains(kScoreWarps, c.warps)) return "warps must be 4 or 8 (got " + std::to_string(c.warps) + ")";
  if (!table_contains(kScoreStepTiles, c.step_tiles))
    return "a step must hold 32 or 64 key tiles (got " + std::to_string(c.step_tiles) + ")";
  if (c.shared_bytes() > max_shared_bytes)
    return "the CTA needs " + std::to_string(c.shared_bytes()) + " bytes of shared memory, more than " +
           std::to_string(max_shared_bytes);
  return {};
}

BlockScoreConfig default_block_score_config(HalfDtype dtype, int head_dim, int tile, int block_q,
                                            int block_kv, int max_shared_bytes) {
  if (std::string problem = problem_part_problem(head_dim, tile, block_q, block_kv); !problem.empty())
    throw std::invalid_argument("block_score: " + problem);
  // H100, 40 heads x 75,600 tokens x 128, t = 16, blocks 128 (2026-11-22): pool + score take
  // 3.16 ms with 4 warps x 32 key tiles, 3.19 (8 x 64), 3.28 (8 x 32), 3.31 (4 x 64).
  for (int step_tiles : {32, 64}) {
    const BlockScoreConfig config{dtype, head_dim, tile, block_q, block_kv, 4, step_tiles};
    if (block_score_config_problem(config, max_shared_bytes).empty()) return config;
  }
  const BlockScoreConfig smallest{dtype, head_dim, tile, block_q, block_kv, 4, 32};
  throw std::invalid_argument("block_score: no CTA fits " + smallest.label() + ": " +
                              block_score_config_problem(smallest, max_shared_bytes));
}

jit::KernelSpec BlockScoreFamily::render_pool(const BlockScoreConfig& config, const jit::Target& target) {
  jit::KernelSpec spec;
  spec.family = "block_score";
  spec.label = "pool_tiles<" + std::string(to_string(config.dtype)) + " D=" + std::to_string(config.head_dim) +
               " t=" + std::to_string(config.tile) + ">";
  spec.name_expression = config.pool_name_expression();
  spec.request = render_program("block_score.cu", "block_score/block_score.cuh",
                                {"block_score/block_score.cuh", "block_score/block_score_params.h",
                                 "common/mma_tiles.cuh", "common/ptx.cuh"},
                                spec.name_expression, target);
  return spec;
}

jit::KernelSpec BlockScoreFamily::render_score(const BlockScoreConfig& config, const jit::Target& target) {
  jit::KernelSpec spec = render_pool(config, target);
  spec.label = config.label();
  spec.name_expression = config.score_name_expression();
  spec.request.name_expressions = {spec.name_expression};
  return spec;
}

std::vector<jit::KernelSpec> BlockScoreFamily::enumerate(const jit::Target& target) const {
  const int max_shared = max_shared_bytes_for(target);
  std::vector<jit::KernelSpec> space;
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kScoreHeadDims)
      for (int tile : kScoreTileTokens) space.push_back(render_pool({dtype, head_dim, tile}, target));
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kScoreHeadDims)
      for (int tile : kScoreTileTokens)
        for (int block_q : kScoreBlockSizes)
          for (int block_kv : kScoreBlockSizes)
            for (int warps : kScoreWarps)
              for (int step_tiles : kScoreStepTiles) {
                const BlockScoreConfig config{dtype, head_dim, tile, block_q, block_kv, warps, step_tiles};
                if (block_score_config_problem(config, max_shared).empty())
                  space.push_back(render_score(config, target));
              }
  return space;
}

void BlockScoreFamily::validate(const BlockScoreConfig& config, const BlockScoreParams& p,
                                int max_shared_bytes) {
  const auto fail = [](const std::string& why) { throw std::invalid_argument("block_score: " + why); };
  if (const std::string problem = block_score_config_problem(config, max_shared_bytes); !problem.empty())
    fail(problem);
  if (p.batch < 1 || p.heads < 1 || p.tokens_q < 1 || p.tokens_kv < 1)
    fail("batch, heads, tokens_q and tokens_kv must be positive (got " + std::to_string(p.batch) + ", " +
         std::to_string(p.heads) + ", " + std::to_string(p.tokens_q) + ", " + std::to_string(p.tokens_kv) + ")");
  if (p.heads > 65535 || p.batch > 32767) fail("heads must be at most 65535 and batch at most 32767");
  if (!(p.softmax_scale > 0.f) || !std::isfinite(p.softmax_scale))
    fail("softmax_scale must be positive and finite (got " + std::to_string(p.softmax_scale) + ")");
  const struct {
    const char* name;
    const void* pointer;
    long long token_stride, head_stride, batch_stride;
  } inputs[] = {{"q", p.q, p.q_token_stride, p.q_head_stride, p.q_batch_stride},
                {"k", p.k, p.k_token_stride, p.k_head_stride, p.k_batch_stride}};
  for (const auto& input : inputs) {  // rows read in 16-byte chunks
    if (input.pointer == nullptr) fail(std::string(input.name) + " is null");
    if (!aligned_16(input.pointer) || (input.token_stride * 2) % 16 != 0)
      fail(std::string(input.name) + ": the pointer and the token stride (in bytes) must be multiples of 16");
    if (const std::string problem =
            row_stride_problem(input.name, input.head_stride, p.heads, input.batch_stride, p.batch, 16);
        !problem.empty())
      fail(problem);
  }
  const struct {
    const char* name;
    const void* pointer;
  } outputs[] = {{"pooled_q", p.pooled_q}, {"pooled_k", p.pooled_k}, {"tile_lse", p.tile_lse}, {"scores", p.scores}};
  for (const auto& output : outputs) {
    if (output.pointer == nullptr) fail(std::string(output.name) + " is null");
    if (!aligned_16(output.pointer)) fail(std::string(output.name) + " must be 16-byte aligned");
  }
}

jit::LaunchConfig BlockScoreFamily::pool_geometry(const BlockScoreConfig& config, const BlockScoreParams& p,
                                                  CUstream stream) {
  const BlockScoreShape shape = block_score_shape(p.tokens_q, p.tokens_kv, config.tile, config.block_q, config.block_kv);
  const long long chunks = static_cast<long long>(std::max(shape.tiles_q, shape.tiles_k)) * (config.head_dim / 8);
  jit::LaunchConfig launch;
  launch.grid = {static_cast<unsigned>((chunks + kPoolThreads - 1) / kPoolThreads), static_cast<unsigned>(p.heads),
                 static_cast<unsigned>(p.batch * 2)};
  launch.block = {static_cast<unsigned>(kPoolThreads), 1, 1};
  launch.stream = stream;
  return launch;
}

jit::LaunchConfig BlockScoreFamily::score_geometry(const BlockScoreConfig& config, const BlockScoreParams& p,
                                                   CUstream stream) {
  const BlockScoreShape shape = block_score_shape(p.tokens_q, p.tokens_kv, config.tile, config.block_q, config.block_kv);
  jit::LaunchConfig launch;
  launch.grid = {static_cast<unsigned>(ceil_div(shape.tiles_q, 16 * config.warps)), static_cast<unsigned>(p.heads),
                 static_cast<unsigned>(p.batch)};
  launch.block = {static_cast<unsigned>(config.warps * 32), 1, 1};
  launch.dynamic_shared_bytes = static_cast<unsigned>(config.shared_bytes());
  launch.stream = stream;
  return launch;
}

void BlockScoreFamily::launch(const jit::Kernel& pool, const jit::Kernel& score, const BlockScoreConfig& config,
                              const BlockScoreParams& params, int max_shared_bytes, CUstream stream) {
  validate(config, params, max_shared_bytes);
  score.allow_dynamic_shared_bytes(static_cast<unsigned>(config.shared_bytes()));
  BlockScoreParams copy = params;
  void* args[] = {&copy};
  pool.launch(pool_geometry(config, params, stream), args);
  score.launch(score_geometry(config, params, stream), args);
}

}  // namespace sparsejit::templates
