#include "tests/support/gpu_test.h"

#include <cstdlib>
#include <cstring>

#include "jit/driver_api.h"

namespace sparsejit::testing {

std::shared_ptr<jit::DeviceContext> GpuTest::shared_context() {
  static const std::shared_ptr<jit::DeviceContext> context = std::make_shared<jit::DeviceContext>(0);
  return context;
}

void GpuTest::SetUp() {
  std::string why;
  if (!jit::driver_available(&why)) SPARSEJIT_SKIP_WITHOUT_GPU("GPU test skipped", why);
  shared_context()->make_current();
}

bool gpu_required() {
  const char* required = std::getenv("SPARSEJIT_REQUIRE_GPU");
  return required != nullptr && std::strcmp(required, "1") == 0;
}

CUcontext GpuTest::context_current_after(const std::function<void()>& call) const {
  EXPECT_EQ(jit::driver().cuCtxSetCurrent(nullptr), CUDA_SUCCESS);
  call();
  CUcontext after = context().handle();  // a failed query reads as the runtime's: not none
  EXPECT_EQ(jit::driver().cuCtxGetCurrent(&after), CUDA_SUCCESS);
  context().make_current();
  return after;
}

std::mt19937_64 fresh_generator() {
  std::random_device device;
  return std::mt19937_64((static_cast<std::uint64_t>(device()) << 32) ^ device());
}

}  // namespace sparsejit::testing
