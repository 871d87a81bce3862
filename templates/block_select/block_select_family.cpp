#include "templates/block_select/block_select_family.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "templates/common/ceil_div.h"
#include "templates/sparse_attention/block_mask.h"

namespace sparsejit::templates {
std::string BlockSelectConfig::name_expression() const {
  return "sparsejit::block_select<" + std::to_string(block_q) + ", " + std::to_string(block_kv) + ", " +
         std::to_string(fine_n) + ", " + std::to_string(dtype_template_code(dtype)) + ", " +
         std::to_string(head_dim) + ", " + std::to_string(tile) + ">";
}

std::string BlockSelectConfig::label() const {
  std::string label = "block_select<" + std::to_string(block_q) + "x" + std::to_string(block_kv);
  if (fine_n > 0)
    label += " fine " + std::to_string(fine_n) + " " + std::string(to_string(dtype)) + " D=" +
             std::to_string(head_dim) + " t=" + std::to_string(tile);
  return label + ">";
}

BlockSelectConfig block_select_config(int block_q, int block_kv, int fine_n, HalfDtype dtype, int head_dim,
                                      int tile) {
  if (fine_n == 0) return {block_q, block_kv, 0, HalfDtype::bf16, 0, 0};
  return {block_q, block_kv, fine_n, dtype, head_dim, tile};
}

std::string block_select_config_problem(const BlockSelectConfig& c) {
  if (!table_contains(kSelectBlockSizes, c.block_q) || !table_contains(kSelectBlockSizes, c.block_kv))
    return "sparse block sizes must be 64 or 128 (got " + std::to_string(c.block_q) + "x" +
           std::to_string(c.block_kv) + ")";
  if (c.fine_n == 0) {
    if (c.dtype != HalfDtype::bf16 || c.head_dim != 0 || c.tile != 0)
      return "without fine bits dtype, head dim and tile are unused and must be bf16, 0, 0 "
             "(block_select_config makes such a config)";
    return {};
  }
  if (!fine_granularity_valid(c.block_q, c.block_kv, c.fine_n))
    return "fine sub-tiles of 16x" + std::to_string(c.fine_n) + " do not fit one 64-bit word for " +
           std::to_string(c.block_q) + "x" + std::to_string(c.block_kv) + " blocks";
  if (!table_contains(kSelectHeadDims, c.head_dim))
    return "head dim " + std::to_string(c.head_dim) + " is not supported (64, 96 or 128)";
  if (!table_contains(kSelectTileTokens, c.tile))
    return "tiles of " + std::to_string(c.tile) + " tokens are not supported (8, 16 or 32)";
  return {};
}

int block_select_min_row_pitch(int kv_blocks, int top_k, int text_blocks) {
  // First and diagonal block (possibly the same, or among the text blocks) and the text blocks.
  return std::min(kv_blocks, std::max(top_k, 2 + text_blocks));
}

jit::KernelSpec BlockSelectFamily::render(const BlockSelectConfig& config, const jit::Target& target) {
  jit::KernelSpec spec;
  spec.family = "block_select";
  spec.label = config.label();
  spec.name_expression = config.name_expression();
  spec.request = render_program("block_select.cu", "block_select/block_select.cuh",
                                {"block_select/block_select.cuh", "block_select/block_select_params.h",
                                 "common/ptx.cuh"},
                                spec.name_expression, target);
  return spec;
}

std::vector<jit::KernelSpec> BlockSelectFamily::enumerate(const jit::Target& target) const {
  std::vector<jit::KernelSpec> space;
  for (int block_q : kSelectBlockSizes)
    for (int block_kv : kSelectBlockSizes)
      for (int fine_n : kSelectFineN) {
        if (fine_n == 0) {
          space.push_back(render(block_select_config(block_q, block_kv, 0), target));
          continue;
        }
        if (!fine_granularity_valid(block_q, block_kv, fine_n)) continue;
        for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
          for (int head_dim : kSelectHeadDims)
            for (int tile : kSelectTileTokens)
              space.push_back(render(block_select_config(block_q, block_kv, fine_n, dtype, head_dim, tile), target));
      }
  return space;
}

void BlockSelectFamily::validate(const BlockSelectConfig& config, const BlockSelectParams& p) {
  const auto fail = [](const std::string& why) { throw std::invalid_argument("block_select: " + why); };
  if (const std::string problem = block_select_config_problem(config); !problem.empty()) fail(problem);
  if (p.batch < 1 || p.heads < 1 || p.tokens_q < 1 || p.tokens_kv < 1)
    fail("batch, heads, tokens_q and tokens_kv must be positive (got " + std::to_string(p.batch) + ", " +
         std::to_string(p.heads) + ", " + std::to_string(p.tokens_q) + ", " + std::to_string(p.tokens_kv) + ")");
  if (p.heads > 65535 || p.batch > 65535) fail("heads and batch must each be at most 65535");
  const int kv_blocks = ceil_div(p.tokens_kv, config.block_kv);
  if (kv_blocks > kMaxSelectKvBlocks)
    fail(std::to_string(kv_blocks) + " key blocks, more than the " + std::to_string(kMaxSelectKvBlocks) +
         " a row can sort (tokens_kv " + std::to_string(p.tokens_kv) + " at blocks of " +
         std::to_string(config.block_kv) + ")");
  if (p.scores == nullptr || p.kv_block_count == nullptr || p.kv_block_index == nullptr)
    fail("scores, kv_block_count and kv_block_index must not be null");
  if (p.top_k < 0) fail("top_k = " + std::to_string(p.top_k) + " is negative (0 selects the threshold mode)");
  if (p.top_k_per_head != nullptr && p.top_k == 0)
    fail("top_k_per_head needs top_k > 0, the largest per-head k (top_k = 0 selects the threshold mode)");
  if (p.top_k == 0 && !(p.threshold >= 0.f && p.threshold <= 1.f))
    fail("threshold = " + std::to_string(p.threshold) + " is outside [0, 1] (threshold mode: top_k = 0)");
  if (p.text_blocks < 0 || p.text_blocks > kv_blocks)
    fail("text_blocks = " + std::to_string(p.text_blocks) + " is outside 0.." + std::to_string(kv_blocks));
  if (p.first_block_by_score != 0 && p.first_block_by_score != 1)
    fail("first_block_by_score = " + std::to_string(p.first_block_by_score) + " is neither 0 nor 1");
  const int min_pitch = block_select_min_row_pitch(kv_blocks, p.top_k, p.text_blocks);
  if (p.max_kv_blocks < min_pitch || p.max_kv_blocks > kv_blocks)
    fail("max_kv_blocks = " + std::to_string(p.max_kv_blocks) + " is outside " + std::to_string(min_pitch) + ".." +
         std::to_string(kv_blocks) + " (the always-kept blocks" + (p.top_k > 0 ? " and top_k" : "") +
         " must fit a row)");
  if (config.fine_n == 0) {
    if (p.fine_bits != nullptr) fail("fine_bits were given to a specialization without fine bits (fine_n = 0)");
    return;
  }
  if (p.fine_bits == nullptr || p.pooled_q == nullptr || p.pooled_k == nullptr || p.tile_lse == nullptr)
    fail("the specialization computes fine bits of width " + std::to_string(config.fine_n) +
         ": fine_bits, pooled_q, pooled_k and tile_lse must not be null");
  if (reinterpret_cast<std::uintptr_t>(p.pooled_k) % 16 != 0 || reinterpret_cast<std::uintptr_t>(p.pooled_q) % 4 != 0)
    fail("pooled_k must be 16-byte aligned and pooled_q 4-byte aligned");
  if (!(p.fine_share > 0.f && p.fine_share <= 1.f))
    fail("fine_share = " + std::to_string(p.fine_share) + " is outside (0, 1]");
  if (!(p.softmax_scale > 0.f) || !std::isfinite(p.softmax_scale))
    fail("softmax_scale must be positive and finite (got " + std::to_string(p.softmax_scale) + ")");
}

jit::LaunchConfig BlockSelectFamily::geometry(const BlockSelectConfig& config, const BlockSelectParams& p,
                                              CUstream stream) {
  jit::LaunchConfig launch;
  launch.grid = {static_cast<unsigned>(ceil_div(p.tokens_q, config.block_q)), static_cast<unsigned>(p.heads),
                 static_cast<unsigned>(p.batch)};
  launch.block = {static_cast<unsigned>(kSelectThreads), 1, 1};
  launch.stream = stream;
  return launch;
}

void BlockSelectFamily::launch(const jit::Kernel& kernel, const BlockSelectConfig& config,
                               const BlockSelectParams& params, CUstream stream) {
  validate(config, params);
  BlockSelectParams copy = params;
  void* args[] = {&copy};
  kernel.launch(geometry(config, params, stream), args);
}

}  // namespace sparsejit::templates
