// NVRTC compiles without a GPU: targets, errors with their log, and the cache key.
#include <gtest/gtest.h>

#include "jit/error.h"
#include "jit/nvrtc_compiler.h"
#include "jit/sha256.h"
#include "jit/target.h"

namespace sparsejit::jit {
namespace {

CompileRequest fill_kernel(const std::string& target) {
  CompileRequest request;
  request.program_name = "fill.cu";
  request.source = R"(#include "fill_value.h"
template <int Scale> __global__ void fill(int* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = Scale * i + kFillOffset;
})";
  request.headers = {{"fill_value.h", "constexpr int kFillOffset = 7;\n"}};
  request.name_expressions = {"fill<3>"};
  request.options = {"-std=c++17"};
  request.target = Target::parse(target);
  return request;
}

bool is_elf(const std::vector<std::uint8_t>& bytes) {
  return bytes.size() > 4 && bytes[0] == 0x7f && bytes[1] == 'E' && bytes[2] == 'L' && bytes[3] == 'F';
}

class CompileForTarget : public ::testing::TestWithParam<std::string> {};

TEST_P(CompileForTarget, ProducesACubinAndTheLoweredName) {
  const CompiledBinary binary = compile(fill_kernel(GetParam()));
  EXPECT_TRUE(is_elf(binary.cubin)) << "NVRTC should emit a CUBIN (ELF), not PTX";
  ASSERT_EQ(binary.lowered_names.count("fill<3>"), 1u);
  EXPECT_EQ(binary.lowered_names.at("fill<3>"), "_Z4fillILi3EEvPii");
  EXPECT_GT(binary.compile_ms, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Targets, CompileForTarget, ::testing::Values("sm_80", "sm_90", "sm_90a"));

TEST(Compile, HopperOnlyInstructionsNeedTheArchSpecificTarget) {
  CompileRequest request = fill_kernel("sm_90");
  request.source = R"(__global__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n"); })";
  request.name_expressions = {"fence"};
  EXPECT_THROW(compile(request), CompileError);
  request.target = Target::parse("sm_90a");
  EXPECT_FALSE(compile(request).cubin.empty());
}

TEST(Compile, ABrokenSourceRaisesItsLogAndOptions) {
  CompileRequest request = fill_kernel("sm_80");
  request.source += "\n__global__ void broken() { undeclared_identifier_xyz = 1; }\n";
  try {
    compile(request);
    FAIL() << "a broken source must not compile";
  } catch (const CompileError& error) {
    EXPECT_NE(error.log().find("undeclared_identifier_xyz"), std::string::npos) << error.log();
    const std::string what = error.what();
    EXPECT_NE(what.find("fill.cu"), std::string::npos) << what;
    EXPECT_NE(what.find("--gpu-architecture=sm_80"), std::string::npos) << what;
    EXPECT_NE(what.find("undeclared_identifier_xyz"), std::string::npos) << what;
  }
}

TEST(Compile, AMissingHeaderIsReportedByName) {
  CompileRequest request = fill_kernel("sm_80");
  request.headers.clear();
  try {
    compile(request);
    FAIL() << "the header is missing";
  } catch (const CompileError& error) {
    EXPECT_NE(error.log().find("fill_value.h"), std::string::npos) << error.log();
  }
}

TEST(Compile, CountsNvrtcInvocations) {
  const std::uint64_t before = nvrtc_compile_count();
  compile(fill_kernel("sm_80"));
  EXPECT_EQ(nvrtc_compile_count(), before + 1);
}

TEST(Target, ParsesAndRejects) {
  EXPECT_EQ(Target::parse("sm_90a").name(), "sm_90a");
  EXPECT_TRUE(Target::parse("sm_90a").arch_specific());
  EXPECT_EQ(Target::parse("sm_86").minor(), 6);
  EXPECT_EQ(Target::parse("sm_80").nvrtc_option(), "--gpu-architecture=sm_80");
  for (const char* bad : {"sm_", "sm_9x", "compute_90", "sm_80a", "sm_12", "90", "sm_999"}) {
    try {
      Target::parse(bad);
      ADD_FAILURE() << bad << " should be refused";
    } catch (const JitError& error) {
      EXPECT_NE(std::string(error.what()).find("sm_90"), std::string::npos)
          << "the error should list the supported targets: " << error.what();
    }
  }
}

TEST(Target, CompatibilityOfCubins) {
  EXPECT_TRUE(Target::parse("sm_80").runs_on(8, 6));
  EXPECT_FALSE(Target::parse("sm_86").runs_on(8, 0));
  EXPECT_FALSE(Target::parse("sm_80").runs_on(9, 0));
  EXPECT_TRUE(Target::parse("sm_90a").runs_on(9, 0));
  EXPECT_FALSE(Target::parse("sm_90a").runs_on(10, 0));
}

TEST(NvrtcVersion, CarriesTheBuild) {
  const NvrtcVersion& version = nvrtc_version();
  EXPECT_GE(version.major, 12);
  EXPECT_NE(version.build.find("cuda_"), std::string::npos) << version.build;
  EXPECT_NE(version.to_string().find(version.build), std::string::npos);
}

TEST(CacheKey, StableForTheSameRequest) {
  EXPECT_EQ(fill_kernel("sm_90").cache_key(), fill_kernel("sm_90").cache_key());
  EXPECT_EQ(fill_kernel("sm_90").cache_key().size(), 64u);
}

// fill_kernel("sm_90") with one input changed each: a header's byte, the source, an option,
// the name expression, a header's name.
std::vector<CompileRequest> each_input_changed() {
  std::vector<CompileRequest> changed(5, fill_kernel("sm_90"));
  changed[0].headers[0].content[changed[0].headers[0].content.size() - 3] = '8';  // one byte
  changed[1].source += " ";
  changed[2].options.push_back("-lineinfo");
  changed[3].name_expressions = {"fill<4>"};
  changed[4].headers[0].name = "fill_value2.h";
  return changed;
}

TEST(CacheKey, ChangesWithEveryInput) {
  const std::string base = fill_kernel("sm_90").cache_key();
  for (const CompileRequest& changed : each_input_changed()) EXPECT_NE(changed.cache_key(), base);
  EXPECT_NE(fill_kernel("sm_90a").cache_key(), base);
}

TEST(SourceKey, StableAndNotTheCacheKey) {
  const std::string key = fill_kernel("sm_90").source_key();
  EXPECT_EQ(key, fill_kernel("sm_90").source_key());
  EXPECT_EQ(key.size(), 64u);
  EXPECT_EQ(key.find_first_not_of("0123456789abcdef"), std::string::npos) << key;
  EXPECT_NE(key, fill_kernel("sm_90").cache_key()) << "own tag, no NVRTC version";
}

// Everything the cache key covers but the NVRTC version.
TEST(SourceKey, ChangesWithEveryInput) {
  const std::string base = fill_kernel("sm_90").source_key();
  std::vector<CompileRequest> changed = each_input_changed();
  changed.push_back(fill_kernel("sm_90"));
  changed.back().program_name = "fill2.cu";
  for (const CompileRequest& request : changed) EXPECT_NE(request.source_key(), base);
  EXPECT_NE(fill_kernel("sm_90a").source_key(), base);
  EXPECT_NE(fill_kernel("sm_80").source_key(), base);
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256, FieldsAreFramed) {
  EXPECT_NE(Sha256().add_field("ab").add_field("c").hex(), Sha256().add_field("a").add_field("bc").hex());
}

}  // namespace
}  // namespace sparsejit::jit
