// mask_convert (csr_to_bitmask): the space, the validation and NVRTC compiles without a GPU;
// on a GPU, the kernel bit for bit against to_bitmask (block_mask.h) on random masks with
// ragged key-block counts around the word boundaries, empty rows with stale padding, full and
// empty masks, and a poisoned output (every word must be written).
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>

#include "jit/device.h"
#include "jit/device_memory.h"
#include "jit/kernel_provider.h"
#include "jit/nvrtc_compiler.h"
#include "templates/mask_convert/mask_convert_family.h"
#include "templates/sparse_attention/block_mask.h"
#include "tests/support/gpu_test.h"

namespace sparsejit::templates {
namespace {

CsrToBitmaskParams valid_params() {
  static int count[1], index[1];
  static unsigned long long bits[1];
  CsrToBitmaskParams p{};
  p.kv_block_count = count;
  p.kv_block_index = index;
  p.kv_block_bits = bits;
  p.rows = 1;
  p.max_kv_blocks = 1;
  p.kv_blocks = 1;
  p.kv_block_words = 1;
  return p;
}

std::string refusal(const CsrToBitmaskParams& p) {
  try {
    MaskConvertFamily::validate(p);
  } catch (const std::invalid_argument& error) {
    return error.what();
  }
  return "accepted";
}

TEST(MaskConvertFamily, OneSpecializationThatCompiles) {
  for (const char* arch : {"sm_80", "sm_90"}) {
    const std::vector<jit::KernelSpec> space = MaskConvertFamily().enumerate(jit::Target::parse(arch));
    ASSERT_EQ(space.size(), 1u);
    EXPECT_EQ(space[0].name_expression, MaskConvertFamily::name_expression());
    const jit::CompiledBinary binary = jit::compile(space[0].request);
    EXPECT_GT(binary.cubin.size(), 500u);
    EXPECT_EQ(binary.lowered_names.count(space[0].name_expression), 1u);
  }
}

TEST(MaskConvertFamily, ValidationSaysWhy) {
  EXPECT_EQ(refusal(valid_params()), "accepted");
  CsrToBitmaskParams p = valid_params();
  p.rows = 0;
  EXPECT_NE(refusal(p).find("must be positive"), std::string::npos);
  p = valid_params();
  p.max_kv_blocks = 2;
  EXPECT_NE(refusal(p).find("max_kv_blocks = 2 is outside 0..1"), std::string::npos);
  p = valid_params();
  p.kv_blocks = 65;
  p.max_kv_blocks = 3;
  EXPECT_NE(refusal(p).find("kv_block_words = 1 for 65 key blocks (must be 2)"), std::string::npos);
  p = valid_params();
  p.kv_block_bits = nullptr;
  EXPECT_NE(refusal(p).find("must not be null"), std::string::npos);
  p = valid_params();
  p.kv_block_index = nullptr;
  EXPECT_NE(refusal(p).find("must not be null"), std::string::npos);
  p.max_kv_blocks = 0;  // an all-empty mask has no index to read
  EXPECT_EQ(refusal(p), "accepted");
  p = valid_params();
  p.rows = 1LL << 40;
  EXPECT_NE(refusal(p).find("more than one launch covers"), std::string::npos);
}

class MaskConvertGpuTest : public testing::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    stream_ = std::make_unique<jit::Stream>();
    const jit::DeviceInfo info = jit::query_device(context().ordinal());
    kernel_.emplace(provider_.kernel(context(), MaskConvertFamily::render(
                                              jit::Target::for_compute_capability(info.cc_major, info.cc_minor))));
  }
  // The kernel's bitmask of `mask` (uploaded with its padding as it is).
  std::vector<std::uint64_t> convert(const BlockMask& mask) {
    const jit::DeviceBuffer count = jit::DeviceBuffer::from_host(mask.count);
    const jit::DeviceBuffer index = jit::DeviceBuffer::from_host(mask.index.empty() ? std::vector<int>{0} : mask.index);
    const std::size_t rows = mask.count.size();
    jit::DeviceBuffer bits(rows * bitmask_words(mask.kv_blocks) * sizeof(std::uint64_t));
    bits.fill(0xff);
    CsrToBitmaskParams p{};
    p.kv_block_count = static_cast<const int*>(count.pointer());
    p.kv_block_index = static_cast<const int*>(index.pointer());
    p.kv_block_bits = static_cast<unsigned long long*>(bits.pointer());
    p.rows = static_cast<long long>(rows);
    p.max_kv_blocks = mask.max_kv_blocks;
    p.kv_blocks = mask.kv_blocks;
    p.kv_block_words = bitmask_words(mask.kv_blocks);
    MaskConvertFamily::launch(*kernel_, p, stream_->handle());
    stream_->synchronize();
    return bits.download_as<std::uint64_t>();
  }

  jit::KernelProvider provider_{nullptr};
  std::unique_ptr<jit::Stream> stream_;
  std::optional<jit::Kernel> kernel_;
  std::mt19937_64 generator_ = testing::fresh_generator();
};

// Key-block counts 1, 63, 64, 65, 128, 591 (75,600 tokens in blocks of 128) and 1000, at
// densities from empty to full, with a share of emptied rows whose stale lists must be ignored.
TEST_F(MaskConvertGpuTest, EqualsTheCpuBitmaskBitForBit) {
  for (int kv_blocks : {1, 63, 64, 65, 128, 591, 1000})
    for (double density : {0.0, 0.05, 0.3, 1.0}) {
      SCOPED_TRACE("KB " + std::to_string(kv_blocks) + " density " + std::to_string(density));
      const int tokens_kv = kv_blocks * 128 - 37;
      BlockMask mask = random_block_mask(2, 3, 1000, tokens_kv, 128, 128, density, generator_);
      if (density > 0.0) mask = with_empty_rows(std::move(mask), 0.2, generator_);
      EXPECT_EQ(convert(mask), to_bitmask(mask).bits);
    }
}

}  // namespace
}  // namespace sparsejit::templates
