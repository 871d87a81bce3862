// The C API (runtime/sparsejit.h) without a GPU: every check that needs no device, each bad
// input reported with its own status and a message naming the argument and the value; the
// error message per thread; the token order; runtime creation without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "jit/driver_api.h"
#include "runtime/mask_schedule.h"
#include "runtime/sparsejit.h"
#include "runtime/token_order.h"

namespace {

// Device addresses that are never dereferenced: validation reads no device memory.
void* fake_device_pointer(std::uintptr_t offset = 0) { return reinterpret_cast<void*>(0x7f0000000000 + offset); }

// The status a call returned, its name and the thread's message, for readable failures.
struct Outcome {
  sparsejit_status status;
  std::string message;
};
Outcome outcome(sparsejit_status status) { return {status, sparsejit_last_error_message()}; }

// Asserts `status` is `expected` and the message contains every one of `parts`.
#define EXPECT_FAILS_WITH(call, expected, ...)                                                         \
  do {                                                                                                 \
    const Outcome result = outcome(call);                                                              \
    EXPECT_EQ(result.status, expected) << sparsejit_status_name(result.status) << ": " << result.message; \
    for (const char* part : std::initializer_list<const char*>{__VA_ARGS__})                                                           \
      EXPECT_NE(result.message.find(part), std::string::npos) << "'" << part << "' not in: " << result.message; \
  } while (false)

// A valid call: bf16, D = 128, 2 heads, 300 queries x 500 keys, [B,N,H,D] storage, a
// block-CSR mask of blocks of 128 keeping 2 of 4 key blocks per row, with LSE.
class AttentionArgs : public ::testing::Test {
 protected:
  void SetUp() override {
    sparsejit_attention_args_init(&args);
    args.dtype = SPARSEJIT_BF16;
    args.q = sparsejit_tensor_dense(fake_device_pointer(0x0), SPARSEJIT_LAYOUT_BNHD, 1, 2, 300, 128);
    args.k = sparsejit_tensor_dense(fake_device_pointer(0x100000), SPARSEJIT_LAYOUT_BNHD, 1, 2, 500, 128);
    args.v = sparsejit_tensor_dense(fake_device_pointer(0x200000), SPARSEJIT_LAYOUT_BNHD, 1, 2, 500, 128);
    args.o = sparsejit_tensor_dense(fake_device_pointer(0x300000), SPARSEJIT_LAYOUT_BNHD, 1, 2, 300, 128);
    args.lse = static_cast<float*>(fake_device_pointer(0x400000));
    args.mask.form = SPARSEJIT_MASK_BLOCK_CSR;
    args.mask.block_q = 128;
    args.mask.block_kv = 128;
    args.mask.kv_block_count = static_cast<const int32_t*>(fake_device_pointer(0x500000));
    args.mask.kv_block_index = static_cast<const int32_t*>(fake_device_pointer(0x600000));
    args.mask.max_kv_blocks = 2;
  }
  void use_bitmask() {
    args.mask.form = SPARSEJIT_MASK_BITMASK;
    args.mask.kv_block_count = nullptr;
    args.mask.kv_block_index = nullptr;
    args.mask.kv_block_bits = static_cast<const uint64_t*>(fake_device_pointer(0x700000));
    args.mask.kv_block_words = 1;
  }
  sparsejit_status validate() const { return sparsejit_attention_validate(&args); }

  sparsejit_attention_args args;
};

TEST_F(AttentionArgs, AValidCallPassesInBothMaskFormsAndClearsTheMessage) {
  EXPECT_FAILS_WITH(sparsejit_attention_validate(nullptr), SPARSEJIT_ERROR_NULL_POINTER, "args is NULL");
  EXPECT_EQ(validate(), SPARSEJIT_OK) << sparsejit_last_error_message();
  EXPECT_STREQ(sparsejit_last_error_message(), "");
  use_bitmask();
  EXPECT_EQ(validate(), SPARSEJIT_OK) << sparsejit_last_error_message();
  args.mask.fine_n = 16;
  args.mask.fine_bits = static_cast<const uint64_t*>(fake_device_pointer(0x800000));
  EXPECT_EQ(validate(), SPARSEJIT_OK) << sparsejit_last_error_message();
}

TEST_F(AttentionArgs, NullTensorsAreNamed) {
  args.q.data = nullptr;
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_NULL_POINTER, "sparsejit_attention_validate: q.data is NULL");
  SetUp();
  args.o.data = nullptr;
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_NULL_POINTER, "o.data is NULL");
}

TEST_F(AttentionArgs, MisalignedPointersAndStridesAreNamed) {
  args.k.data = fake_device_pointer(0x100008);
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_MISALIGNED, "k.data is not aligned to 16 bytes");
  SetUp();
  args.v.token_stride = 2 * 128 + 4;  // 520 bytes
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_MISALIGNED, "v.token_stride 260 elements",
                    "not a multiple of 16 bytes");
  SetUp();
  args.lse = static_cast<float*>(fake_device_pointer(0x400002));
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_MISALIGNED, "lse is not aligned to 4 bytes");
  SetUp();
  args.mask.kv_block_index = static_cast<const int32_t*>(fake_device_pointer(0x600001));
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_MISALIGNED, "mask.kv_block_index is not aligned to 4 bytes");
}

TEST_F(AttentionArgs, UnsupportedHeadDimDtypeAndBlocks) {
  for (sparsejit_tensor* tensor : {&args.q, &args.k, &args.v, &args.o}) {
    *tensor = sparsejit_tensor_dense(tensor->data, SPARSEJIT_LAYOUT_BHND, 1, 2, tensor->tokens, 80);
  }
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_UNSUPPORTED, "head dim (q.head_dim) 80 is not supported",
                    "64, 96 or 128");
  SetUp();
  args.dtype = static_cast<sparsejit_dtype>(7);
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_UNSUPPORTED, "dtype 7 is not supported");
  SetUp();
  args.mask.block_kv = 96;
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_UNSUPPORTED, "mask.block_kv 96 is not supported (64 or 128)");
  SetUp();
  args.mask.fine_n = 8;  // (128 / 16) * (128 / 8) = 128 sub-tiles: more than one word
  args.mask.fine_bits = static_cast<const uint64_t*>(fake_device_pointer(0x800000));
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_UNSUPPORTED, "mask.fine_n 8", "do not fit one 64-bit word");
}

TEST_F(AttentionArgs, ShapesThatDisagreeAreNamedWithBothValues) {
  args.k.batch = 2;
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_SHAPE_MISMATCH, "k.batch = 2 disagrees with q.batch = 1");
  SetUp();
  args.v.tokens = 499;
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_SHAPE_MISMATCH, "v.tokens = 499 disagrees with k.tokens = 500");
  SetUp();
  args.o.heads = 3;
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_SHAPE_MISMATCH, "o.heads = 3 disagrees with q.heads = 2");
  SetUp();
  args.k.head_dim = 64;
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_SHAPE_MISMATCH, "k.head_dim = 64 disagrees with q.head_dim = 128");
}

TEST_F(AttentionArgs, BadMasks) {
  args.mask.form = static_cast<sparsejit_mask_form>(9);
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_BAD_MASK, "mask.form 9");
  SetUp();
  args.mask.kv_block_count = nullptr;
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_NULL_POINTER, "mask.kv_block_count (block-CSR form) is NULL");
  SetUp();
  args.mask.kv_block_bits = static_cast<const uint64_t*>(fake_device_pointer(0x700000));
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_BAD_MASK, "give one form");
  SetUp();
  args.mask.max_kv_blocks = 5;  // 500 keys are 4 blocks of 128
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_BAD_MASK, "mask.max_kv_blocks 5 is outside 0..4");
  SetUp();
  args.mask.fine_bits = static_cast<const uint64_t*>(fake_device_pointer(0x800000));
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_BAD_MASK, "mask.fine_bits is set but mask.fine_n is 0");
  SetUp();
  args.mask.fine_n = 16;
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_NULL_POINTER, "mask.fine_bits (fine_n = 16) is NULL");
  SetUp();
  use_bitmask();
  args.mask.kv_block_words = 2;
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_BAD_MASK, "mask.kv_block_words 2 must be ceil(4 key blocks / 64) = 1");
  SetUp();
  use_bitmask();
  args.mask.kv_block_index = static_cast<const int32_t*>(fake_device_pointer(0x600000));
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_BAD_MASK, "give one form");
  SetUp();
  use_bitmask();
  args.mask.kv_block_bits = nullptr;
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_NULL_POINTER, "mask.kv_block_bits (bitmask form) is NULL");
}

TEST_F(AttentionArgs, OtherBadValuesAreInvalidArguments) {
  args.q.tokens = args.o.tokens = 0;
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_INVALID_ARGUMENT, "q has shape [1, 2, 0, 128]",
                    "every size must be positive");
  SetUp();
  args.softmax_scale = -1.f;
  EXPECT_FAILS_WITH(validate(), SPARSEJIT_ERROR_INVALID_ARGUMENT, "softmax_scale must be positive");
}

TEST_F(AttentionArgs, RunAndLookupCheckTheRuntimeAndTheArgsBeforeAnyGpuWork) {
  EXPECT_FAILS_WITH(sparsejit_attention(nullptr, &args, nullptr), SPARSEJIT_ERROR_NULL_POINTER,
                    "sparsejit_attention: runtime is NULL");
  sparsejit_attention_choice choice;
  EXPECT_FAILS_WITH(sparsejit_attention_lookup(nullptr, &args, &choice), SPARSEJIT_ERROR_NULL_POINTER,
                    "runtime is NULL");
}

TEST(CApiErrors, TheMessageBelongsToTheThreadAndStatusesHaveNames) {
  ASSERT_EQ(sparsejit_attention_validate(nullptr), SPARSEJIT_ERROR_NULL_POINTER);
  std::string other_thread_message = "unset";
  std::thread([&] { other_thread_message = sparsejit_last_error_message(); }).join();
  EXPECT_EQ(other_thread_message, "");
  EXPECT_NE(std::string(sparsejit_last_error_message()).find("args is NULL"), std::string::npos);

  EXPECT_STREQ(sparsejit_status_name(SPARSEJIT_ERROR_SHAPE_MISMATCH), "SPARSEJIT_ERROR_SHAPE_MISMATCH");
  EXPECT_STREQ(sparsejit_status_name(static_cast<sparsejit_status>(99)), "unknown status");
  EXPECT_STREQ(sparsejit_lookup_level_name(SPARSEJIT_LOOKUP_NEAREST_BUCKET), "nearest bucket");
  EXPECT_EQ(sparsejit_api_version(), SPARSEJIT_API_VERSION);
}

TEST(CApiTensor, DenseStridesOfBothLayouts) {
  const sparsejit_tensor bhnd = sparsejit_tensor_dense(nullptr, SPARSEJIT_LAYOUT_BHND, 2, 3, 5, 64);
  EXPECT_EQ(bhnd.batch_stride, 3 * 5 * 64);
  EXPECT_EQ(bhnd.head_stride, 5 * 64);
  EXPECT_EQ(bhnd.token_stride, 64);
  const sparsejit_tensor bnhd = sparsejit_tensor_dense(nullptr, SPARSEJIT_LAYOUT_BNHD, 2, 3, 5, 64);
  EXPECT_EQ(bnhd.batch_stride, 5 * 3 * 64);
  EXPECT_EQ(bnhd.head_stride, 64);
  EXPECT_EQ(bnhd.token_stride, 3 * 64);
}

// Mask build inputs: bf16 Q [1, 4, 1000, 64] and K [1, 4, 700, 64].
class MaskArgs : public ::testing::Test {
 protected:
  void SetUp() override {
    inputs.dtype = SPARSEJIT_BF16;
    inputs.q = sparsejit_tensor_dense(fake_device_pointer(0), SPARSEJIT_LAYOUT_BHND, 1, 4, 1000, 64);
    inputs.k = sparsejit_tensor_dense(fake_device_pointer(0x100000), SPARSEJIT_LAYOUT_BHND, 1, 4, 700, 64);
    inputs.softmax_scale = 0.f;
    sparsejit_mask_options_init(&options);
  }
  sparsejit_status layout_of() { return sparsejit_mask_layout_of(&inputs, &options, &layout); }

  sparsejit_mask_inputs inputs;
  sparsejit_mask_options options;
  sparsejit_mask_layout layout;
};

TEST_F(MaskArgs, DefaultsGiveTheLayoutOfTheCppBuilder) {
  EXPECT_EQ(options.block_q, 128);
  EXPECT_EQ(options.tile, 16);
  EXPECT_DOUBLE_EQ(options.density, 0.3);
  ASSERT_EQ(layout_of(), SPARSEJIT_OK) << sparsejit_last_error_message();
  EXPECT_EQ(layout.q_blocks, 8);   // ceil(1000 / 128)
  EXPECT_EQ(layout.kv_blocks, 6);  // ceil(700 / 128)
  EXPECT_EQ(layout.top_k, 2);      // ceil(0.3 * 6)
  EXPECT_GE(layout.max_kv_blocks, layout.top_k);
  EXPECT_EQ(layout.kv_block_words, 1);
  EXPECT_EQ(layout.rows, 4 * 8);
}

TEST_F(MaskArgs, BadInputsAndOptions) {
  EXPECT_FAILS_WITH(sparsejit_mask_layout_of(&inputs, nullptr, &layout), SPARSEJIT_ERROR_NULL_POINTER,
                    "options is NULL");
  inputs.q.head_dim = inputs.k.head_dim = 256;
  EXPECT_FAILS_WITH(layout_of(), SPARSEJIT_ERROR_UNSUPPORTED, "head dim (q.head_dim) 256 is not supported");
  SetUp();
  inputs.k.heads = 8;
  EXPECT_FAILS_WITH(layout_of(), SPARSEJIT_ERROR_SHAPE_MISMATCH, "k.heads = 8 disagrees with q.heads = 4");
  SetUp();
  options.tile = 12;
  EXPECT_FAILS_WITH(layout_of(), SPARSEJIT_ERROR_UNSUPPORTED, "options.tile 12 is not supported (8, 16 or 32)");
  SetUp();
  options.threshold = 0.9;  // and density 0.3
  EXPECT_FAILS_WITH(layout_of(), SPARSEJIT_ERROR_INVALID_ARGUMENT, "exactly one of density");
  SetUp();
  options.text_blocks = 7;
  EXPECT_FAILS_WITH(layout_of(), SPARSEJIT_ERROR_INVALID_ARGUMENT, "text_blocks = 7 is outside 0..6");
  SetUp();
  EXPECT_FAILS_WITH(sparsejit_mask_build(nullptr, &inputs, &options, nullptr, nullptr, nullptr),
                    SPARSEJIT_ERROR_NULL_POINTER, "builder is NULL");
  EXPECT_FAILS_WITH(sparsejit_mask_builder_set_first_block_by_score(nullptr, 1), SPARSEJIT_ERROR_NULL_POINTER,
                    "builder is NULL");
}

// Per-head densities: KB = 6, so ks 2, 3, 6 and 1 (at least one block), the pitch sized by 6.
TEST_F(MaskArgs, PerHeadDensitiesAndTheirErrors) {
  const double densities[] = {0.2, 0.5, 1.0, 0.01};
  ASSERT_EQ(sparsejit_mask_layout_of_per_head(&inputs, &options, densities, 4, &layout), SPARSEJIT_OK)
      << sparsejit_last_error_message();
  EXPECT_EQ(layout.top_k, 6);
  EXPECT_EQ(layout.max_kv_blocks, 6);
  const double lower[] = {0.2, 0.5, 0.2, 0.01};
  ASSERT_EQ(sparsejit_mask_layout_of_per_head(&inputs, &options, lower, 4, &layout), SPARSEJIT_OK);
  EXPECT_EQ(layout.top_k, 3);
  EXPECT_EQ(layout.max_kv_blocks, 3);

  EXPECT_FAILS_WITH(sparsejit_mask_layout_of_per_head(&inputs, &options, nullptr, 4, &layout),
                    SPARSEJIT_ERROR_NULL_POINTER, "head_densities is NULL");
  EXPECT_FAILS_WITH(sparsejit_mask_layout_of_per_head(&inputs, &options, densities, 3, &layout),
                    SPARSEJIT_ERROR_INVALID_ARGUMENT, "3 head_densities for 4 heads");
  EXPECT_FAILS_WITH(sparsejit_mask_layout_of_per_head(&inputs, &options, densities, 0, &layout),
                    SPARSEJIT_ERROR_INVALID_ARGUMENT, "head_count = 0 must be positive");
  const double above_one[] = {0.2, 1.5, 1.0, 0.5};
  EXPECT_FAILS_WITH(sparsejit_mask_layout_of_per_head(&inputs, &options, above_one, 4, &layout),
                    SPARSEJIT_ERROR_INVALID_ARGUMENT, "head_densities[1] = 1.5");
  options.density = 0.0;
  options.threshold = 0.9;
  EXPECT_FAILS_WITH(sparsejit_mask_layout_of_per_head(&inputs, &options, densities, 4, &layout),
                    SPARSEJIT_ERROR_INVALID_ARGUMENT, "threshold must then be 0");
  SetUp();
  EXPECT_FAILS_WITH(sparsejit_mask_build_per_head(nullptr, &inputs, &options, densities, 4, nullptr, nullptr, nullptr),
                    SPARSEJIT_ERROR_NULL_POINTER, "builder is NULL");
  EXPECT_FAILS_WITH(sparsejit_mask_build_per_head(nullptr, &inputs, &options, nullptr, 4, nullptr, nullptr, nullptr),
                    SPARSEJIT_ERROR_NULL_POINTER, "head_densities is NULL");
}

TEST(CApiTokenOrder, MatchesTheCppOrderAndChecksItsBuffer) {
  const std::vector<int> expected =
      sparsejit::runtime::token_order(sparsejit::runtime::TokenOrder::hilbert, {3, 5, 7}, 4);
  std::vector<int32_t> order(expected.size());
  ASSERT_EQ(sparsejit_token_order(SPARSEJIT_ORDER_HILBERT, 3, 5, 7, 4, order.data(), std::ssize(order)), SPARSEJIT_OK);
  EXPECT_EQ(std::vector<int>(order.begin(), order.end()), expected);
  EXPECT_FAILS_WITH(sparsejit_token_order(SPARSEJIT_ORDER_RASTER, 3, 5, 7, 4, order.data(), 100),
                    SPARSEJIT_ERROR_INVALID_ARGUMENT, "capacity 100 is too small: the order has 109 tokens");
  EXPECT_FAILS_WITH(sparsejit_token_order(SPARSEJIT_ORDER_RASTER, 0, 5, 7, 0, order.data(), std::ssize(order)),
                    SPARSEJIT_ERROR_INVALID_ARGUMENT, "sparsejit_token_order:");
  EXPECT_FAILS_WITH(sparsejit_token_order(SPARSEJIT_ORDER_RASTER, 3, 5, 7, 4, nullptr, 0), SPARSEJIT_ERROR_NULL_POINTER,
                    "order is NULL");
}

// The C schedule's decision as the C++ one's.
sparsejit::runtime::MaskDecision as_cpp(const sparsejit_mask_decision& decision) {
  using sparsejit::runtime::MaskAction;
  return {decision.action == SPARSEJIT_MASK_REFRESH ? MaskAction::refresh
          : decision.action == SPARSEJIT_MASK_REUSE ? MaskAction::reuse
                                                    : MaskAction::dense,
          decision.density, decision.window, decision.threshold};
}

TEST(CApiMaskSchedule, DecidesAsTheCppScheduleAtEveryStepAndLayer) {
  sparsejit_mask_schedule schedule;
  sparsejit_mask_schedule_init(&schedule);
  const sparsejit::runtime::MaskSchedule defaults;  // DFSAttn's
  ASSERT_EQ(schedule.steps, defaults.config().steps);
  const std::vector<double> thresholds = {0.9, 0.8};
  const std::vector<int32_t> dense_layers = {0, 3};
  sparsejit::runtime::MaskScheduleConfig by_threshold{20, 4, 5, {}, {0, 3}, {0.9, 0.8}};
  sparsejit_mask_schedule c_by_threshold{20, 4, 5, nullptr, 0, thresholds.data(), 2, dense_layers.data(), 2};
  for (const auto& [c_schedule, cpp_schedule] :
       {std::pair{schedule, defaults}, std::pair{c_by_threshold, sparsejit::runtime::MaskSchedule(by_threshold)}})
    for (int step = 0; step < c_schedule.steps; ++step)
      for (int layer = 0; layer < 5; ++layer) {
        sparsejit_mask_decision decision;
        ASSERT_EQ(sparsejit_mask_schedule_decide(&c_schedule, step, layer, &decision), SPARSEJIT_OK)
            << sparsejit_last_error_message();
        EXPECT_EQ(as_cpp(decision), cpp_schedule.decide(step, layer)) << "step " << step << ", layer " << layer;
      }
  sparsejit_mask_decision decision;
  ASSERT_EQ(sparsejit_mask_schedule_decide(&schedule, 24, 1, &decision), SPARSEJIT_OK);
  EXPECT_EQ(decision.action, SPARSEJIT_MASK_REFRESH);
  EXPECT_EQ(decision.density, 0.2);
  EXPECT_EQ(decision.window, 1);
}

TEST(CApiMaskSchedule, BadSchedulesAndStepsAreNamed) {
  sparsejit_mask_schedule schedule;
  sparsejit_mask_schedule_init(&schedule);
  sparsejit_mask_decision decision;
  EXPECT_FAILS_WITH(sparsejit_mask_schedule_decide(nullptr, 0, 0, &decision), SPARSEJIT_ERROR_NULL_POINTER,
                    "schedule is NULL");
  EXPECT_FAILS_WITH(sparsejit_mask_schedule_decide(&schedule, 0, 0, nullptr), SPARSEJIT_ERROR_NULL_POINTER,
                    "decision is NULL");
  EXPECT_FAILS_WITH(sparsejit_mask_schedule_decide(&schedule, 50, 0, &decision), SPARSEJIT_ERROR_INVALID_ARGUMENT,
                    "50");
  EXPECT_FAILS_WITH(sparsejit_mask_schedule_decide(&schedule, 0, -1, &decision), SPARSEJIT_ERROR_INVALID_ARGUMENT,
                    "-1");
  const std::vector<double> too_dense = {0.3, 1.5};
  sparsejit_mask_schedule bad = schedule;
  bad.densities = too_dense.data();
  bad.density_count = 2;
  EXPECT_FAILS_WITH(sparsejit_mask_schedule_decide(&bad, 0, 0, &decision), SPARSEJIT_ERROR_INVALID_ARGUMENT,
                    "densities", "1.5");
  bad = schedule;
  bad.thresholds = too_dense.data();
  bad.threshold_count = 1;
  EXPECT_FAILS_WITH(sparsejit_mask_schedule_decide(&bad, 0, 0, &decision), SPARSEJIT_ERROR_INVALID_ARGUMENT,
                    "both given");
  bad = schedule;
  bad.dense_layers = nullptr;
  EXPECT_FAILS_WITH(sparsejit_mask_schedule_decide(&bad, 0, 0, &decision), SPARSEJIT_ERROR_NULL_POINTER,
                    "schedule->dense_layers is NULL");
  bad = schedule;
  bad.density_count = -1;
  EXPECT_FAILS_WITH(sparsejit_mask_schedule_decide(&bad, 0, 0, &decision), SPARSEJIT_ERROR_INVALID_ARGUMENT,
                    "schedule->densities has the negative count -1");
  bad = schedule;
  bad.refresh_interval = 0;
  EXPECT_FAILS_WITH(sparsejit_mask_schedule_decide(&bad, 0, 0, &decision), SPARSEJIT_ERROR_INVALID_ARGUMENT,
                    "refresh_interval");
}

TEST(CApiPermute, ArgumentsAreCheckedBeforeTheRuntime) {
  sparsejit_permute_args args{};
  args.tensor_count = 2;
  args.permutation = static_cast<const int32_t*>(fake_device_pointer(0x900000));
  for (int t = 0; t < 2; ++t) {
    args.source[t] = sparsejit_tensor_dense(fake_device_pointer(0x100000 * t), SPARSEJIT_LAYOUT_BNHD, 1, 2, 64, 128);
    args.destination[t] =
        sparsejit_tensor_dense(fake_device_pointer(0x100000 * (t + 2)), SPARSEJIT_LAYOUT_BHND, 1, 2, 64, 128);
  }
  args.destination[1].tokens = 63;
  EXPECT_FAILS_WITH(sparsejit_permute_tokens(nullptr, &args, nullptr), SPARSEJIT_ERROR_SHAPE_MISMATCH,
                    "destination[1].tokens = 63 disagrees with source[0].tokens = 64");
  args.destination[1].tokens = 64;
  args.source[1].data = fake_device_pointer(0x100002);
  EXPECT_FAILS_WITH(sparsejit_permute_tokens(nullptr, &args, nullptr), SPARSEJIT_ERROR_MISALIGNED, "multiple of 4 bytes");
  args.source[1].data = fake_device_pointer(0x100000);
  args.tensor_count = 4;
  EXPECT_FAILS_WITH(sparsejit_permute_tokens(nullptr, &args, nullptr), SPARSEJIT_ERROR_INVALID_ARGUMENT,
                    "tensor_count 4 is outside 1..3");
  args.tensor_count = 2;
  EXPECT_FAILS_WITH(sparsejit_permute_tokens(nullptr, &args, nullptr), SPARSEJIT_ERROR_NULL_POINTER, "runtime is NULL");
}

TEST(CApiRuntime, DeviceIndexAndMissingGpu) {
  sparsejit_runtime* runtime = nullptr;
  sparsejit_runtime_options options;
  sparsejit_runtime_options_init(&options);
  EXPECT_EQ(options.device, 0);
  EXPECT_EQ(options.use_database, 1);
  EXPECT_FAILS_WITH(sparsejit_runtime_create(&options, nullptr), SPARSEJIT_ERROR_NULL_POINTER, "runtime is NULL");
  options.device = -1;
  EXPECT_FAILS_WITH(sparsejit_runtime_create(&options, &runtime), SPARSEJIT_ERROR_INVALID_ARGUMENT,
                    "device -1 is negative");
  options.device = 4096;  // no GPU, or no GPU of that index
  EXPECT_FAILS_WITH(sparsejit_runtime_create(&options, &runtime), SPARSEJIT_ERROR_NO_GPU);
  EXPECT_EQ(runtime, nullptr) << "a failed create writes no runtime";
  if (!sparsejit::jit::driver_available()) {  // GPU 0 itself is missing here
    options.device = 0;
    EXPECT_FAILS_WITH(sparsejit_runtime_create(&options, &runtime), SPARSEJIT_ERROR_NO_GPU,
                      "sparsejit_runtime_create:");
  }
  sparsejit_runtime_destroy(nullptr);  // a no-op
}

}  // namespace
