// MaskBuilder and MaskCache on a GPU: the builder's scores against the float64 block_score
// reference and its masks against the block_select reference on its own scores (top-k with
// text blocks, threshold, fine bits, per-head densities) on ragged lengths in [B,N,H,D]
// storage; the cache over the steps of a short schedule (dense warm-up and dense layer,
// refresh, reuse with the device pointer and contents unchanged, a layer first seen
// mid-window, separate masks per guidance pass, a refresh at the next density into the same
// buffer, lazy allocation), then Runtime::sparse_attention on the cached bitmask with its
// fine bits against the reference; the cache with a threshold schedule and with a sparsity
// profile's per-head densities.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <functional>
#include <memory>

#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "runtime/mask_builder.h"
#include "runtime/mask_cache.h"
#include "runtime/runtime.h"
#include "runtime/sparsity_profile.h"
#include "templates/block_score/block_score_family.h"
#include "templates/block_score/block_score_reference.h"
#include "templates/block_select/block_select_reference.h"
#include "templates/common/half_precision.h"
#include "templates/sparse_attention/attention_reference.h"
#include "templates/sparse_attention/block_mask.h"
#include "tests/support/gpu_test.h"
#include "tests/templates/permute_case.h"

namespace sparsejit::runtime {
namespace {

using jit::copy_device_to_host_as;
using templates::BlockMask;
using templates::HalfDtype;

// Random Q, K, V of one (batch = 1) attention call on the host and the device, [B,H,N,D]
// (contiguous per head) or [B,N,H,D] (heads interleaved).
struct Tensors {
  int heads, tokens_q, tokens_kv, head_dim;
  bool interleaved;
  std::vector<std::uint16_t> q, k, v;
  jit::DeviceBuffer dq, dk, dv;

  Tensors(int h, int nq, int nkv, int d, bool bnhd, std::mt19937_64& generator)
      : heads(h), tokens_q(nq), tokens_kv(nkv), head_dim(d), interleaved(bnhd) {
    q = templates::random_half(static_cast<std::size_t>(h) * nq * d, HalfDtype::bf16, generator);
    k = templates::random_half(static_cast<std::size_t>(h) * nkv * d, HalfDtype::bf16, generator);
    v = templates::random_half(static_cast<std::size_t>(h) * nkv * d, HalfDtype::bf16, generator);
    dq = jit::DeviceBuffer::from_host(q);
    dk = jit::DeviceBuffer::from_host(k);
    dv = jit::DeviceBuffer::from_host(v);
  }
  // {batch, head, token} strides of a tensor of `tokens`.
  std::array<long long, 3> strides(int tokens) const {
    const long long h = heads, n = tokens, d = head_dim;
    return interleaved ? std::array<long long, 3>{n * h * d, d, h * d} : std::array<long long, 3>{h * n * d, n * d, d};
  }
  QueryKeyInputs inputs() const {
    QueryKeyInputs in;
    in.q = dq.pointer();
    in.k = dk.pointer();
    const auto qs = strides(tokens_q), ks = strides(tokens_kv);
    in.q_batch_stride = qs[0];
    in.q_head_stride = qs[1];
    in.q_token_stride = qs[2];
    in.k_batch_stride = ks[0];
    in.k_head_stride = ks[1];
    in.k_token_stride = ks[2];
    in.batch = 1;
    in.heads = heads;
    in.tokens_q = tokens_q;
    in.tokens_kv = tokens_kv;
    in.head_dim = head_dim;
    in.dtype = HalfDtype::bf16;
    in.softmax_scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    return in;
  }
  // Self-attention over these tensors (tokens_q == tokens_kv) writing `o`, in the tensors'
  // layout: `device` reads the device copies, `host` the host ones (for the reference). The
  // mask fields are the caller's.
  void attention_params(void* o, SparseAttentionParams& device, SparseAttentionParams& host) const {
    for (SparseAttentionParams* p : {&device, &host}) {
      *p = SparseAttentionParams{};
      const auto s = strides(tokens_q);
      p->q_batch_stride = p->k_batch_stride = p->v_batch_stride = p->o_batch_stride = s[0];
      p->q_head_stride = p->k_head_stride = p->v_head_stride = p->o_head_stride = s[1];
      p->q_token_stride = p->k_token_stride = p->v_token_stride = p->o_token_stride = s[2];
      p->batch = 1;
      p->heads = heads;
      p->tokens_q = p->tokens_kv = tokens_q;
      p->softmax_scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    }
    device.q = dq.pointer();
    device.k = dk.pointer();
    device.v = dv.pointer();
    device.o = o;
    host.q = q.data();
    host.k = k.data();
    host.v = v.data();
  }
};

// ||O - reference|| / ||reference|| of a bf16 output on the device.
double output_error(const jit::DeviceBuffer& output, const std::vector<double>& reference) {
  const std::vector<std::uint16_t> stored = output.download_as<std::uint16_t>();
  std::vector<double> actual(stored.size());
  for (std::size_t i = 0; i < stored.size(); ++i) actual[i] = templates::half_bits_to_float(stored[i], HalfDtype::bf16);
  return templates::relative_l2_error(actual, reference);
}

// The block-CSR mask `mask` points at, downloaded.
BlockMask downloaded(const DeviceBlockMask& mask, int batch, int heads, const MaskBuildOptions& options) {
  BlockMask host;
  host.batch = batch;
  host.heads = heads;
  host.q_blocks = mask.layout.q_blocks;
  host.kv_blocks = mask.layout.kv_blocks;
  host.max_kv_blocks = mask.layout.max_kv_blocks;
  host.block_q = options.block_q;
  host.block_kv = options.block_kv;
  host.fine_n = options.fine_n;
  host.count = copy_device_to_host_as<int>(mask.kv_block_count, mask.layout.count_elements());
  host.index = copy_device_to_host_as<int>(mask.kv_block_index, mask.layout.index_elements());
  if (options.fine_n > 0)
    host.fine_bits = copy_device_to_host_as<std::uint64_t>(mask.fine_bits, mask.layout.index_elements());
  return host;
}

class MaskRuntimeGpuTest : public testing::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    runtime_ = std::make_unique<Runtime>(
        RuntimeOptions{.device = context().ordinal(), .database_path = std::nullopt, .use_database = false});
    builder_ = std::make_unique<MaskBuilder>(*runtime_);
    stream_ = std::make_unique<jit::Stream>();
  }
  std::unique_ptr<Runtime> runtime_;
  std::unique_ptr<MaskBuilder> builder_;
  std::unique_ptr<jit::Stream> stream_;
  std::mt19937_64 generator_ = testing::fresh_generator();
};

TEST_F(MaskRuntimeGpuTest, BuilderMatchesTheScoreAndSelectReferences) {
  const Tensors t(2, 1000, 904, 128, /*bnhd=*/true, generator_);
  const QueryKeyInputs inputs = t.inputs();
  const std::vector<std::pair<std::string, MaskBuildOptions>> cases = {
      {"top-k 0.3, 1 text block", {.density = 0.3, .text_blocks = 1}},
      {"threshold 0.8, blocks 64x128", {.block_q = 64, .density = 0.0, .threshold = 0.8}},
      {"top-k 0.5, fine 16x16", {.density = 0.5, .fine_n = 16, .fine_share = 0.9}},
      {"per-head densities 0.15 and 0.6, 1 text block",
       {.density = 0.0, .text_blocks = 1, .head_densities = {0.15, 0.6}}},
      {"top-k 0.1, first block only for its score", {.density = 0.1, .keep_first_block = false}},
  };
  for (const auto& [what, options] : cases) {
    SCOPED_TRACE(what);
    const DeviceBlockMask mask = builder_->build(inputs, options, stream_->handle());
    stream_->synchronize();
    const MaskLayout& layout = mask.layout;
    const templates::BlockScoreShape shape =
        templates::block_score_shape(t.tokens_q, t.tokens_kv, options.tile, options.block_q, options.block_kv);

    // Scores: float32 on the GPU against the float64 reference.
    BlockScoreParams host_score{};
    host_score.q = t.q.data();
    host_score.k = t.k.data();
    host_score.q_batch_stride = inputs.q_batch_stride;
    host_score.q_head_stride = inputs.q_head_stride;
    host_score.q_token_stride = inputs.q_token_stride;
    host_score.k_batch_stride = inputs.k_batch_stride;
    host_score.k_head_stride = inputs.k_head_stride;
    host_score.k_token_stride = inputs.k_token_stride;
    host_score.batch = 1;
    host_score.heads = t.heads;
    host_score.tokens_q = t.tokens_q;
    host_score.tokens_kv = t.tokens_kv;
    host_score.softmax_scale = inputs.softmax_scale;
    const templates::BlockScoreReference score_ref = templates::block_score_reference(
        host_score, HalfDtype::bf16, t.head_dim, options.tile, options.block_q, options.block_kv);
    const MaskWorkspace workspace = builder_->last_workspace();
    const std::vector<float> scores = copy_device_to_host_as<float>(workspace.scores, layout.rows * layout.kv_blocks);
    EXPECT_LE(templates::relative_l2_error(std::vector<double>(scores.begin(), scores.end()), score_ref.scores), 1e-2);

    // Selection: the block_select reference on the GPU's own scores and pooled tiles. The
    // threshold's cut could differ only where a cumulative sum lies within float rounding
    // (~1e-6 relative) of tau x total: improbable on random data.
    const std::size_t slices = static_cast<std::size_t>(t.heads);
    const std::vector<std::uint16_t> pooled_q =
        copy_device_to_host_as<std::uint16_t>(workspace.pooled_q, slices * shape.tiles_q * t.head_dim);
    const std::vector<std::uint16_t> pooled_k =
        copy_device_to_host_as<std::uint16_t>(workspace.pooled_k, slices * shape.tiles_k * t.head_dim);
    const std::vector<float> tile_lse = copy_device_to_host_as<float>(workspace.tile_lse, slices * shape.tiles_q);
    static int sink[1];
    static unsigned long long fine_sink[1];
    BlockSelectParams host_select{};
    host_select.scores = scores.data();
    host_select.kv_block_count = host_select.kv_block_index = sink;
    host_select.fine_bits = options.fine_n > 0 ? fine_sink : nullptr;
    host_select.pooled_q = pooled_q.data();
    host_select.pooled_k = pooled_k.data();
    host_select.tile_lse = tile_lse.data();
    host_select.max_kv_blocks = layout.max_kv_blocks;
    host_select.batch = 1;
    host_select.heads = t.heads;
    host_select.tokens_q = t.tokens_q;
    host_select.tokens_kv = t.tokens_kv;
    host_select.top_k = layout.top_k;
    host_select.top_k_per_head = layout.head_top_k.empty() ? nullptr : layout.head_top_k.data();
    host_select.threshold = static_cast<float>(options.threshold);
    host_select.text_blocks = options.text_blocks;
    host_select.first_block_by_score = options.keep_first_block ? 0 : 1;
    host_select.fine_share = static_cast<float>(options.fine_share);
    host_select.softmax_scale = inputs.softmax_scale;
    const BlockMask expected = templates::block_select_reference(
        host_select, templates::block_select_config(options.block_q, options.block_kv, options.fine_n, HalfDtype::bf16,
                                                    t.head_dim, options.tile));
    const BlockMask actual = downloaded(mask, 1, t.heads, options);
    ASSERT_NO_THROW(templates::validate_block_mask(actual, t.tokens_q, t.tokens_kv));
    int pairs = 0, fine_differences = 0;
    for (int h = 0; h < t.heads; ++h)
      for (int qb = 0; qb < layout.q_blocks; ++qb) {
        const std::span<const int> got = actual.kept_blocks(0, h, qb), want = expected.kept_blocks(0, h, qb);
        ASSERT_EQ(std::vector<int>(got.begin(), got.end()), std::vector<int>(want.begin(), want.end()))
            << "h=" << h << " qb=" << qb;
        if (options.fine_n == 0) continue;
        for (int i = 0; i < static_cast<int>(want.size()); ++i, ++pairs)
          fine_differences += actual.fine_word(0, h, qb, i) != expected.fine_word(0, h, qb, i);
      }
    // Fine words hang on float32 sub-tile masses on the GPU: a word may differ where two
    // masses or the share's cut are within rounding (block_mask_gpu_test checks each such
    // case); the wiring (pointers, scale, share) would make most words differ.
    if (options.fine_n > 0) {
      EXPECT_LE(fine_differences, pairs / 50) << fine_differences << " of " << pairs;
    }
  }
  // Buffers only grow: once every shape has been built, a repeat allocates nothing.
  const std::size_t workspace = builder_->workspace_bytes();
  for (const auto& [what, options] : cases) builder_->build(inputs, options, stream_->handle());
  stream_->synchronize();
  EXPECT_EQ(builder_->workspace_bytes(), workspace) << "a repeated shape allocated again";
}

TEST_F(MaskRuntimeGpuTest, CacheFollowsTheScheduleAndFeedsSparseAttention) {
  const MaskSchedule schedule({.steps = 6, .dense_steps = 1, .refresh_interval = 2, .densities = {0.5, 0.25},
                               .dense_layers = {0}});
  MaskCacheConfig config;
  config.layers = 3;
  config.passes = 2;
  config.heads = 2;
  config.tokens_q = config.tokens_kv = 1000;  // 8 x 8 blocks of 128, the last ragged
  config.build.fine_n = 16;
  config.build.fine_share = 0.9;
  MaskCache cache(*builder_, schedule, config);
  const MaskCacheFootprint footprint = MaskCache::footprint(config, schedule);
  const Tensors conditional(2, 1000, 1000, 128, /*bnhd=*/false, generator_);
  const Tensors unconditional(2, 1000, 1000, 128, /*bnhd=*/false, generator_);
  const CUstream stream = stream_->handle();
  // The cached bitmask, once the stream has run what prepare launched (the copy is
  // synchronous but the stream is non-blocking: it does not wait for the stream by itself).
  const auto bits_of = [&](const PreparedMask& prepared) {
    stream_->synchronize();
    return copy_device_to_host_as<std::uint64_t>(prepared.kv_block_bits,
                                                 footprint.bitmask_bytes / sizeof(std::uint64_t));
  };
  // The bitmask a fresh build of `t` at `density` gives (the builder is deterministic).
  const auto expected_bits = [&](const Tensors& t, double density) {
    MaskBuildOptions options = config.build;
    options.density = density;
    const DeviceBlockMask mask = builder_->build(t.inputs(), options, stream);
    stream_->synchronize();
    return templates::to_bitmask(downloaded(mask, 1, t.heads, options)).bits;
  };

  // Step 0: warm-up, every layer dense; nothing allocated.
  for (int layer = 0; layer < 3; ++layer)
    EXPECT_TRUE(cache.prepare(0, layer, GuidancePass::conditional, conditional.inputs(), stream).dense());
  EXPECT_EQ(cache.bytes(), 0u);

  // Step 1: layer 0 dense; layer 1 refreshes at 0.5, each pass from its own Q/K.
  EXPECT_TRUE(cache.prepare(1, 0, GuidancePass::conditional, conditional.inputs(), stream).dense());
  const PreparedMask cond1 = cache.prepare(1, 1, GuidancePass::conditional, conditional.inputs(), stream);
  const PreparedMask uncond1 = cache.prepare(1, 1, GuidancePass::unconditional, unconditional.inputs(), stream);
  ASSERT_EQ(cond1.action, MaskAction::refresh);
  ASSERT_EQ(uncond1.action, MaskAction::refresh);
  EXPECT_EQ(cond1.density, 0.5);
  EXPECT_NE(cond1.kv_block_bits, uncond1.kv_block_bits);
  const std::vector<std::uint64_t> cond_bits = bits_of(cond1), uncond_bits = bits_of(uncond1);
  EXPECT_EQ(cond_bits, expected_bits(conditional, 0.5));
  EXPECT_EQ(uncond_bits, expected_bits(unconditional, 0.5));
  EXPECT_NE(cond_bits, uncond_bits) << "the passes' masks come from different Q/K";

  // Step 2: layer 1 reuses (given other inputs, it must not rebuild); layer 2, first seen
  // mid-window, builds its mask.
  const int refreshes = cache.refreshes();
  const PreparedMask cond2 = cache.prepare(2, 1, GuidancePass::conditional, unconditional.inputs(), stream);
  EXPECT_EQ(cond2.action, MaskAction::reuse);
  EXPECT_EQ(cond2.kv_block_bits, cond1.kv_block_bits);
  EXPECT_EQ(cond2.fine_bits, cond1.fine_bits);
  EXPECT_EQ(cond2.max_kv_blocks, cond1.max_kv_blocks);
  EXPECT_EQ(bits_of(cond2), cond_bits);
  EXPECT_EQ(cache.refreshes(), refreshes);
  EXPECT_EQ(cache.prepare(2, 2, GuidancePass::conditional, conditional.inputs(), stream).action, MaskAction::refresh);
  EXPECT_EQ(cache.bytes(), 3 * (footprint.bitmask_bytes + footprint.fine_bits_bytes)) << "3 entries allocated";

  // Step 3: layer 1 refreshes at 0.25 into the same buffer.
  const PreparedMask cond3 = cache.prepare(3, 1, GuidancePass::conditional, conditional.inputs(), stream);
  ASSERT_EQ(cond3.action, MaskAction::refresh);
  EXPECT_EQ(cond3.density, 0.25);
  EXPECT_EQ(cond3.kv_block_bits, cond1.kv_block_bits);
  const std::vector<std::uint64_t> bits3 = bits_of(cond3);
  EXPECT_EQ(bits3, expected_bits(conditional, 0.25));
  for (std::uint64_t row : bits3) EXPECT_LE(std::popcount(row), cond3.max_kv_blocks);

  // Sparse attention on the cached bitmask and fine bits (checked mode validates them).
  jit::DeviceBuffer output(conditional.q.size() * 2);
  output.fill(0xff);
  SparseAttentionParams device, host;
  conditional.attention_params(output.pointer(), device, host);
  cond3.apply_to(device);
  runtime_->sparse_attention(device, {HalfDtype::bf16, 128, 128, 128, 16}, stream, /*check_mask=*/true);
  stream_->synchronize();
  templates::BlockBitmask bitmask{1, 2, 8, 8, 1, bits3};
  BlockMask mask = templates::to_block_mask(bitmask, 128, 128, cond3.max_kv_blocks);
  mask.fine_n = 16;
  mask.fine_bits = copy_device_to_host_as<std::uint64_t>(cond3.fine_bits, mask.count.size() * cond3.max_kv_blocks);
  const templates::AttentionReference reference = templates::sparse_attention_reference(host, HalfDtype::bf16, 128, mask);
  EXPECT_LE(output_error(output, reference.o), 1e-2);

  // Refusals: past the schedule, a layer or pass out of range, inputs of another shape.
  EXPECT_THROW(cache.prepare(6, 1, GuidancePass::conditional, conditional.inputs(), stream), std::invalid_argument);
  EXPECT_THROW(cache.prepare(1, 3, GuidancePass::conditional, conditional.inputs(), stream), std::invalid_argument);
  QueryKeyInputs other = conditional.inputs();
  other.heads = 1;
  EXPECT_THROW(cache.prepare(1, 1, GuidancePass::conditional, other, stream), std::invalid_argument);
  EXPECT_THROW(cache.prepare(0, 1, GuidancePass::conditional, conditional.inputs(), stream).apply_to(device),
               std::invalid_argument);
}

// A threshold schedule builds each window at its threshold; a profile's per-head densities
// replace the schedule's density where the profile covers (step, layer) (the nearest
// profiled step at or before), and the schedule's density stays elsewhere.
TEST_F(MaskRuntimeGpuTest, CacheBuildsThresholdWindowsAndProfiledHeads) {
  const Tensors t(2, 1000, 1000, 64, /*bnhd=*/true, generator_);
  const CUstream stream = stream_->handle();
  MaskCacheConfig config;
  config.layers = 2;
  config.passes = 1;
  config.heads = 2;
  config.tokens_q = config.tokens_kv = 1000;
  const auto bits_of = [&](const PreparedMask& prepared) {
    stream_->synchronize();
    return copy_device_to_host_as<std::uint64_t>(
        prepared.kv_block_bits, MaskCache::footprint(config, MaskSchedule()).bitmask_bytes / sizeof(std::uint64_t));
  };
  const auto expected_bits = [&](MaskBuildOptions options) {
    const DeviceBlockMask mask = builder_->build(t.inputs(), options, stream);
    stream_->synchronize();
    return templates::to_bitmask(downloaded(mask, 1, t.heads, options)).bits;
  };

  const MaskSchedule thresholds({.steps = 4, .dense_steps = 0, .refresh_interval = 2, .densities = {},
                                 .dense_layers = {}, .thresholds = {0.8, 0.5}});
  MaskCache by_threshold(*builder_, thresholds, config);
  const PreparedMask first = by_threshold.prepare(0, 1, GuidancePass::conditional, t.inputs(), stream);
  ASSERT_EQ(first.action, MaskAction::refresh);
  EXPECT_EQ(first.threshold, 0.8);
  EXPECT_EQ(first.density, 0.0);
  EXPECT_EQ(first.max_kv_blocks, 8) << "threshold mode: the row pitch is KB";
  EXPECT_EQ(bits_of(first), expected_bits({.density = 0.0, .threshold = 0.8}));
  const PreparedMask second = by_threshold.prepare(2, 1, GuidancePass::conditional, t.inputs(), stream);
  EXPECT_EQ(second.threshold, 0.5);
  EXPECT_EQ(bits_of(second), expected_bits({.density = 0.0, .threshold = 0.5}));

  const HeadDensityProfile profile({{.model = "m", .step = 2, .layer = 1, .head = 0, .density = 0.01, .tau = 0.95},
                                    {.model = "m", .step = 2, .layer = 1, .head = 1, .density = 0.9, .tau = 0.95}});
  config.profile = &profile;
  const MaskSchedule densities({.steps = 6, .dense_steps = 0, .refresh_interval = 2, .densities = {0.5},
                                .dense_layers = {}});
  MaskCache profiled(*builder_, densities, config);
  const PreparedMask before = profiled.prepare(0, 1, GuidancePass::conditional, t.inputs(), stream);
  EXPECT_FALSE(before.profiled) << "no profiled step at or before step 0";
  EXPECT_EQ(bits_of(before), expected_bits({.density = 0.5}));
  const PreparedMask other_layer = profiled.prepare(4, 0, GuidancePass::conditional, t.inputs(), stream);
  EXPECT_FALSE(other_layer.profiled) << "layer 0 has no profile";
  const PreparedMask after = profiled.prepare(4, 1, GuidancePass::conditional, t.inputs(), stream);
  ASSERT_EQ(after.action, MaskAction::refresh);
  EXPECT_TRUE(after.profiled) << "step 4 takes step 2's profile";
  // Head 0's 0.01 is clipped to the default floor of 0.05 (1 of 8 blocks either way).
  const std::vector<std::uint64_t> profiled_bits = bits_of(after);
  EXPECT_EQ(profiled_bits, expected_bits({.density = 0.0, .head_densities = {0.05, 0.9}}));
  EXPECT_NE(profiled_bits, expected_bits({.density = 0.5})) << "the heads' densities differ from the schedule's";
}

// The C++ API from a thread with no context current, as a thread that never touched CUDA:
// every call that works on the GPU runs in its runtime's context (a fresh runtime, so kernels
// are loaded inside the calls) and leaves none current, and so do the destructors that free
// device memory or unload modules. The results are checked, so a call that ran in no context
// (or the wrong one) fails too; before, the launch's work counter needed the caller to have
// made the runtime's context current.
TEST_F(MaskRuntimeGpuTest, CallsWorkWithNoContextCurrentAndLeaveNoneCurrent) {
  // The checks after each call run in the fixture's context again.
  const auto none_current_after = [&](const std::string& what, const std::function<void()>& call) {
    EXPECT_EQ(context_current_after(call), nullptr) << what << " left a context current";
  };
  auto runtime = std::make_unique<Runtime>(
      RuntimeOptions{.device = context().ordinal(), .database_path = std::nullopt, .use_database = false});
  auto builder = std::make_unique<MaskBuilder>(*runtime);
  const Tensors t(2, 1000, 1000, 128, /*bnhd=*/false, generator_);
  const CUstream stream = stream_->handle();
  const MaskBuildOptions options{.density = 0.5};

  DeviceBlockMask mask;
  none_current_after("MaskBuilder::build", [&] { mask = builder->build(t.inputs(), options, stream); });
  stream_->synchronize();
  const BlockMask host_mask = downloaded(mask, 1, t.heads, options);
  for (int count : host_mask.count) EXPECT_GE(count, mask.layout.top_k);

  jit::DeviceBuffer bits(mask.layout.rows * static_cast<std::size_t>(templates::bitmask_words(mask.layout.kv_blocks)) *
                         sizeof(std::uint64_t));
  none_current_after("MaskBuilder::to_bitmask", [&] {
    builder->to_bitmask(mask, static_cast<unsigned long long*>(bits.pointer()), stream);
  });
  stream_->synchronize();
  EXPECT_EQ(bits.download_as<std::uint64_t>(), templates::to_bitmask(host_mask).bits);

  jit::DeviceBuffer output(t.q.size() * 2);
  SparseAttentionParams device, host;
  t.attention_params(output.pointer(), device, host);
  device.max_kv_blocks = mask.layout.max_kv_blocks;
  device.kv_block_count = mask.kv_block_count;
  device.kv_block_index = mask.kv_block_index;
  const templates::AttentionReference reference =
      templates::sparse_attention_reference(host, HalfDtype::bf16, 128, host_mask);
  // The first call loads the kernel; the second finds it loaded. Checked mode copies the mask
  // to the host first.
  for (const char* call : {"Runtime::sparse_attention (kernel loaded inside)", "Runtime::sparse_attention (checked)"}) {
    output.fill(0xff);
    none_current_after(call, [&] {
      runtime->sparse_attention(device, {HalfDtype::bf16, 128, 128, 128, 0}, stream,
                                /*check_mask=*/std::string(call).find("checked") != std::string::npos);
    });
    stream_->synchronize();
    EXPECT_LE(output_error(output, reference.o), 1e-2) << call;
  }

  std::mt19937_64 generator = testing::fresh_generator();
  const testing::HostPermuteCase permute = testing::make_case(
      {1, 3, 777, 128, 2}, templates::PermuteDirection::gather, testing::kStoragePairs[0], generator);
  const testing::DevicePermuteCase device_permute(permute);
  none_current_after("Runtime::permute_tokens", [&] {
    runtime->permute_tokens(device_permute.params(), 128, templates::PermuteDirection::gather, stream);
  });
  stream_->synchronize();
  testing::expect_matches_reference(permute, device_permute);

  const MaskSchedule schedule(
      {.steps = 2, .dense_steps = 1, .refresh_interval = 1, .densities = {0.5}, .dense_layers = {}});
  MaskCacheConfig config;
  config.layers = 1;
  config.passes = 1;
  config.heads = t.heads;
  config.tokens_q = config.tokens_kv = 1000;
  auto cache = std::make_unique<MaskCache>(*builder, schedule, config);
  PreparedMask prepared;
  none_current_after("MaskCache::prepare (allocates)", [&] {
    prepared = cache->prepare(1, 0, GuidancePass::conditional, t.inputs(), stream);
  });
  stream_->synchronize();
  EXPECT_EQ(prepared.action, MaskAction::refresh);
  EXPECT_EQ(copy_device_to_host_as<std::uint64_t>(prepared.kv_block_bits, bits.bytes() / sizeof(std::uint64_t)),
            bits.download_as<std::uint64_t>());

  // Freeing: a buffer freed with no context current gives its memory back.
  std::size_t free_before = 0, free_after = 0, total = 0;
  auto large = std::make_unique<jit::DeviceBuffer>(std::size_t{512} << 20);
  ASSERT_EQ(jit::driver().cuMemGetInfo(&free_before, &total), CUDA_SUCCESS);
  none_current_after("~DeviceBuffer", [&] { large.reset(); });
  ASSERT_EQ(jit::driver().cuMemGetInfo(&free_after, &total), CUDA_SUCCESS);
  EXPECT_GE(free_after, free_before + (std::size_t{500} << 20)) << "the 512 MiB buffer was not freed";
  none_current_after("~MaskCache", [&] { cache.reset(); });
  none_current_after("~MaskBuilder", [&] { builder.reset(); });
  none_current_after("~Runtime (unloads its modules)", [&] { runtime.reset(); });
}

}  // namespace
}  // namespace sparsejit::runtime
