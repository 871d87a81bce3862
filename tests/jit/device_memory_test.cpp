// DeviceBuffer and the typed copy back to the host (GPU). Across contexts: a buffer allocated
// in a context of its own (cuCtxCreate, not the primary one) works and frees there while the
// thread has another context current, and leaves that one current; a buffer that outlives its
// context refuses to copy and frees nothing, so a newer context's allocation at the same
// address survives it.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "jit/error.h"
#include "tests/support/gpu_test.h"

namespace sparsejit::jit {
namespace {

class DeviceBufferTest : public testing::GpuTest {
 protected:
  // A new context on the fixture's device, current on return; the fixture's stays alive.
  static CUcontext create_context() {
    CUdevice device = 0;
    SJ_CU(cuCtxGetDevice(&device));
    CUcontext created = nullptr;
    SJ_CU(cuCtxCreate(&created, nullptr, 0, device));
    return created;
  }
  static CUcontext current() {
    CUcontext context = nullptr;
    SJ_CU(cuCtxGetCurrent(&context));
    return context;
  }
  static std::vector<std::uint8_t> pattern(std::size_t bytes, std::uint8_t first) {
    std::vector<std::uint8_t> values(bytes);
    std::iota(values.begin(), values.end(), first);
    return values;
  }
};

// copy_device_to_host_as: `count` elements, each whole, from any element offset; none copied
// for a count of 0.
TEST_F(DeviceBufferTest, CopiesTypedElementsBackToTheHost) {
  std::vector<std::uint64_t> values(1001);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = 0x0123456789abcdefull * (i + 1);
  const DeviceBuffer buffer = DeviceBuffer::from_host(values);
  EXPECT_EQ(copy_device_to_host_as<std::uint64_t>(buffer.pointer(), values.size()), values);
  const auto* device = static_cast<const std::uint64_t*>(buffer.pointer());
  EXPECT_EQ(copy_device_to_host_as<std::uint64_t>(device + 10, 3),
            std::vector<std::uint64_t>(values.begin() + 10, values.begin() + 13));
  EXPECT_TRUE(copy_device_to_host_as<std::uint64_t>(device, 0).empty());
}

TEST_F(DeviceBufferTest, WorksInItsOwnContextWhileAnotherIsCurrent) {
  constexpr std::size_t kBytes = 64 << 20;  // large enough for cuMemGetInfo to see it freed
  const CUcontext fixture = context().handle();
  const CUcontext own = create_context();
  ASSERT_NE(own, fixture);
  {
    DeviceBuffer buffer = DeviceBuffer::from_host(pattern(kBytes, 7));
    context().make_current();
    EXPECT_EQ(buffer.download(), pattern(kBytes, 7));
    EXPECT_EQ(current(), fixture) << "download() must leave the caller's context current";
    buffer.fill(0x5a);
    EXPECT_EQ(buffer.download(), std::vector<std::uint8_t>(kBytes, 0x5a));
    buffer.upload(pattern(kBytes, 99));
    EXPECT_EQ(buffer.download(), pattern(kBytes, 99));
    EXPECT_EQ(current(), fixture);
    // The free below runs in `own`: cuMemFree in the fixture's context would fail and leak.
    SJ_CU(cuCtxSetCurrent(own));
    std::size_t free_before = 0, total = 0;
    SJ_CU(cuMemGetInfo(&free_before, &total));
    context().make_current();
    buffer = DeviceBuffer();  // frees
    EXPECT_EQ(current(), fixture) << "the free must leave the caller's context current";
    SJ_CU(cuCtxSetCurrent(own));
    std::size_t free_after = 0;
    SJ_CU(cuMemGetInfo(&free_after, &total));
    EXPECT_GE(free_after, free_before + kBytes) << "the buffer's memory did not come back to its context";
  }
  context().make_current();
  SJ_CU(cuCtxDestroy(own));
  EXPECT_EQ(current(), fixture);
}

TEST_F(DeviceBufferTest, OutlivingItsContextFreesNothingAndRefusesToCopy) {
  const std::size_t bytes = 4 << 20;
  const CUcontext first = create_context();
  auto stale = std::make_unique<DeviceBuffer>(bytes);
  const CUdeviceptr stale_address = stale->address();
  SJ_CU(cuCtxDestroy(first));  // its memory goes with it
  context().make_current();
  try {
    (void)stale->download();
    ADD_FAILURE() << "download() from a destroyed context must throw";
  } catch (const CudaError& error) {
    EXPECT_EQ(error.code(), CUDA_ERROR_CONTEXT_IS_DESTROYED);
    EXPECT_NE(std::string(error.what()).find("destroyed"), std::string::npos) << error.what();
  }
  EXPECT_THROW(stale->fill(0), CudaError);
  EXPECT_THROW(stale->upload(std::vector<std::uint8_t>(bytes)), CudaError);

  // A newer context, which the driver may hand the same handle and the same address: the stale
  // buffer's destructor must leave its allocation alone.
  const CUcontext second = create_context();
  {
    const DeviceBuffer live = DeviceBuffer::from_host(pattern(bytes, 3));
    RecordProperty("same_context_handle", second == first ? "yes" : "no");
    RecordProperty("same_address", live.address() == stale_address ? "yes" : "no");
    context().make_current();
    stale.reset();
    EXPECT_EQ(current(), context().handle());
    EXPECT_EQ(live.download(), pattern(bytes, 3)) << "the stale buffer freed a newer context's memory";
  }  // `live` frees in `second`
  SJ_CU(cuCtxDestroy(second));
}

// The case the context check exists for: a primary context released to zero and retained
// again. The driver hands back the same handle (and, for the same size, the same address),
// so a buffer of the first instance that frees by handle would free the second's memory.
// Runs in a child process (a death test, "threadsafe": CUDA does not survive a fork) because
// it destroys the primary context, the fixture's reference included; the child leaves with
// _Exit, past every destructor, and says on stderr whether the handle and the address were
// the same (the hazard needs both).
TEST_F(DeviceBufferTest, PrimaryContextRetainedAgainKeepsTheNewerAllocation) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const auto child = [] {
    const std::size_t bytes = 4 << 20;
    CUdevice device = 0;
    SJ_CU(cuCtxGetDevice(&device));
    CUcontext first = nullptr;
    SJ_CU(cuDevicePrimaryCtxRetain(&first, device));
    SJ_CU(cuCtxSetCurrent(first));
    auto stale = std::make_unique<DeviceBuffer>(bytes);
    const CUdeviceptr stale_address = stale->address();
    SJ_CU(cuCtxSetCurrent(nullptr));
    SJ_CU(cuDevicePrimaryCtxRelease(device));  // this retain
    SJ_CU(cuDevicePrimaryCtxRelease(device));  // the fixture's: the context is destroyed
    CUcontext second = nullptr;
    SJ_CU(cuDevicePrimaryCtxRetain(&second, device));
    SJ_CU(cuCtxSetCurrent(second));
    const DeviceBuffer live = DeviceBuffer::from_host(pattern(bytes, 5));
    std::fprintf(stderr, "same handle: %s, same address: %s\n", second == first ? "yes" : "no",
                 live.address() == stale_address ? "yes" : "no");
    stale.reset();
    const bool intact = live.download() == pattern(bytes, 5);
    std::fflush(stderr);
    std::_Exit(intact ? 0 : 1);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "same handle: (yes|no), same address: (yes|no)")
      << "exit code 1: the stale buffer freed the newer context's memory";
}

}  // namespace
}  // namespace sparsejit::jit
