#include "runtime/mask_cache.h"

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "jit/device.h"
#include "jit/device_memory.h"
#include "templates/sparse_attention/block_mask.h"

namespace sparsejit::runtime {
namespace {

[[noreturn]] void fail(const std::string& why) { throw std::invalid_argument("mask cache: " + why); }

// The shape fields of `config` as builder inputs (no pointers: for layouts only).
QueryKeyInputs shape_of(const MaskCacheConfig& config) {
  QueryKeyInputs shape;
  shape.batch = config.batch;
  shape.heads = config.heads;
  shape.tokens_q = config.tokens_q;
  shape.tokens_kv = config.tokens_kv;
  return shape;
}

MaskBuildOptions options_at(const MaskCacheConfig& config, double density, double threshold) {
  MaskBuildOptions options = config.build;
  options.density = density;
  options.threshold = threshold;
  options.head_densities.clear();
  return options;
}

}  // namespace

void PreparedMask::apply_to(SparseAttentionParams& params) const {
  if (dense()) throw std::invalid_argument("prepared mask: the layer runs dense at this step; there is no mask");
  params.kv_block_count = nullptr;
  params.kv_block_index = nullptr;
  params.kv_block_bits = kv_block_bits;
  params.kv_block_words = kv_block_words;
  params.fine_bits = fine_bits;
  params.max_kv_blocks = max_kv_blocks;
}

MaskCacheFootprint MaskCache::footprint(const MaskCacheConfig& config, const MaskSchedule& schedule) {
  if (config.layers < 1) fail("layers = " + std::to_string(config.layers) + " must be at least 1");
  if (config.passes != 1 && config.passes != 2)
    fail("passes = " + std::to_string(config.passes) + " must be 1 or 2 (conditional, unconditional)");
  if (config.profile != nullptr && config.profile->heads() != config.heads)
    fail("the profile of model '" + config.profile->model() + "' has " + std::to_string(config.profile->heads()) +
         " heads, the cache " + std::to_string(config.heads));
  // The widest row any refresh writes: the schedule's highest density (1, the pitch KB, for
  // a threshold schedule), or the profile's ceiling.
  double widest_density = schedule.max_density();
  if (config.profile != nullptr && !schedule.by_threshold())
    widest_density = std::max(widest_density, config.profile->limits().max_density);
  const MaskLayout widest = MaskBuilder::layout(shape_of(config), options_at(config, widest_density, 0.0));
  MaskCacheFootprint footprint;
  footprint.bitmask_bytes = widest.bitmask_words() * sizeof(std::uint64_t);
  if (config.build.fine_n > 0) footprint.fine_bits_bytes = widest.index_elements() * sizeof(std::uint64_t);
  footprint.entries = static_cast<std::size_t>(config.layers) * static_cast<std::size_t>(config.passes);
  return footprint;
}

MaskCache::MaskCache(MaskBuilder& builder, MaskSchedule schedule, MaskCacheConfig config)
    : builder_(builder),
      schedule_(std::move(schedule)),
      config_(std::move(config)),
      footprint_(footprint(config_, schedule_)),
      entries_(footprint_.entries) {}

PreparedMask MaskCache::prepare(int step, int layer, GuidancePass pass, const QueryKeyInputs& inputs,
                                CUstream stream) {
  const int pass_index = static_cast<int>(pass);
  if (layer < 0 || layer >= config_.layers)
    fail("layer " + std::to_string(layer) + " is outside 0.." + std::to_string(config_.layers - 1));
  if (pass_index < 0 || pass_index >= config_.passes)
    fail("guidance pass " + std::to_string(pass_index) + " but the cache keeps " + std::to_string(config_.passes) +
         " pass(es)");
  if (inputs.batch != config_.batch || inputs.heads != config_.heads || inputs.tokens_q != config_.tokens_q ||
      inputs.tokens_kv != config_.tokens_kv)
    fail("inputs of batch " + std::to_string(inputs.batch) + ", heads " + std::to_string(inputs.heads) +
         ", tokens " + std::to_string(inputs.tokens_q) + " x " + std::to_string(inputs.tokens_kv) +
         " differ from the cache's " + std::to_string(config_.batch) + ", " + std::to_string(config_.heads) + ", " +
         std::to_string(config_.tokens_q) + " x " + std::to_string(config_.tokens_kv));
  const MaskDecision decision = schedule_.decide(step, layer);
  PreparedMask prepared;
  if (decision.action == MaskAction::dense) return prepared;

  Entry& entry = entries_[static_cast<std::size_t>(layer) * config_.passes + pass_index];
  prepared.action = MaskAction::reuse;
  if (decision.action == MaskAction::refresh || entry.window != decision.window) {
    if (entry.bits.bytes() == 0) {
      // Both buffers or neither: an allocation that fails leaves the entry as it was.
      const jit::ScopedCurrentContext current(builder_.runtime().context());
      jit::DeviceBuffer bits(footprint_.bitmask_bytes), fine_bits(footprint_.fine_bits_bytes);
      entry.bits = std::move(bits);
      entry.fine_bits = std::move(fine_bits);
    }
    DeviceBlockMask output;
    output.fine_bits = static_cast<unsigned long long*>(entry.fine_bits.pointer());
    MaskBuildOptions options = options_at(config_, decision.density, decision.threshold);
    if (config_.profile != nullptr && !decision.by_threshold())
      if (std::optional<std::vector<double>> densities = config_.profile->head_densities(step, layer))
        options.head_densities = std::move(*densities);
    const DeviceBlockMask mask = builder_.build_into(inputs, options, output, stream);
    builder_.to_bitmask(mask, static_cast<unsigned long long*>(entry.bits.pointer()), stream);
    entry.window = decision.window;
    entry.density = decision.density;
    entry.threshold = decision.threshold;
    entry.profiled = !options.head_densities.empty();
    entry.max_kv_blocks = mask.layout.max_kv_blocks;
    prepared.action = MaskAction::refresh;
    ++refreshes_;
  }
  prepared.density = entry.density;
  prepared.threshold = entry.threshold;
  prepared.profiled = entry.profiled;
  prepared.kv_block_bits = static_cast<const unsigned long long*>(entry.bits.pointer());
  prepared.kv_block_words = templates::bitmask_words((config_.tokens_kv + config_.build.block_kv - 1) /
                                                     config_.build.block_kv);
  prepared.fine_bits = static_cast<const unsigned long long*>(entry.fine_bits.pointer());
  prepared.max_kv_blocks = entry.max_kv_blocks;
  return prepared;
}

std::size_t MaskCache::bytes() const {
  std::size_t total = 0;
  for (const Entry& entry : entries_) total += entry.bits.bytes() + entry.fine_bits.bytes();
  return total;
}

}  // namespace sparsejit::runtime
