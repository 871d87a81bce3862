// The C API (runtime/sparsejit.h) on a GPU: one attention call against the float64 CPU
// reference (Q/O in [B,N,H,D], K/V in [B,H,N,D], ragged lengths, LSE, output poisoned first)
// and its lookup level; checked mode refusing a bad mask before any launch; a mask built by
// the C builder, run as block-CSR and as its bitmask (the same output, and the reference's);
// the token permutation there and back.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jit/device_memory.h"
#include "runtime/sparsejit.h"
#include "runtime/token_order.h"
#include "templates/common/half_precision.h"
#include "templates/sparse_attention/attention_reference.h"
#include "templates/sparse_attention/block_mask.h"
#include "tests/support/gpu_test.h"
#include "tests/support/tensor_layout.h"
#include "tests/support/test_support.h"

namespace sparsejit::runtime {
namespace {

using jit::copy_device_to_host_as;
using templates::BlockMask;
using templates::HalfDtype;
using templates::TokenLayout;

constexpr int kHeads = 2, kTokensQ = 300, kTokensKv = 500, kHeadDim = 128;

sparsejit_layout c_layout(TokenLayout layout) {
  return layout == TokenLayout::bhnd ? SPARSEJIT_LAYOUT_BHND : SPARSEJIT_LAYOUT_BNHD;
}

// A bf16 tensor [1, kHeads, tokens, kHeadDim] in `layout`, random on the host and the device.
struct Tensor {
  TokenLayout layout;
  int tokens;
  std::vector<std::uint16_t> host;
  jit::DeviceBuffer device;

  Tensor(TokenLayout storage, int token_count, std::mt19937_64& generator)
      : layout(storage),
        tokens(token_count),
        host(templates::random_half(std::size_t{kHeads} * token_count * kHeadDim, HalfDtype::bf16, generator)),
        device(jit::DeviceBuffer::from_host(host)) {}
  sparsejit_tensor c_tensor() const {
    return sparsejit_tensor_dense(device.pointer(), c_layout(layout), 1, kHeads, tokens, kHeadDim);
  }
  // The device copy as [H, N, D] doubles.
  std::vector<double> download_dense() const {
    const std::vector<std::uint16_t> stored = device.download_as<std::uint16_t>();
    const auto s = testing::dense_strides(layout, kHeads, tokens, kHeadDim);
    std::vector<double> dense;
    dense.reserve(stored.size());
    for (int h = 0; h < kHeads; ++h)
      for (int n = 0; n < tokens; ++n)
        for (int d = 0; d < kHeadDim; ++d) dense.push_back(templates::half_bits_to_float(stored[h * s[1] + n * s[2] + d], HalfDtype::bf16));
    return dense;
  }
};

// Q and O in [B,N,H,D] and K and V in [B,H,N,D]: every tensor's own strides are used.
struct AttentionData {
  Tensor q, k, v, o;
  jit::DeviceBuffer lse;

  explicit AttentionData(std::mt19937_64& generator)
      : q(TokenLayout::bnhd, kTokensQ, generator),
        k(TokenLayout::bhnd, kTokensKv, generator),
        v(TokenLayout::bhnd, kTokensKv, generator),
        o(TokenLayout::bnhd, kTokensQ, generator),
        lse(std::size_t{kHeads} * kTokensQ * sizeof(float)) {
    poison();
  }
  void poison() {
    o.device.fill(0xff);  // NaN in bf16
    lse.fill(0xff);
  }
  sparsejit_attention_args args() const {
    sparsejit_attention_args result;
    sparsejit_attention_args_init(&result);
    result.dtype = SPARSEJIT_BF16;
    result.q = q.c_tensor();
    result.k = k.c_tensor();
    result.v = v.c_tensor();
    result.o = o.c_tensor();
    result.lse = static_cast<float*>(lse.pointer());
    return result;
  }
  // The float64 reference under `mask`, with the host copies and their strides.
  templates::AttentionReference reference(const BlockMask& mask) const {
    SparseAttentionParams host{};
    host.q = q.host.data();
    host.k = k.host.data();
    host.v = v.host.data();
    const auto qs = testing::dense_strides(q.layout, kHeads, kTokensQ, kHeadDim);
    const auto ks = testing::dense_strides(k.layout, kHeads, kTokensKv, kHeadDim);
    host.q_batch_stride = qs[0];
    host.q_head_stride = qs[1];
    host.q_token_stride = qs[2];
    host.k_batch_stride = host.v_batch_stride = ks[0];
    host.k_head_stride = host.v_head_stride = ks[1];
    host.k_token_stride = host.v_token_stride = ks[2];
    host.batch = 1;
    host.heads = kHeads;
    host.tokens_q = kTokensQ;
    host.tokens_kv = kTokensKv;
    host.softmax_scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
    return templates::sparse_attention_reference(host, HalfDtype::bf16, kHeadDim, mask);
  }
  void expect_matches(const BlockMask& mask) const {
    const templates::AttentionReference expected = reference(mask);
    EXPECT_LE(templates::relative_l2_error(o.download_dense(), expected.o), testing::relative_error_bound(HalfDtype::bf16))
        << "relative L2 error of O (NaN: an element was not written)";
    const std::vector<float> got = lse.download_as<float>();
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (std::isinf(expected.lse[i]))
        ASSERT_TRUE(std::isinf(got[i]) && got[i] < 0) << "row " << i << " keeps nothing: LSE must be -inf";
      else
        ASSERT_NEAR(got[i], expected.lse[i], 1e-3 * std::max(1.0, std::abs(expected.lse[i]))) << "row " << i;
    }
  }
};

// A host block mask on the device in block-CSR form.
struct DeviceMask {
  jit::DeviceBuffer count, index;
  explicit DeviceMask(const BlockMask& mask)
      : count(jit::DeviceBuffer::from_host(mask.count)), index(jit::DeviceBuffer::from_host(mask.index)) {}
  sparsejit_block_mask c_mask(const BlockMask& mask) const {
    sparsejit_block_mask result{};
    result.form = SPARSEJIT_MASK_BLOCK_CSR;
    result.block_q = mask.block_q;
    result.block_kv = mask.block_kv;
    result.kv_block_count = static_cast<const int32_t*>(count.pointer());
    result.kv_block_index = static_cast<const int32_t*>(index.pointer());
    result.max_kv_blocks = mask.max_kv_blocks;
    return result;
  }
};

class CApiGpuTest : public testing::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    stream_ = std::make_unique<jit::Stream>();
    sparsejit_runtime_options options;
    sparsejit_runtime_options_init(&options);
    database_path_ = (directory_ / "c_api.db").string();
    options.database_path = database_path_.c_str();
    ASSERT_EQ(sparsejit_runtime_create(&options, &runtime_), SPARSEJIT_OK) << sparsejit_last_error_message();
  }
  void TearDown() override {
    sparsejit_runtime_destroy(runtime_);
    stream_.reset();
  }
  sparsejit_stream stream() const { return stream_->handle(); }
  // A mask builder on runtime_, destroyed with the returned owner.
  using OwnedBuilder = std::unique_ptr<sparsejit_mask_builder, void (*)(sparsejit_mask_builder*)>;
  OwnedBuilder mask_builder() {
    sparsejit_mask_builder* builder = nullptr;
    EXPECT_EQ(sparsejit_mask_builder_create(runtime_, &builder), SPARSEJIT_OK) << sparsejit_last_error_message();
    return OwnedBuilder(builder, sparsejit_mask_builder_destroy);
  }
  // The mask build's defaults at `density`.
  static sparsejit_mask_options mask_options(double density) {
    sparsejit_mask_options options;
    sparsejit_mask_options_init(&options);
    options.density = density;
    return options;
  }

  testing::TempDirectory directory_;
  std::string database_path_;
  sparsejit_runtime* runtime_ = nullptr;
  std::unique_ptr<jit::Stream> stream_;
  std::mt19937_64 generator_ = testing::fresh_generator();
};

TEST_F(CApiGpuTest, AttentionMatchesTheReferenceAndReportsItsLookupLevel) {
  AttentionData data(generator_);
  const BlockMask mask = templates::random_block_mask(1, kHeads, kTokensQ, kTokensKv, 128, 128, 0.5, generator_);
  const DeviceMask device_mask(mask);
  sparsejit_attention_args args = data.args();
  args.mask = device_mask.c_mask(mask);
  args.checked = 1;
  ASSERT_EQ(sparsejit_attention(runtime_, &args, stream()), SPARSEJIT_OK) << sparsejit_last_error_message();
  stream_->synchronize();
  data.expect_matches(mask);

  sparsejit_attention_choice choice;
  ASSERT_EQ(sparsejit_attention_lookup(runtime_, &args, &choice), SPARSEJIT_OK) << sparsejit_last_error_message();
  EXPECT_EQ(choice.level, SPARSEJIT_LOOKUP_BUILT_IN_DEFAULT) << "a fresh database holds no tuned config";
  EXPECT_EQ(std::string(choice.problem_key).rfind("sparse_attention|bf16|d128|b128x128|", 0), 0u) << choice.problem_key;
  EXPECT_STREQ(choice.source_key, "");
  EXPECT_GT(choice.block_m, 0);
}

TEST_F(CApiGpuTest, CheckedModeRefusesAnIndexOutOfRangeBeforeAnyLaunch) {
  AttentionData data(generator_);
  BlockMask mask = templates::random_block_mask(1, kHeads, kTokensQ, kTokensKv, 128, 128, 0.5, generator_);
  mask.index[1] = mask.kv_blocks;  // one past the last key block
  const DeviceMask device_mask(mask);
  sparsejit_attention_args args = data.args();
  args.mask = device_mask.c_mask(mask);
  args.checked = 1;
  const sparsejit_status status = sparsejit_attention(runtime_, &args, stream());
  const std::string message = sparsejit_last_error_message();
  EXPECT_EQ(status, SPARSEJIT_ERROR_BAD_MASK) << sparsejit_status_name(status) << ": " << message;
  EXPECT_NE(message.find("index[b=0, h=0, qb=0, i=1]"), std::string::npos) << message;
  for (std::uint16_t bits : data.o.device.download_as<std::uint16_t>()) ASSERT_EQ(bits, 0xffff) << "nothing may be launched";
}

// A caller's current context (here: none, as on a thread that never touched CUDA) is what
// every call that works on the GPU leaves current, even though it makes its own current inside.
TEST_F(CApiGpuTest, CallsLeaveTheCallersCurrentContextAsTheyFoundIt) {
  AttentionData data(generator_);
  const BlockMask mask = templates::random_block_mask(1, kHeads, kTokensQ, kTokensKv, 128, 128, 0.5, generator_);
  const DeviceMask device_mask(mask);
  sparsejit_attention_args args = data.args();
  args.mask = device_mask.c_mask(mask);
  sparsejit_mask_inputs inputs{SPARSEJIT_BF16, data.q.c_tensor(), data.k.c_tensor(), 0.f};
  const sparsejit_mask_options options = mask_options(0.5);
  // `call` succeeds with no context current and leaves none current.
  const auto current_after = [&](const char* what, auto&& call) {
    sparsejit_status status = SPARSEJIT_OK;
    const CUcontext after = context_current_after([&] { status = call(); });
    ASSERT_EQ(status, SPARSEJIT_OK) << what << ": " << sparsejit_last_error_message();
    EXPECT_EQ(after, nullptr) << what << " left its context current";
  };
  current_after("sparsejit_attention", [&] { return sparsejit_attention(runtime_, &args, stream()); });
  sparsejit_mask_builder* builder = nullptr;
  current_after("sparsejit_mask_builder_create", [&] { return sparsejit_mask_builder_create(runtime_, &builder); });
  sparsejit_block_mask built{};
  current_after("sparsejit_mask_build", [&] {
    return sparsejit_mask_build(builder, &inputs, &options, stream(), &built, nullptr);
  });
  stream_->synchronize();
  current_after("sparsejit_mask_builder_destroy", [&] {
    sparsejit_mask_builder_destroy(builder);
    return SPARSEJIT_OK;
  });
}

TEST_F(CApiGpuTest, BuiltMaskRunsAsBlockCsrAndAsBitmask) {
  AttentionData data(generator_);
  const OwnedBuilder owned = mask_builder();
  ASSERT_NE(owned, nullptr);
  sparsejit_mask_builder* builder = owned.get();
  sparsejit_mask_inputs inputs{SPARSEJIT_BF16, data.q.c_tensor(), data.k.c_tensor(), 0.f};
  const sparsejit_mask_options options = mask_options(0.5);
  sparsejit_block_mask csr{};  // builder-owned buffers
  sparsejit_mask_layout layout;
  ASSERT_EQ(sparsejit_mask_build(builder, &inputs, &options, stream(), &csr, &layout), SPARSEJIT_OK)
      << sparsejit_last_error_message();
  EXPECT_EQ(layout.q_blocks, 3);
  EXPECT_EQ(layout.kv_blocks, 4);
  EXPECT_EQ(layout.top_k, 2);

  sparsejit_attention_args args = data.args();
  args.mask = csr;
  ASSERT_EQ(sparsejit_attention(runtime_, &args, stream()), SPARSEJIT_OK) << sparsejit_last_error_message();
  stream_->synchronize();
  BlockMask mask;
  mask.batch = 1;
  mask.heads = kHeads;
  mask.q_blocks = layout.q_blocks;
  mask.kv_blocks = layout.kv_blocks;
  mask.max_kv_blocks = layout.max_kv_blocks;
  mask.block_q = mask.block_kv = 128;
  mask.count = copy_device_to_host_as<int>(csr.kv_block_count, static_cast<std::size_t>(layout.rows));
  mask.index =
      copy_device_to_host_as<int>(csr.kv_block_index, static_cast<std::size_t>(layout.rows) * layout.max_kv_blocks);
  for (int count : mask.count) EXPECT_GE(count, layout.top_k);
  data.expect_matches(mask);
  const std::vector<std::uint16_t> from_lists = data.o.device.download_as<std::uint16_t>();

  jit::DeviceBuffer bits(static_cast<std::size_t>(layout.rows) * layout.kv_block_words * sizeof(std::uint64_t));
  sparsejit_block_mask bitmask;
  ASSERT_EQ(sparsejit_mask_to_bitmask(builder, &csr, &layout, static_cast<uint64_t*>(bits.pointer()), stream(), &bitmask),
            SPARSEJIT_OK)
      << sparsejit_last_error_message();
  EXPECT_EQ(bitmask.form, SPARSEJIT_MASK_BITMASK);
  data.poison();
  args.mask = bitmask;
  args.checked = 1;
  ASSERT_EQ(sparsejit_attention(runtime_, &args, stream()), SPARSEJIT_OK) << sparsejit_last_error_message();
  stream_->synchronize();
  EXPECT_EQ(data.o.device.download_as<std::uint16_t>(), from_lists) << "both forms of one mask give the same output";
}

// sparsejit_mask_builder_set_first_block_by_score: by default every row keeps key block 0;
// by score, rows keep it only where it ranks (k = 2 of 4 key blocks: the diagonal and the
// best other), and every row still keeps its diagonal.
TEST_F(CApiGpuTest, FirstBlockKeptOnlyForItsScoreWhenAsked) {
  AttentionData data(generator_);
  const OwnedBuilder owned = mask_builder();
  ASSERT_NE(owned, nullptr);
  sparsejit_mask_builder* builder = owned.get();
  EXPECT_EQ(sparsejit_mask_builder_set_first_block_by_score(builder, 2), SPARSEJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sparsejit_last_error_message()).find("by_score = 2 is neither 0 nor 1"), std::string::npos);
  sparsejit_mask_inputs inputs{SPARSEJIT_BF16, data.q.c_tensor(), data.k.c_tensor(), 0.f};
  const sparsejit_mask_options options = mask_options(0.5);
  const auto rows_keeping_block_0 = [&](int32_t by_score) {
    EXPECT_EQ(sparsejit_mask_builder_set_first_block_by_score(builder, by_score), SPARSEJIT_OK);
    sparsejit_block_mask csr{};
    sparsejit_mask_layout layout;
    EXPECT_EQ(sparsejit_mask_build(builder, &inputs, &options, stream(), &csr, &layout), SPARSEJIT_OK)
        << sparsejit_last_error_message();
    stream_->synchronize();
    const std::vector<int> count =
        copy_device_to_host_as<int>(csr.kv_block_count, static_cast<std::size_t>(layout.rows));
    const std::vector<int> index =
        copy_device_to_host_as<int>(csr.kv_block_index, static_cast<std::size_t>(layout.rows) * layout.max_kv_blocks);
    int keeping = 0;
    for (std::int64_t row = 0; row < layout.rows; ++row) {
      const auto first = index.begin() + row * layout.max_kv_blocks, last = first + count[row];
      const int diagonal = std::min(static_cast<int>(row % layout.q_blocks), layout.kv_blocks - 1);
      EXPECT_NE(std::find(first, last, diagonal), last) << "row " << row << " lost its diagonal";
      keeping += std::find(first, last, 0) != last;
    }
    return std::pair<int, std::int64_t>(keeping, layout.rows);
  };
  const auto [always, rows] = rows_keeping_block_0(0);
  EXPECT_EQ(always, rows);
  const auto [by_score, same_rows] = rows_keeping_block_0(1);
  EXPECT_LT(by_score, same_rows) << "block 0 is still kept in every row";
  EXPECT_GE(by_score, rows / 3) << "block 0 is each first query block's diagonal";
}

TEST_F(CApiGpuTest, PermutationThereAndBack) {
  const int frames = 3, height = 5, width = 6, extra = 2, tokens = frames * height * width + extra;
  std::vector<int32_t> order(tokens);
  ASSERT_EQ(sparsejit_token_order(SPARSEJIT_ORDER_HILBERT, frames, height, width, extra, order.data(), tokens),
            SPARSEJIT_OK);
  const jit::DeviceBuffer permutation = jit::DeviceBuffer::from_host(order);
  const std::vector<std::uint16_t> source =
      templates::random_half(std::size_t{kHeads} * tokens * kHeadDim, HalfDtype::bf16, generator_);
  const jit::DeviceBuffer original = jit::DeviceBuffer::from_host(source);
  jit::DeviceBuffer reordered(source.size() * 2), restored(source.size() * 2);

  sparsejit_permute_args args{};
  args.tensor_count = 1;
  args.permutation = static_cast<const int32_t*>(permutation.pointer());
  args.direction = SPARSEJIT_PERMUTE_GATHER;
  args.source[0] = sparsejit_tensor_dense(original.pointer(), SPARSEJIT_LAYOUT_BNHD, 1, kHeads, tokens, kHeadDim);
  args.destination[0] = sparsejit_tensor_dense(reordered.pointer(), SPARSEJIT_LAYOUT_BHND, 1, kHeads, tokens, kHeadDim);
  ASSERT_EQ(sparsejit_permute_tokens(runtime_, &args, stream()), SPARSEJIT_OK) << sparsejit_last_error_message();
  args.direction = SPARSEJIT_PERMUTE_SCATTER;
  args.source[0] = args.destination[0];
  args.destination[0] = sparsejit_tensor_dense(restored.pointer(), SPARSEJIT_LAYOUT_BNHD, 1, kHeads, tokens, kHeadDim);
  ASSERT_EQ(sparsejit_permute_tokens(runtime_, &args, stream()), SPARSEJIT_OK) << sparsejit_last_error_message();
  stream_->synchronize();

  const std::vector<std::uint16_t> gathered = reordered.download_as<std::uint16_t>();
  const auto in = testing::dense_strides(TokenLayout::bnhd, kHeads, tokens, kHeadDim);
  const auto out = testing::dense_strides(TokenLayout::bhnd, kHeads, tokens, kHeadDim);
  for (int h = 0; h < kHeads; ++h)
    for (int i = 0; i < tokens; ++i)
      ASSERT_EQ(gathered[h * out[1] + i * out[2]], source[h * in[1] + order[i] * in[2]]) << "head " << h << " position " << i;
  EXPECT_EQ(restored.download_as<std::uint16_t>(), source);
}

}  // namespace
}  // namespace sparsejit::runtime
