// MaskCache and MaskBuilder without a GPU: the cache's footprint, from the function its
// allocations use, for Wan2.1-14B at 720p (the DESIGN.md budget of 200 MB), with fine bits
// and with one guidance pass, with a threshold schedule and with a profile's ceiling; the
// layouts (per-head densities too) and refusals of the builder and the cache config.
#include <gtest/gtest.h>

#include <iostream>
#include <stdexcept>
#include <string>

#include "runtime/mask_builder.h"
#include "runtime/mask_cache.h"

namespace sparsejit::runtime {
namespace {

// Wan2.1-14B 720p: 40 layers, 40 heads, 75,600 tokens, blocks of 128, both guidance passes.
MaskCacheConfig wan_720p() {
  MaskCacheConfig config;
  config.layers = 40;
  config.passes = 2;
  config.batch = 1;
  config.heads = 40;
  config.tokens_q = config.tokens_kv = 75600;
  return config;
}

std::string refusal(const MaskCacheConfig& config, const MaskSchedule& schedule = MaskSchedule()) {
  try {
    MaskCache::footprint(config, schedule);
  } catch (const std::invalid_argument& error) {
    return error.what();
  }
  return "accepted";
}

// 591 query blocks x 591 key blocks: a bitmask row is 10 words (80 bytes); 40 heads x 591
// rows x 80 bytes = 1,891,200 bytes per (layer, pass); x 40 layers x 2 passes.
TEST(MaskCacheFootprint, Wan14B720pFitsTheBudget) {
  const MaskCacheFootprint footprint = MaskCache::footprint(wan_720p(), MaskSchedule());
  EXPECT_EQ(footprint.bitmask_bytes, 40u * 591u * 80u);
  EXPECT_EQ(footprint.fine_bits_bytes, 0u);
  EXPECT_EQ(footprint.entries, 80u);
  EXPECT_EQ(footprint.total_bytes(), 151'296'000u);
  EXPECT_LE(footprint.total_bytes(), 200'000'000u) << "DESIGN.md: the cached masks of the model within 200 MB";
  std::cout << "[ figure   ] mask cache, Wan2.1-14B 720p (40 layers x 40 heads x 591 x 591 blocks, 2 passes): "
            << footprint.total_bytes() << " bytes (" << footprint.total_bytes() / 1e6 << " MB)\n";
}

// Fine bits: one word per kept pair at the schedule's highest density: ceil(0.3 * 591) = 178
// pairs a row, 40 x 591 x 178 x 8 bytes per entry; far over the budget for the whole model.
TEST(MaskCacheFootprint, FineBitsAddAWordPerKeptPairAtTheHighestDensity) {
  MaskCacheConfig config = wan_720p();
  config.build.fine_n = 16;
  const MaskCacheFootprint footprint = MaskCache::footprint(config, MaskSchedule());
  EXPECT_EQ(footprint.fine_bits_bytes, 40u * 591u * 178u * 8u);
  EXPECT_EQ(footprint.total_bytes(), 80u * (40u * 591u * 80u + 40u * 591u * 178u * 8u));
  config.passes = 1;
  EXPECT_EQ(MaskCache::footprint(config, MaskSchedule()).entries, 40u);
}

// A threshold schedule may keep every key block: the bitmask is the same, fine bits take a
// word per key block (591 a row): 40 x 591 x 591 x 8 bytes per entry.
TEST(MaskCacheFootprint, ThresholdSchedulesSizeFineBitsAtEveryKeyBlock) {
  const MaskSchedule thresholds({.densities = {}, .thresholds = {0.95, 0.9}});
  MaskCacheConfig config = wan_720p();
  EXPECT_EQ(MaskCache::footprint(config, thresholds).total_bytes(), 151'296'000u);
  config.build.fine_n = 16;
  const MaskCacheFootprint footprint = MaskCache::footprint(config, thresholds);
  EXPECT_EQ(footprint.fine_bits_bytes, 40u * 591u * 591u * 8u);
  std::cout << "[ figure   ] mask cache with fine bits, threshold schedule, Wan2.1-14B 720p: " << footprint.total_bytes()
            << " bytes (" << footprint.total_bytes() / 1e6 << " MB)\n";
}

// With a profile, fine bits are sized by the higher of the schedule's densities and the
// profile's ceiling: ceil(0.5 * 591) = 296 pairs a row.
TEST(MaskCacheFootprint, AProfileSizesFineBitsAtItsCeiling) {
  std::vector<db::SparsityProfile> rows;
  for (int head = 0; head < 40; ++head)
    rows.push_back({.model = "wan", .step = 12, .layer = 1, .head = head, .density = 0.2, .tau = 0.95});
  const HeadDensityProfile profile(rows, {.min_density = 0.05, .max_density = 0.5});
  MaskCacheConfig config = wan_720p();
  config.build.fine_n = 16;
  config.profile = &profile;
  EXPECT_EQ(MaskCache::footprint(config, MaskSchedule()).fine_bits_bytes, 40u * 591u * 296u * 8u);
  config.heads = 12;
  EXPECT_NE(refusal(config).find("the profile of model 'wan' has 40 heads, the cache 12"), std::string::npos);
}

TEST(MaskCacheFootprint, InvalidConfigsSayWhy) {
  MaskCacheConfig config = wan_720p();
  config.layers = 0;
  EXPECT_NE(refusal(config).find("layers = 0"), std::string::npos);
  config = wan_720p();
  config.passes = 3;
  EXPECT_NE(refusal(config).find("passes = 3 must be 1 or 2"), std::string::npos);
  config = wan_720p();
  config.heads = 0;
  EXPECT_NE(refusal(config).find("must be positive"), std::string::npos);
  config = wan_720p();
  config.build.block_kv = 96;
  EXPECT_NE(refusal(config).find("64 or 128"), std::string::npos);
  config = wan_720p();
  config.build.text_blocks = 600;
  EXPECT_NE(refusal(config).find("text_blocks = 600 is outside 0..591"), std::string::npos);
}

QueryKeyInputs shape(int tokens_q, int tokens_kv) {
  QueryKeyInputs inputs;
  inputs.batch = 2;
  inputs.heads = 3;
  inputs.tokens_q = tokens_q;
  inputs.tokens_kv = tokens_kv;
  return inputs;
}

TEST(MaskBuilderLayout, TopKAndThresholdLayouts) {
  MaskBuildOptions options;  // density 0.3, blocks of 128
  MaskLayout layout = MaskBuilder::layout(shape(1000, 75600), options);
  EXPECT_EQ(layout.q_blocks, 8);
  EXPECT_EQ(layout.kv_blocks, 591);
  EXPECT_EQ(layout.top_k, 178);
  EXPECT_EQ(layout.max_kv_blocks, 178);
  EXPECT_EQ(layout.rows, 2u * 3u * 8u);
  EXPECT_EQ(layout.index_elements(), 48u * 178u);
  EXPECT_EQ(layout.bitmask_words(), 48u * 10u);
  // Few key blocks: the always-kept first and diagonal blocks and the text blocks widen the row.
  options.density = 0.1;
  options.text_blocks = 3;
  layout = MaskBuilder::layout(shape(1000, 1000), options);
  EXPECT_EQ(layout.top_k, 1);
  EXPECT_EQ(layout.max_kv_blocks, 5);
  options.density = 1e-12;  // a positive density keeps at least one block
  EXPECT_EQ(MaskBuilder::layout(shape(1000, 1000), options).top_k, 1);
  options.density = 0.0;
  options.threshold = 0.9;
  layout = MaskBuilder::layout(shape(1000, 1000), options);
  EXPECT_EQ(layout.top_k, 0);
  EXPECT_EQ(layout.max_kv_blocks, 8);
}

// Per-head densities: k_h = max(1, ceil(d_h x KB)) per head, the row pitch sized by the
// largest; density is ignored.
TEST(MaskBuilderLayout, PerHeadDensitiesGiveEachHeadItsK) {
  MaskBuildOptions options;
  options.head_densities = {0.05, 0.3, 1e-12};
  const MaskLayout layout = MaskBuilder::layout(shape(1000, 75600), options);
  EXPECT_EQ(layout.head_top_k, (std::vector<int>{30, 178, 1}));
  EXPECT_EQ(layout.top_k, 178);
  EXPECT_EQ(layout.max_kv_blocks, 178);
  options.density = 0.0;
  options.head_densities = {1.0, 0.5, 0.5};
  EXPECT_EQ(MaskBuilder::layout(shape(1000, 75600), options).max_kv_blocks, 591);
  options.density = 2.0;  // ignored, even where it would be refused on its own
  EXPECT_EQ(MaskBuilder::layout(shape(1000, 75600), options).top_k, 591);
  EXPECT_TRUE(MaskBuilder::layout(shape(1000, 75600), MaskBuildOptions()).head_top_k.empty());
}

TEST(MaskBuilderLayout, RefusalsSayWhich) {
  const auto message = [](const MaskBuildOptions& options) {
    try {
      MaskBuilder::layout(shape(1000, 1000), options);
    } catch (const std::invalid_argument& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(message({.density = 0.3, .threshold = 0.9}).find("exactly one of density"), std::string::npos);
  EXPECT_NE(message({.density = 0.0}).find("exactly one of density"), std::string::npos);
  EXPECT_NE(message({.density = 1.5}).find("density 1.5"), std::string::npos);
  EXPECT_NE(message({.density = 0.0, .threshold = 2.0}).find("threshold 2.0"), std::string::npos);
  EXPECT_NE(message({.block_q = 32}).find("64 or 128"), std::string::npos);
  EXPECT_NE(message({.fine_n = 12}).find("fine sub-tiles"), std::string::npos);
  EXPECT_NE(message({.tile = 12, .fine_n = 16}).find("tiles of 12 tokens"), std::string::npos);
  EXPECT_NE(message({.text_blocks = -1}).find("text_blocks = -1"), std::string::npos);
  EXPECT_NE(message({.head_densities = {0.5, 0.5}}).find("2 head_densities for 3 heads"), std::string::npos);
  EXPECT_NE(message({.head_densities = {0.5, 0.0, 0.5}}).find("head_densities[1] = 0.0"), std::string::npos);
  EXPECT_NE(message({.head_densities = {0.5, 0.5, 1.5}}).find("head_densities[2] = 1.5"), std::string::npos);
  EXPECT_NE(message({.density = 0.0, .threshold = 0.9, .head_densities = {0.5, 0.5, 0.5}})
                .find("threshold must then be 0"),
            std::string::npos);
  EXPECT_EQ(message({.density = 1.0}), "accepted");
}

}  // namespace
}  // namespace sparsejit::runtime
