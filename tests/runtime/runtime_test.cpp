// Runtime on a GPU: permute_tokens end to end, kernels reused from the database by a later
// Runtime, the GPU recorded, and the refusals (no such device, no GPU at all).
#include <gtest/gtest.h>

#include <filesystem>
#include <optional>
#include <string>

#include "db/database.h"
#include "jit/device.h"
#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "jit/error.h"
#include "jit/nvrtc_compiler.h"
#include "runtime/runtime.h"
#include "tests/support/gpu_test.h"
#include "tests/support/test_support.h"
#include "tests/templates/permute_case.h"

namespace sparsejit::runtime {
namespace {

using templates::PermuteDirection;

class RuntimeTest : public testing::GpuTest {
 protected:
  // Runs a fresh random B2 H3 N777 D128 gather of 3 tensors (BNHD -> BHND) through `rt` and
  // checks it against the CPU reference.
  static void run_small_case(Runtime& rt) {
    std::mt19937_64 generator = testing::fresh_generator();
    const testing::HostPermuteCase c = testing::make_case(
        {2, 3, 777, 128, 3}, PermuteDirection::gather, testing::kStoragePairs[0], generator);
    const testing::DevicePermuteCase device(c);
    jit::Stream stream;
    rt.permute_tokens(device.params(), 128, PermuteDirection::gather, stream.handle());
    stream.synchronize();
    testing::expect_matches_reference(c, device);
  }
};

// The first Runtime compiles the kernel and stores it; a second Runtime on the same file (a
// later process) loads it from the database without NVRTC, and a repeated call on it is
// served from the in-process module cache (no second database read).
TEST_F(RuntimeTest, CompilesOnceThenLoadsFromTheDatabase) {
  testing::TempDirectory directory;
  const RuntimeOptions options{.device = 0, .database_path = directory / "t.db"};
  {
    Runtime first(options);
    const jit::DeviceInfo device = jit::query_device(0);
    EXPECT_EQ(first.target(), jit::Target::for_compute_capability(device.cc_major, device.cc_minor));
    run_small_case(first);
    EXPECT_EQ(first.kernels().compiled(), 1u);
    EXPECT_EQ(first.kernels().store_hits(), 0u);
  }
  Runtime second(options);
  const std::uint64_t before = jit::nvrtc_compile_count();
  run_small_case(second);
  EXPECT_EQ(second.kernels().compiled(), 0u);
  EXPECT_EQ(second.kernels().store_hits(), 1u);
  run_small_case(second);
  EXPECT_EQ(second.kernels().store_hits(), 1u);
  EXPECT_EQ(jit::nvrtc_compile_count(), before);
}

// Without a database the Runtime still works: it compiles in-process and stores nothing.
TEST_F(RuntimeTest, WorksWithoutADatabase) {
  Runtime rt({.device = 0, .database_path = std::nullopt, .use_database = false});
  EXPECT_EQ(rt.database(), nullptr);
  run_small_case(rt);
  EXPECT_EQ(rt.kernels().compiled(), 1u);
  EXPECT_EQ(rt.kernels().store_hits(), 0u);
}

// Opening a Runtime records its GPU (one row, refreshed, not duplicated, by a second one).
TEST_F(RuntimeTest, RecordsTheGpuInTheDatabase) {
  testing::TempDirectory directory;
  const RuntimeOptions options{.device = 0, .database_path = directory / "t.db"};
  const jit::DeviceInfo device = jit::query_device(0);
  for (int opened = 1; opened <= 2; ++opened) {
    Runtime rt(options);
    ASSERT_NE(rt.database(), nullptr);
    const std::vector<db::StoredGpu> gpus = rt.database()->list_gpus();
    ASSERT_EQ(gpus.size(), 1u) << "after Runtime #" << opened;
    EXPECT_EQ(gpus[0].gpu.name, device.name);
    EXPECT_EQ(gpus[0].gpu.cc_major, device.cc_major);
    EXPECT_EQ(gpus[0].gpu.cc_minor, device.cc_minor);
    EXPECT_EQ(gpus[0].gpu.sm_count, device.sm_count);
    EXPECT_EQ(gpus[0].gpu.memory_bytes, device.memory_bytes);
    EXPECT_EQ(gpus[0].gpu.uuid, device.uuid);
  }
}

// A device ordinal past the last GPU is refused with the number of GPUs, before the
// database is created.
TEST_F(RuntimeTest, ANonexistentDeviceNamesTheDeviceCount) {
  testing::TempDirectory directory;
  try {
    Runtime rt({.device = 99, .database_path = directory / "t.db"});
    FAIL() << "device 99 must be refused";
  } catch (const jit::JitError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("GPU 99 does not exist"), std::string::npos) << what;
    EXPECT_NE(what.find("this machine has " + std::to_string(jit::device_count()) + " GPU(s)"),
              std::string::npos)
        << what;
  }
  EXPECT_FALSE(std::filesystem::exists(directory / "t.db"));
}

// The other side of GpuTest: on a machine without a GPU (CI) the Runtime refuses with
// NoGpuError and does not create the database.
TEST(RuntimeWithoutGpu, ThrowsNoGpuErrorAndCreatesNoDatabase) {
  if (jit::driver_available()) GTEST_SKIP() << "a GPU is present; this test is for machines without one";
  testing::TempDirectory directory;
  EXPECT_THROW(Runtime({.device = 0, .database_path = directory / "t.db"}), jit::NoGpuError);
  EXPECT_FALSE(std::filesystem::exists(directory / "t.db"));
}

}  // namespace
}  // namespace sparsejit::runtime
