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
  if (!jit::driver_available(&why)) {
    const char* required = std::getenv("SPARSEJIT_REQUIRE_GPU");
    if (required != nullptr && std::strcmp(required, "1") == 0)
      FAIL() << "SPARSEJIT_REQUIRE_GPU=1 but " << why;
    GTEST_SKIP() << "GPU test skipped: " << why;
  }
  shared_context()->make_current();
}

std::mt19937_64 fresh_generator() {
  std::random_device device;
  return std::mt19937_64((static_cast<std::uint64_t>(device()) << 32) ^ device());
}

std::vector<std::uint16_t> random_bf16(std::size_t count, std::mt19937_64& generator) {
  std::uniform_real_distribution<float> value(-2.0f, 2.0f);
  std::vector<std::uint16_t> out(count);
  for (std::uint16_t& element : out) {
    float x = value(generator);
    if (x == 0.0f) x = 0.5f;
    std::uint32_t bits = 0;
    std::memcpy(&bits, &x, sizeof bits);
    element = static_cast<std::uint16_t>(bits >> 16);  // truncation is a valid bf16
    if ((element & 0x7fff) == 0) element |= 0x3f00;    // keep it non-zero after truncation
  }
  return out;
}

}  // namespace sparsejit::testing
