// The statistics of the timing protocol (CPU) and event timing itself (GPU).
#include <gtest/gtest.h>

#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "tests/support/gpu_test.h"
#include "tuner/timing.h"

namespace sparsejit::tuner {
namespace {

TEST(Summarize, MedianAndQuantilesInterpolate) {
  const Timing timing = summarize({5, 1, 4, 2, 3});
  EXPECT_DOUBLE_EQ(timing.median_ms, 3);
  EXPECT_DOUBLE_EQ(timing.p20_ms, 1.8);  // position 0.8 between 1 and 2
  EXPECT_DOUBLE_EQ(timing.p80_ms, 4.2);
  EXPECT_EQ(timing.repetitions, 5);
}

TEST(Summarize, OneSampleAndNone) {
  EXPECT_DOUBLE_EQ(summarize({7}).p80_ms, 7);
  EXPECT_THROW(summarize({}), std::invalid_argument);
}

class TimingTest : public testing::GpuTest {};

TEST_F(TimingTest, LargerCopiesTakeLonger) {
  jit::Stream stream;
  const std::size_t small = 8u << 20, large = 256u << 20;
  jit::DeviceBuffer source(large), destination(large);
  source.fill(0x3c);
  const auto copy = [&](std::size_t bytes) {
    return time_on_stream(
        [&] { SJ_CU(cuMemcpyDtoDAsync(destination.address(), source.address(), bytes, stream.handle())); },
        stream.handle(), {.warmup_ms = 5, .measure_ms = 20});
  };
  const Timing a = copy(small), b = copy(large);
  EXPECT_GT(a.median_ms, 0);
  EXPECT_GT(b.median_ms, 8 * a.median_ms) << "32x the bytes should take well over 8x the time";
  EXPECT_LE(b.p20_ms, b.median_ms);
  EXPECT_LE(b.median_ms, b.p80_ms);
  EXPECT_GE(b.repetitions, 5);
}

}  // namespace
}  // namespace sparsejit::tuner
