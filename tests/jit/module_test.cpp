// Driver API: load, launch and cache modules (GPU), and the no-GPU behaviour (CPU).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "jit/error.h"
#include "jit/module_cache.h"
#include "jit/nvrtc_compiler.h"
#include "tests/support/gpu_test.h"

namespace sparsejit::jit {
namespace {

TEST(Driver, EitherUsableOrRefusedWithAReason) {
  std::string why;
  if (driver_available(&why)) {
    EXPECT_TRUE(why.empty());
    EXPECT_GT(device_count(), 0);
  } else {
    EXPECT_FALSE(why.empty());
    EXPECT_THROW(driver(), NoGpuError);
    EXPECT_THROW(query_device(0), NoGpuError);
  }
}

CompiledBinary affine_kernel(int device_major, int device_minor) {
  CompileRequest request;
  request.program_name = "affine.cu";
  request.source = R"(
template <int Scale> __global__ void affine(int* out, int n, int offset) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = Scale * i + offset;
})";
  request.name_expressions = {"affine<3>"};
  request.options = {"-std=c++17"};
  request.target = Target::for_compute_capability(device_major, device_minor);
  return compile(request);
}

class ModuleTest : public testing::GpuTest {
 protected:
  CompiledBinary binary() const {
    const DeviceInfo device = query_device(0);
    return affine_kernel(device.cc_major, device.cc_minor);
  }
};

TEST_F(ModuleTest, LoadsLaunchesAndComputes) {
  const CompiledBinary compiled = binary();
  auto module = LoadedModule::load(context(), compiled.cubin, compiled.lowered_names);
  const Kernel kernel = module->kernel("affine<3>");
  EXPECT_GT(kernel.registers_per_thread(), 0);
  const int n = 1000 + 17;
  DeviceBuffer out(n * sizeof(int));
  out.fill(0xff);  // poison
  CUdeviceptr address = out.address();
  int count = n, offset = 11;
  void* args[] = {&address, &count, &offset};
  Stream stream;
  kernel.launch({{(n + 127) / 128, 1, 1}, {128, 1, 1}, 0, stream.handle()}, args);
  stream.synchronize();
  const std::vector<int> values = out.download_as<int>();
  for (int i = 0; i < n; ++i) ASSERT_EQ(values[i], 3 * i + 11) << "at " << i;
}

TEST_F(ModuleTest, ARefusedLaunchNamesTheKernelAndGeometry) {
  const CompiledBinary compiled = binary();
  auto module = LoadedModule::load(context(), compiled.cubin, compiled.lowered_names);
  const Kernel kernel = module->kernel("affine<3>");
  CUdeviceptr address = 0;
  int count = 0, offset = 0;
  void* args[] = {&address, &count, &offset};
  try {
    kernel.launch({{1, 1, 1}, {4096, 1, 1}, 0, nullptr}, args);  // too many threads per block
    FAIL() << "the driver must refuse 4096 threads per block";
  } catch (const CudaError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("affine<3>"), std::string::npos) << what;
    EXPECT_NE(what.find("block (4096,1,1)"), std::string::npos) << what;
    EXPECT_NE(what.find("CUDA_ERROR_INVALID_VALUE"), std::string::npos) << what;
  }
}

// Above 48 KB of dynamic shared memory a launch needs the function's limit raised first.
TEST_F(ModuleTest, DynamicSharedMemoryAbove48KbNeedsTheLimitRaised) {
  const DeviceInfo device = query_device(0);
  CompileRequest request;
  request.program_name = "shared.cu";
  request.source = R"(
extern "C" __global__ void reverse_through_shared(const int* in, int* out, int n) {
  extern __shared__ int staged[];
  for (int i = threadIdx.x; i < n; i += blockDim.x) staged[i] = in[i];
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = staged[n - 1 - i];
})";
  request.name_expressions = {"reverse_through_shared"};
  request.target = Target::for_compute_capability(device.cc_major, device.cc_minor);
  const CompiledBinary compiled = compile(request);
  auto module = LoadedModule::load(context(), compiled.cubin, compiled.lowered_names);
  const Kernel kernel = module->kernel("reverse_through_shared");

  const int n = 64 * 1024 / 4 + 1000;  // 69.5 KB of ints, above the 48 KB default
  const unsigned shared_bytes = n * sizeof(int);
  ASSERT_LE(shared_bytes, static_cast<unsigned>(device.max_shared_bytes_per_block));
  std::vector<int> values(n);
  for (int i = 0; i < n; ++i) values[i] = 7 * i + 3;
  DeviceBuffer in = DeviceBuffer::from_host(values);
  DeviceBuffer out(n * sizeof(int));
  out.fill(0xff);
  CUdeviceptr in_address = in.address(), out_address = out.address();
  int count = n;
  void* args[] = {&in_address, &out_address, &count};
  const LaunchConfig config{{1, 1, 1}, {256, 1, 1}, shared_bytes, nullptr};
  EXPECT_THROW(kernel.launch(config, args), CudaError) << "48 KB is the default limit";
  kernel.allow_dynamic_shared_bytes(shared_bytes);
  kernel.launch(config, args);
  SJ_CU(cuCtxSynchronize());
  const std::vector<int> reversed = out.download_as<int>();
  for (int i = 0; i < n; ++i) ASSERT_EQ(reversed[i], values[n - 1 - i]) << "at " << i;
}

TEST_F(ModuleTest, UnknownNameExpressionIsAClearError) {
  const CompiledBinary compiled = binary();
  auto module = LoadedModule::load(context(), compiled.cubin, compiled.lowered_names);
  EXPECT_THROW(module->kernel("affine<4>"), JitError);
}

TEST_F(ModuleTest, GarbageCubinIsRefusedByTheDriver) {
  const std::vector<std::uint8_t> garbage(256, 0x5a);
  EXPECT_THROW(LoadedModule::load(context(), garbage, {}), CudaError);
}

TEST_F(ModuleTest, CacheLoadsOncePerKeyAcrossThreads) {
  const CompiledBinary compiled = binary();
  ModuleCache cache;
  std::atomic<int> loads{0};
  const auto loader = [&] {
    ++loads;
    return LoadedModule::load(context(), compiled.cubin, compiled.lowered_names);
  };
  std::vector<std::jthread> threads;
  std::vector<std::shared_ptr<LoadedModule>> seen(8);
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      context().make_current();
      seen[t] = cache.get_or_load("key-a", 0, loader);
    });
  threads.clear();
  EXPECT_EQ(loads.load(), 1);
  for (const auto& module : seen) EXPECT_EQ(module, seen[0]);
  cache.get_or_load("key-b", 0, loader);
  EXPECT_EQ(loads.load(), 2);
  EXPECT_EQ(cache.loaded_count(), 2u);
}

TEST_F(ModuleTest, CacheRetriesAFailedLoad) {
  ModuleCache cache;
  EXPECT_THROW(cache.get_or_load("k", 0, []() -> std::shared_ptr<LoadedModule> {
                 throw JitError("first load fails");
               }),
               JitError);
  const CompiledBinary compiled = binary();
  EXPECT_NE(cache.get_or_load("k", 0, [&] {
              return LoadedModule::load(context(), compiled.cubin, compiled.lowered_names);
            }),
            nullptr);
}

}  // namespace
}  // namespace sparsejit::jit
