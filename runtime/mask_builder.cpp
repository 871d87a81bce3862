#include "runtime/mask_builder.h"

#include <algorithm>
#include <stdexcept>

#include "jit/driver_api.h"
#include "templates/block_score/block_score_family.h"
#include "templates/block_select/block_select_family.h"
#include "templates/common/ceil_div.h"
#include "templates/mask_convert/mask_convert_family.h"
#include "templates/sparse_attention/block_mask.h"

namespace sparsejit::runtime {
namespace {

[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument("mask builder: " + why); }

}  // namespace

std::size_t MaskLayout::bitmask_words() const {
  return rows * static_cast<std::size_t>(templates::bitmask_words(kv_blocks));
}

MaskLayout MaskBuilder::layout(const QueryKeyInputs& inputs, const MaskBuildOptions& options) {
  if (inputs.batch < 1 || inputs.heads < 1 || inputs.tokens_q < 1 || inputs.tokens_kv < 1)
    fail("batch, heads, tokens_q and tokens_kv must be positive (got " + std::to_string(inputs.batch) + ", " +
         std::to_string(inputs.heads) + ", " + std::to_string(inputs.tokens_q) + ", " +
         std::to_string(inputs.tokens_kv) + ")");
  const bool per_head = !options.head_densities.empty();
  const bool by_density = per_head || options.density > 0.0, by_threshold = options.threshold > 0.0;
  if (per_head) {
    if (by_threshold)
      fail("head_densities select top-k per head; threshold must then be 0 (got " +
           std::to_string(options.threshold) + ")");
    if (options.head_densities.size() != static_cast<std::size_t>(inputs.heads))
      fail(std::to_string(options.head_densities.size()) + " head_densities for " + std::to_string(inputs.heads) +
           " heads");
    for (std::size_t h = 0; h < options.head_densities.size(); ++h)
      if (!(options.head_densities[h] > 0.0 && options.head_densities[h] <= 1.0))
        fail("head_densities[" + std::to_string(h) + "] = " + std::to_string(options.head_densities[h]) +
             " is outside (0, 1]");
  } else if (by_density == by_threshold)
    fail("exactly one of density (top-k) and threshold (cumulative share) must be positive (got density " +
         std::to_string(options.density) + ", threshold " + std::to_string(options.threshold) + ")");
  if (by_density && !per_head && !(options.density <= 1.0))  // head_densities replace density
    fail("density " + std::to_string(options.density) + " is above 1");
  if (by_threshold && !(options.threshold <= 1.0))
    fail("threshold " + std::to_string(options.threshold) + " is above 1");
  if (const std::string problem = templates::block_select_config_problem(templates::block_select_config(
          options.block_q, options.block_kv, options.fine_n, inputs.dtype, inputs.head_dim, options.tile));
      !problem.empty())
    fail(problem);
  MaskLayout layout;
  layout.q_blocks = ceil_div(inputs.tokens_q, options.block_q);
  layout.kv_blocks = ceil_div(inputs.tokens_kv, options.block_kv);
  if (options.text_blocks < 0 || options.text_blocks > layout.kv_blocks)
    fail("text_blocks = " + std::to_string(options.text_blocks) + " is outside 0.." + std::to_string(layout.kv_blocks));
  // At least one block: top_k = 0 would select the threshold mode of block_select.
  const auto blocks_at = [&](double density) {
    return std::max(1, templates::kept_blocks_per_row(density, layout.kv_blocks));
  };
  if (per_head) {
    for (double density : options.head_densities) layout.head_top_k.push_back(blocks_at(density));
    layout.top_k = *std::max_element(layout.head_top_k.begin(), layout.head_top_k.end());
  } else {
    layout.top_k = by_density ? blocks_at(options.density) : 0;
  }
  layout.max_kv_blocks = by_density
                             ? templates::block_select_min_row_pitch(layout.kv_blocks, layout.top_k, options.text_blocks)
                             : layout.kv_blocks;
  layout.rows = static_cast<std::size_t>(inputs.batch) * static_cast<std::size_t>(inputs.heads) *
                static_cast<std::size_t>(layout.q_blocks);
  return layout;
}

DeviceBlockMask MaskBuilder::build(const QueryKeyInputs& inputs, const MaskBuildOptions& options, CUstream stream) {
  return build_into(inputs, options, {}, stream);
}

DeviceBlockMask MaskBuilder::build_into(const QueryKeyInputs& inputs, const MaskBuildOptions& options,
                                        DeviceBlockMask output, CUstream stream) {
  using namespace templates;
  const MaskLayout layout = MaskBuilder::layout(inputs, options);
  if (options.fine_n == 0 && output.fine_bits != nullptr)
    fail("fine_bits were given for a build without fine bits (fine_n = 0)");
  const jit::ScopedCurrentContext current(runtime_.context());
  const int max_shared = runtime_.device().max_shared_bytes_per_block;
  const BlockScoreConfig score_config = default_block_score_config(
      inputs.dtype, inputs.head_dim, options.tile, options.block_q, options.block_kv, max_shared);
  const BlockSelectConfig select_config =
      block_select_config(options.block_q, options.block_kv, options.fine_n, inputs.dtype, inputs.head_dim, options.tile);

  const BlockScoreShape shape =
      block_score_shape(inputs.tokens_q, inputs.tokens_kv, options.tile, options.block_q, options.block_kv);
  const std::size_t slices = static_cast<std::size_t>(inputs.batch) * static_cast<std::size_t>(inputs.heads);
  const std::size_t element_bytes = 2;  // bf16 / fp16
  BlockScoreParams score{};
  score.q = inputs.q;
  score.k = inputs.k;
  score.q_batch_stride = inputs.q_batch_stride;
  score.q_head_stride = inputs.q_head_stride;
  score.q_token_stride = inputs.q_token_stride;
  score.k_batch_stride = inputs.k_batch_stride;
  score.k_head_stride = inputs.k_head_stride;
  score.k_token_stride = inputs.k_token_stride;
  score.pooled_q = reserve(pooled_q_, slices * shape.tiles_q * inputs.head_dim * element_bytes);
  score.pooled_k = reserve(pooled_k_, slices * shape.tiles_k * inputs.head_dim * element_bytes);
  score.tile_lse = static_cast<float*>(reserve(tile_lse_, slices * shape.tiles_q * sizeof(float)));
  score.scores = static_cast<float*>(
      reserve(scores_, slices * static_cast<std::size_t>(shape.q_blocks) * shape.kv_blocks * sizeof(float)));
  score.batch = inputs.batch;
  score.heads = inputs.heads;
  score.tokens_q = inputs.tokens_q;
  score.tokens_kv = inputs.tokens_kv;
  score.softmax_scale = inputs.softmax_scale;
  BlockScoreFamily::validate(score_config, score, max_shared);

  if (output.kv_block_count == nullptr)
    output.kv_block_count = static_cast<int*>(reserve(count_, layout.count_elements() * sizeof(int)));
  if (output.kv_block_index == nullptr)
    output.kv_block_index = static_cast<int*>(reserve(index_, layout.index_elements() * sizeof(int)));
  if (options.fine_n > 0 && output.fine_bits == nullptr)
    output.fine_bits =
        static_cast<unsigned long long*>(reserve(fine_bits_, layout.index_elements() * sizeof(std::uint64_t)));
  output.layout = layout;

  BlockSelectParams select{};
  select.scores = score.scores;
  select.kv_block_count = output.kv_block_count;
  select.kv_block_index = output.kv_block_index;
  select.fine_bits = output.fine_bits;
  select.pooled_q = score.pooled_q;
  select.pooled_k = score.pooled_k;
  select.tile_lse = score.tile_lse;
  select.max_kv_blocks = layout.max_kv_blocks;
  select.batch = inputs.batch;
  select.heads = inputs.heads;
  select.tokens_q = inputs.tokens_q;
  select.tokens_kv = inputs.tokens_kv;
  select.top_k = layout.top_k;
  if (!layout.head_top_k.empty()) {
    // Ordered after the previous build's block_select on `stream`, which may still read the
    // buffer; the pageable source is staged before the call returns.
    const std::size_t bytes = layout.head_top_k.size() * sizeof(int);
    select.top_k_per_head = static_cast<const int*>(reserve(head_top_k_, bytes));
    SJ_CU(cuMemcpyHtoDAsync(head_top_k_.address(), layout.head_top_k.data(), bytes, stream));
  }
  select.threshold = static_cast<float>(options.threshold);
  select.text_blocks = options.text_blocks;
  select.first_block_by_score = options.keep_first_block ? 0 : 1;
  select.fine_share = static_cast<float>(options.fine_share);
  select.softmax_scale = inputs.softmax_scale;
  BlockSelectFamily::validate(select_config, select);  // before anything is launched

  const jit::Target& target = runtime_.target();
  const jit::Kernel pool = kernel(score_config.pool_name_expression(),
                                  [&] { return BlockScoreFamily::render_pool(score_config, target); });
  const jit::Kernel scorer = kernel(score_config.score_name_expression(),
                                    [&] { return BlockScoreFamily::render_score(score_config, target); });
  const jit::Kernel selector =
      kernel(select_config.name_expression(), [&] { return BlockSelectFamily::render(select_config, target); });
  BlockScoreFamily::launch(pool, scorer, score_config, score, max_shared, stream);
  BlockSelectFamily::launch(selector, select_config, select, stream);
  return output;
}

void MaskBuilder::to_bitmask(const DeviceBlockMask& mask, unsigned long long* bits, CUstream stream) {
  const jit::ScopedCurrentContext current(runtime_.context());
  CsrToBitmaskParams params{};
  params.kv_block_count = mask.kv_block_count;
  params.kv_block_index = mask.kv_block_index;
  params.kv_block_bits = bits;
  params.rows = static_cast<long long>(mask.layout.rows);
  params.max_kv_blocks = mask.layout.max_kv_blocks;
  params.kv_blocks = mask.layout.kv_blocks;
  params.kv_block_words = templates::bitmask_words(mask.layout.kv_blocks);
  templates::MaskConvertFamily::validate(params);
  const jit::Kernel converter =
      kernel(templates::MaskConvertFamily::name_expression(), [&] { return templates::MaskConvertFamily::render(runtime_.target()); });
  templates::MaskConvertFamily::launch(converter, params, stream);
}

MaskWorkspace MaskBuilder::last_workspace() const {
  return {pooled_q_.pointer(), pooled_k_.pointer(), static_cast<const float*>(tile_lse_.pointer()),
          static_cast<const float*>(scores_.pointer())};
}

std::size_t MaskBuilder::workspace_bytes() const {
  std::size_t total = 0;
  for (const jit::DeviceBuffer* buffer :
       {&pooled_q_, &pooled_k_, &tile_lse_, &scores_, &count_, &index_, &fine_bits_, &head_top_k_})
    total += buffer->bytes();
  return total;
}

jit::Kernel MaskBuilder::kernel(const std::string& name_expression, const std::function<jit::KernelSpec()>& render) {
  if (auto found = kernels_.find(name_expression); found != kernels_.end()) return found->second;
  const jit::Kernel loaded = runtime_.kernels().kernel(runtime_.context(), render());
  kernels_.emplace(name_expression, loaded);
  return loaded;
}

void* MaskBuilder::reserve(jit::DeviceBuffer& buffer, std::size_t bytes) {
  if (buffer.bytes() < bytes) {
    buffer = jit::DeviceBuffer();  // free first: the old and the new need not fit together
    buffer = jit::DeviceBuffer(bytes);
  }
  return buffer.pointer();
}

}  // namespace sparsejit::runtime
