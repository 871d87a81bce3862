#pragma once
// What the GPU test suites share: a fixture that skips visibly without a GPU, fresh seeds.
// Random 16-bit data comes from templates/common/half_precision.h (random_half).
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "jit/device.h"

namespace sparsejit::testing {

// Base of every test that needs a GPU. Without one it skips with the reason, visibly; with
// SPARSEJIT_REQUIRE_GPU=1 (set on the GPU machine) a missing GPU fails instead of skipping,
// so a GPU run can never pass by skipping.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override;
  const jit::DeviceContext& context() const { return *shared_context(); }
  // The context current on this thread after `call` ran with none current (as on a thread that
  // never touched CUDA); the fixture's context is current again afterwards. A call that keeps
  // the caller's context as it found it leaves none (nullptr).
  CUcontext context_current_after(const std::function<void()>& call) const;
  // One primary context for the whole test program, made current in SetUp.
  static std::shared_ptr<jit::DeviceContext> shared_context();
};

// True under SPARSEJIT_REQUIRE_GPU=1 (set on the GPU machine).
bool gpu_required();

// Ends the current test where there is no GPU (`why`: the driver's reason): skipped visibly
// with `reason`, or failed under SPARSEJIT_REQUIRE_GPU=1, so a GPU run can never pass by
// skipping. GpuTest's SetUp uses it; so do tests that need a GPU without that fixture.
#define SPARSEJIT_SKIP_WITHOUT_GPU(reason, why)                          \
  do {                                                                   \
    if (::sparsejit::testing::gpu_required())                            \
      FAIL() << "SPARSEJIT_REQUIRE_GPU=1 but " << (why);                 \
    GTEST_SKIP() << (reason) << ": " << (why);                           \
  } while (false)

// A generator with a fresh seed on every run: tests must hold for any valid input.
std::mt19937_64 fresh_generator();

}  // namespace sparsejit::testing
