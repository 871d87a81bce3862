// permute_tokens on the GPU, bit for bit against the CPU reference (itself checked against
// the textbook formula in permute_reference_test.cpp). Every destination starts poisoned
// with 0xFF, in the kernel's buffer and in the reference's, so an unwritten element, a
// written padding element or a write past the buffer fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "db/database.h"
#include "jit/device.h"
#include "jit/device_memory.h"
#include "jit/kernel_provider.h"
#include "runtime/database_cubin_store.h"
#include "runtime/runtime.h"
#include "templates/permute/permute_family.h"
#include "tests/support/gpu_test.h"
#include "tests/support/test_support.h"
#include "tests/templates/permute_case.h"

namespace sparsejit::templates {
namespace {

using testing::DevicePermuteCase;
using testing::HostPermuteCase;
using testing::PermuteShape;
using testing::StoragePair;

// One Runtime (over a temporary database) per test suite, made on first use: after
// GpuTest::SetUp, so that a machine without a GPU skips before anything touches the driver.
class PermuteGpuTest : public testing::GpuTest {
 protected:
  static void TearDownTestSuite() {
    runtime_.reset();
    directory_.reset();
  }
  static runtime::Runtime& shared_runtime() {
    if (!runtime_) {
      directory_ = std::make_unique<testing::TempDirectory>();
      runtime_ = std::make_unique<runtime::Runtime>(
          runtime::RuntimeOptions{.device = 0, .database_path = *directory_ / "t.db"});
    }
    return *runtime_;
  }

 private:
  static inline std::unique_ptr<testing::TempDirectory> directory_;
  static inline std::unique_ptr<runtime::Runtime> runtime_;
};

// Runs `c` through Runtime::permute_tokens with every pointer `offset_bytes` into its
// allocation and checks the result against the reference.
void run_and_check(runtime::Runtime& rt, const HostPermuteCase& c, std::size_t offset_bytes = 0) {
  SCOPED_TRACE(c.name());
  const DevicePermuteCase device(c, offset_bytes);
  jit::Stream stream;
  rt.permute_tokens(device.params(), c.shape.head_dim, c.direction, stream.handle());
  stream.synchronize();
  testing::expect_matches_reference(c, device);
}

// The problems the models run: head dims 64/96/128, both directions, the three storage
// pairs, 1000 and 32,760 (Wan 480p) tokens. Batch 1-2, heads 2-3 and 1-3 tensors vary
// from case to case so that the batch/tensor split of grid.z is exercised.
class PermuteGpuShapes
    : public PermuteGpuTest,
      public ::testing::WithParamInterface<std::tuple<int, PermuteDirection, int, int>> {};

TEST_P(PermuteGpuShapes, MatchesTheReferenceBitForBit) {
  const auto [head_dim, direction, pair_index, tokens] = GetParam();
  const int salt = head_dim / 32 + static_cast<int>(direction) + pair_index;
  const PermuteShape shape{1 + salt % 2, 2 + (salt / 2) % 2, tokens, head_dim, 1 + salt % 3};
  std::mt19937_64 generator = testing::fresh_generator();
  run_and_check(shared_runtime(),
                testing::make_case(shape, direction, testing::kStoragePairs[pair_index], generator));
}

INSTANTIATE_TEST_SUITE_P(
    ModelShapes, PermuteGpuShapes,
    ::testing::Combine(::testing::Values(64, 96, 128),
                       ::testing::Values(PermuteDirection::gather, PermuteDirection::scatter),
                       ::testing::Values(0, 1, 2), ::testing::Values(1000, 32760)),
    [](const auto& info) {
      return "D" + std::to_string(std::get<0>(info.param)) + "_" +
             testing::direction_name(std::get<1>(info.param)) + "_" +
             testing::pair_name(testing::kStoragePairs[std::get<2>(info.param)]) + "_N" +
             std::to_string(std::get<3>(info.param));
    });

// Wan 720p: 75,600 tokens, Q, K and V gathered into the new order and BHND in one launch,
// then O-like scattered back into BNHD.
TEST_F(PermuteGpuTest, Wan720pTokenCount) {
  std::mt19937_64 generator = testing::fresh_generator();
  const PermuteShape shape{1, 2, 75600, 128, 3};
  run_and_check(shared_runtime(), testing::make_case(shape, PermuteDirection::gather,
                                                     {testing::Layout::bnhd, testing::Layout::bhnd}, generator));
  run_and_check(shared_runtime(), testing::make_case({2, 3, 75600, 64, 1}, PermuteDirection::scatter,
                                                     {testing::Layout::bhnd, testing::Layout::bnhd}, generator));
}

// All 108 specializations for this device's target (not only the defaults the Runtime
// picks) on a ragged shape: B2 H3 N777 (777 rows are not a multiple of any CTA's share).
// Storage pairs and tensor counts rotate over the space. Compiled in parallel into a
// temporary database, then loaded from it.
TEST_F(PermuteGpuTest, EverySpecializationOfTheSpace) {
  const jit::DeviceInfo device = jit::query_device(0);
  const jit::Target target = jit::Target::for_compute_capability(device.cc_major, device.cc_minor);
  const std::vector<PermuteConfig> configs = testing::all_permute_configs();
  ASSERT_EQ(configs.size(), 108u);
  std::vector<jit::KernelSpec> specializations;
  for (const PermuteConfig& config : configs) specializations.push_back(PermuteFamily::render(config, target));

  testing::TempDirectory directory;
  db::Database database = db::Database::open(directory / "space.db");
  runtime::DatabaseCubinStore store(database);
  jit::KernelProvider provider(&store);
  std::vector<std::string> errors(specializations.size());
  std::atomic<std::size_t> next{0};
  {
    std::vector<std::jthread> workers;
    for (int w = 0; w < 8; ++w)
      workers.emplace_back([&] {
        for (std::size_t i = next++; i < specializations.size(); i = next++) try {
            provider.binary(specializations[i]);
          } catch (const std::exception& error) {
            errors[i] = error.what();
          }
      });
  }
  for (std::size_t i = 0; i < specializations.size(); ++i)
    ASSERT_EQ(errors[i], "") << specializations[i].label;
  EXPECT_EQ(provider.compiled(), 108u);

  std::mt19937_64 generator = testing::fresh_generator();
  jit::Stream stream;
  for (std::size_t i = 0; i < configs.size(); ++i) {
    const PermuteConfig& config = configs[i];
    SCOPED_TRACE(config.label());
    const PermuteShape shape{2, 3, 777, config.head_dim, 1 + static_cast<int>(i / 3 % 3)};
    const HostPermuteCase c =
        testing::make_case(shape, config.direction, testing::kStoragePairs[i % 3], generator);
    const DevicePermuteCase buffers(c);
    const jit::Kernel kernel = provider.kernel(context(), specializations[i]);
    PermuteFamily::launch(kernel, config, buffers.params(), stream.handle());
    stream.synchronize();
    testing::expect_matches_reference(c, buffers);
    if (HasFailure()) break;  // one broken specialization is enough to read
  }
  EXPECT_EQ(provider.compiled(), 108u) << "kernel() must load what binary() stored";
}

// Token strides wider than a row (8 elements of padding after every token row) are
// honoured: rows land where the strides say and the padding of the destination keeps its
// poison (the source's padding holds random values that must not be copied).
TEST_F(PermuteGpuTest, PaddedStridesAreHonouredAndPaddingUntouched) {
  std::mt19937_64 generator = testing::fresh_generator();
  for (auto [direction, pair] : {std::pair{PermuteDirection::gather, StoragePair{testing::Layout::bnhd, testing::Layout::bhnd}},
                                 std::pair{PermuteDirection::scatter, StoragePair{testing::Layout::bhnd, testing::Layout::bnhd}}}) {
    const HostPermuteCase c = testing::make_case({2, 3, 1000, 96, 2}, direction, pair, generator, /*padding=*/8);
    SCOPED_TRACE(c.name());
    const DevicePermuteCase device(c);
    ASSERT_EQ(PermuteFamily::max_vector_bytes(device.params()), 16) << "8 elements of padding keep 16-byte rows";
    jit::Stream stream;
    shared_runtime().permute_tokens(device.params(), c.shape.head_dim, c.direction, stream.handle());
    stream.synchronize();
    testing::expect_matches_reference(c, device);
    const std::vector<bool> logical = testing::logical_elements(c.destination, c.shape);
    for (int t = 0; t < c.shape.tensor_count; ++t) {
      const std::vector<std::uint16_t> values = device.destination(t);
      std::size_t padding = 0, written = 0;
      for (std::size_t i = 0; i < values.size(); ++i)
        if (!logical[i]) {
          ++padding;
          written += values[i] != testing::kPoison;
        }
      EXPECT_EQ(padding, values.size() - 2u * 3u * 1000u * 96u);
      EXPECT_GT(padding, 0u);
      EXPECT_EQ(written, 0u) << "tensor " << t << ": padding elements were written";
    }
  }
}

// Pointers 8 or 4 bytes past a 256-byte boundary: Runtime::permute_tokens falls back to 8-
// or 4-byte vectors (the database gains exactly that specialization) and is still exact.
TEST_F(PermuteGpuTest, MisalignedPointersFallBackToNarrowerVectors) {
  testing::TempDirectory directory;
  runtime::Runtime rt({.device = 0, .database_path = directory / "t.db"});
  std::mt19937_64 generator = testing::fresh_generator();
  for (auto [offset, vector_bytes] : {std::pair{8, 8}, std::pair{4, 4}}) {
    SCOPED_TRACE("offset " + std::to_string(offset) + " bytes");
    const HostPermuteCase c = testing::make_case({2, 3, 1000, 128, 3}, PermuteDirection::gather,
                                                 testing::kStoragePairs[0], generator);
    const jit::KernelSpec expected =
        PermuteFamily::render(default_permute_config(128, PermuteDirection::gather, vector_bytes), rt.target());
    EXPECT_FALSE(rt.kernels().stored(expected));
    const DevicePermuteCase device(c, static_cast<std::size_t>(offset));
    EXPECT_EQ(PermuteFamily::max_vector_bytes(device.params()), vector_bytes);
    jit::Stream stream;
    rt.permute_tokens(device.params(), 128, PermuteDirection::gather, stream.handle());
    stream.synchronize();
    testing::expect_matches_reference(c, device);
    EXPECT_TRUE(rt.kernels().stored(expected)) << "the call must have used " << expected.label;
  }
}

// Pointers 2 bytes past a boundary fit no vector width: the call is refused with
// std::invalid_argument before anything is launched (the destination keeps its poison).
TEST_F(PermuteGpuTest, TwoByteAlignedCallIsRefused) {
  std::mt19937_64 generator = testing::fresh_generator();
  const HostPermuteCase c = testing::make_case({1, 2, 1000, 64, 2}, PermuteDirection::scatter,
                                               testing::kStoragePairs[1], generator);
  const DevicePermuteCase device(c, 2);
  jit::Stream stream;
  try {
    shared_runtime().permute_tokens(device.params(), 64, PermuteDirection::scatter, stream.handle());
    ADD_FAILURE() << "a 2-byte-aligned call must be refused";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("aligned to 2 bytes"), std::string::npos) << error.what();
  }
  stream.synchronize();
  for (int t = 0; t < c.shape.tensor_count; ++t) {
    const std::vector<std::uint16_t> values = device.destination(t);
    EXPECT_EQ(std::count(values.begin(), values.end(), testing::kPoison),
              static_cast<std::ptrdiff_t>(values.size()))
        << "tensor " << t;
  }
}

}  // namespace
}  // namespace sparsejit::templates
