#pragma once
// The sparse masks of a whole model across diffusion steps: per (layer, guidance pass) the
// block bitmask (and fine bits, with fine_n > 0) of the last refresh, kept on the device and
// handed to sparse_attention directly (attention_params.h, bitmask form), never expanded per
// call. A MaskSchedule says, per (step, layer), whether to run dense, to refresh the mask
// (MaskBuilder: block_score, block_select, csr_to_bitmask on the caller's stream) or to reuse
// it. The conditional and unconditional passes of classifier-free guidance keep separate
// masks.
//
// Memory: a bitmask row is ceil(KB / 64) words, so an entry is batch * heads * QB * 8 *
// ceil(KB / 64) bytes; Wan2.1-14B at 720p (40 layers x 40 heads x 591 query blocks, 591 key
// blocks: 10 words = 80 bytes a row, both passes) takes 151,296,000 bytes. Fine bits add
// 8 bytes per kept pair (the row pitch at the schedule's highest density): far more
// (2.7 GB at density 0.3 for that model), so they are for short schedules or few layers.
// A threshold schedule (or a profile whose max_density is 1) sizes the pitch at KB: the
// bitmask stays 151 MB for that model, fine bits would take 8.9 GB.
// Entries are allocated at their first refresh; bytes() counts what is allocated.
//
// With a HeadDensityProfile, a refresh of a density schedule builds with the profile's
// per-head densities for (step, layer) (MaskBuildOptions::head_densities) where it has
// them (the nearest profiled step at or before the step), and at the schedule's density
// where it has none; a threshold schedule ignores the profile.
#include <cuda.h>

#include <cstddef>
#include <vector>

#include "jit/device_memory.h"
#include "runtime/mask_builder.h"
#include "runtime/mask_schedule.h"
#include "runtime/sparsity_profile.h"
#include "templates/sparse_attention/attention_params.h"

namespace sparsejit::runtime {

enum class GuidancePass { conditional = 0, unconditional = 1 };

struct MaskCacheConfig {
  int layers = 1;
  int passes = 2;  // guidance passes with their own masks: 2 with classifier-free guidance, else 1
  int batch = 1;
  int heads = 1;
  int tokens_q = 1;
  int tokens_kv = 1;
  // Block sizes, tile, text blocks and fine bits of every refresh; the density or threshold
  // comes from the schedule (and the profile), so density, threshold and head_densities here
  // are ignored.
  MaskBuildOptions build;
  // SVOO's per-head densities, or null; not owned: it must outlive the cache. Its heads must
  // be the config's.
  const HeadDensityProfile* profile = nullptr;
};

// Device bytes of one cached entry and of all of them.
struct MaskCacheFootprint {
  std::size_t bitmask_bytes = 0;    // one (layer, pass): rows x ceil(KB / 64) x 8
  std::size_t fine_bits_bytes = 0;  // one (layer, pass): rows x row pitch x 8; 0 without fine bits
  std::size_t entries = 0;          // layers x passes
  std::size_t total_bytes() const { return entries * (bitmask_bytes + fine_bits_bytes); }
};

// What a layer runs at this step.
struct PreparedMask {
  MaskAction action = MaskAction::dense;  // refresh: the mask was rebuilt by this call
  double density = 0.0;    // the schedule's density the mask was built at (0 with a threshold)
  double threshold = 0.0;  // the schedule's threshold the mask was built at (0 with a density)
  bool profiled = false;   // built with the profile's per-head densities instead of `density`
  const unsigned long long* kv_block_bits = nullptr;  // [batch, heads, QB, kv_block_words]
  int kv_block_words = 0;
  const unsigned long long* fine_bits = nullptr;      // [batch, heads, QB, max_kv_blocks] or null
  int max_kv_blocks = 0;                              // bounds every row's kept count

  bool dense() const { return action == MaskAction::dense; }
  // Sets the mask fields of `params` to this mask in the bitmask form (the CSR pointers
  // null). Throws std::invalid_argument when the layer runs dense (there is no mask).
  void apply_to(SparseAttentionParams& params) const;
};

class MaskCache {
 public:
  // Throws std::invalid_argument for an invalid config (non-positive sizes, passes other than
  // 1 or 2, block options MaskBuilder::layout refuses, a profile of other heads).
  MaskCache(MaskBuilder& builder, MaskSchedule schedule, MaskCacheConfig config);

  // The footprint of a cache for `config` under `schedule`; what the cache allocates.
  static MaskCacheFootprint footprint(const MaskCacheConfig& config, const MaskSchedule& schedule);

  // The mask (or dense) for `layer` in guidance `pass` at `step`. At a refresh step, or when
  // the entry holds no mask of the current window yet (a layer first seen mid-window), it
  // builds the mask from `inputs` on `stream`; otherwise it returns the cached mask and does
  // not read `inputs` beyond checking its shape. Throws std::invalid_argument for a layer or
  // pass out of range, or inputs whose batch, heads or tokens differ from the config's.
  // Asynchronous: a refreshed mask is ready in `stream` order; synchronize the stream before
  // reading it from the host, and order other streams that use it after `stream`.
  PreparedMask prepare(int step, int layer, GuidancePass pass, const QueryKeyInputs& inputs, CUstream stream);

  const MaskSchedule& schedule() const { return schedule_; }
  const MaskCacheConfig& config() const { return config_; }
  // Device bytes held by the cached masks (not the builder's workspace).
  std::size_t bytes() const;
  // Masks built so far.
  int refreshes() const { return refreshes_; }

 private:
  struct Entry {
    jit::DeviceBuffer bits;       // [batch, heads, QB, words]
    jit::DeviceBuffer fine_bits;  // [batch, heads, QB, pitch at the highest density]
    int window = -1;              // the refresh window of the mask held; -1: none
    double density = 0.0;
    double threshold = 0.0;
    bool profiled = false;
    int max_kv_blocks = 0;
  };

  MaskBuilder& builder_;
  MaskSchedule schedule_;
  MaskCacheConfig config_;
  MaskCacheFootprint footprint_;
  std::vector<Entry> entries_;  // [layers, passes]
  int refreshes_ = 0;
};

}  // namespace sparsejit::runtime
