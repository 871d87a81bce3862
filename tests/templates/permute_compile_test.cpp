// NVRTC compiles permute_tokens specializations to CUBINs without a GPU, for each target
// the library ships: sm_80 (Ampere), sm_90 and sm_90a (Hopper).
//
// Subset compiled here, per target (9 compiles, well under a second each):
//   - every head dim x direction with the default config (16-byte vectors, 256 threads,
//     unroll 2): the six kernels a plain Runtime call uses;
//   - three more configs chosen so that every vector width (16, 8, 4), thread count (128,
//     256) and unroll depth (1, 2, 4) appears at least once, on varying head dims.
// Why a subset: each template parameter changes code generation on its own axis, so one
// instance per value catches a value that cannot compile, at 1/12 of the cost of the full
// product. The full space of one target (108 x sm_90) is compiled by the CLI test of
// `sparsejit precompile`, and the GPU suite compiles and runs all 108 for its device.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "jit/nvrtc_compiler.h"
#include "jit/target.h"
#include "templates/permute/permute_family.h"

namespace sparsejit::templates {
namespace {

std::vector<PermuteConfig> compiled_subset() {
  std::vector<PermuteConfig> configs;
  for (int head_dim : kPermuteHeadDims)
    for (PermuteDirection direction : {PermuteDirection::gather, PermuteDirection::scatter})
      configs.push_back(default_permute_config(head_dim, direction));
  configs.push_back({64, 16, 128, 1, PermuteDirection::scatter});
  configs.push_back({96, 8, 256, 4, PermuteDirection::gather});
  configs.push_back({128, 4, 128, 2, PermuteDirection::scatter});
  return configs;
}

class PermuteCompile : public ::testing::TestWithParam<std::string> {};

// Each specialization of the subset compiles to an ELF CUBIN with its kernel's lowered name.
TEST_P(PermuteCompile, StratifiedSubsetCompilesToCubins) {
  const jit::Target target = jit::Target::parse(GetParam());
  for (const PermuteConfig& config : compiled_subset()) {
    const jit::KernelSpec specialization = PermuteFamily::render(config, target);
    SCOPED_TRACE(specialization.label);
    jit::CompiledBinary binary;
    ASSERT_NO_THROW(binary = jit::compile(specialization.request));
    ASSERT_GT(binary.cubin.size(), 4u);
    EXPECT_EQ(std::string(binary.cubin.begin(), binary.cubin.begin() + 4), "\x7f" "ELF")
        << "NVRTC must emit a CUBIN, not PTX";
    ASSERT_EQ(binary.lowered_names.count(specialization.name_expression), 1u);
    const std::string& lowered = binary.lowered_names.at(specialization.name_expression);
    EXPECT_NE(lowered.find("permute_tokens"), std::string::npos) << lowered;
  }
}

// The subset really covers every value of every axis (so the comment above stays true).
TEST(PermuteCompileSubset, CoversEveryValueOfEveryAxis) {
  const std::vector<PermuteConfig> configs = compiled_subset();
  const auto covered = [&](auto field, int value) {
    for (const PermuteConfig& config : configs)
      if (config.*field == value) return true;
    return false;
  };
  for (int value : kPermuteHeadDims) EXPECT_TRUE(covered(&PermuteConfig::head_dim, value)) << value;
  for (int value : kPermuteVectorBytes) EXPECT_TRUE(covered(&PermuteConfig::vector_bytes, value)) << value;
  for (int value : kPermuteThreads) EXPECT_TRUE(covered(&PermuteConfig::threads, value)) << value;
  for (int value : kPermuteUnroll) EXPECT_TRUE(covered(&PermuteConfig::unroll, value)) << value;
}

INSTANTIATE_TEST_SUITE_P(Targets, PermuteCompile, ::testing::Values("sm_80", "sm_90", "sm_90a"));

}  // namespace
}  // namespace sparsejit::templates
