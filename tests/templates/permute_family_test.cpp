// The permute_tokens descriptor on the host: argument validation, alignment, launch geometry,
// the enumerated space and the default config, and the registry. No GPU: pointers here are
// integer addresses, never dereferenced by the host code under test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>

#include "templates/embedded_sources.h"
#include "templates/kernel_family.h"
#include "templates/permute/permute_family.h"
#include "templates/registry.h"
#include "tests/templates/permute_case.h"

namespace sparsejit::templates {
namespace {

const void* address(std::uintptr_t value) { return reinterpret_cast<const void*>(value); }
void* mutable_address(std::uintptr_t value) { return reinterpret_cast<void*>(value); }

// A well-formed call: B2 H3 N777, BNHD source -> BHND destination of head dim `head_dim`,
// every pointer aligned to 256 bytes like cuMemAlloc's.
PermuteParams fake_params(int tensor_count = 3, int head_dim = 128) {
  const long long H = 3, N = 777, D = head_dim;
  PermuteParams params{};
  for (int t = 0; t < tensor_count; ++t)
    params.tensors[t] = {address(0x10000000 + 0x1000000 * t), mutable_address(0x20000000 + 0x1000000 * t),
                         N * H * D, D, H * D,
                         H * N * D, N * D, D};
  params.permutation = static_cast<const int*>(address(0x30000000));
  params.tensor_count = tensor_count;
  params.batch = 2;
  params.heads = 3;
  params.tokens = 777;
  return params;
}

PermuteConfig config_of(int head_dim, int vector_bytes = 16) {
  return {head_dim, vector_bytes, 256, 2, PermuteDirection::gather};
}

// Expects validate() to refuse with std::invalid_argument whose message starts with the
// family's name and contains `expected`.
void expect_refused(const PermuteConfig& config, const PermuteParams& params,
                    const std::string& expected) {
  try {
    PermuteFamily::validate(config, params);
    ADD_FAILURE() << "validate accepted the call; expected a refusal containing: " << expected;
  } catch (const std::invalid_argument& error) {
    const std::string what = error.what();
    EXPECT_EQ(what.rfind("permute_tokens: ", 0), 0u) << what;
    EXPECT_NE(what.find(expected), std::string::npos) << "message: " << what << "\nexpected: " << expected;
  }
}

// Every point of the space accepts a well-formed call with 1..3 tensors (so the refusals
// below are caused by the one thing each of them changes).
TEST(PermuteValidate, AcceptsWellFormedCalls) {
  for (const PermuteConfig& config : testing::all_permute_configs())
    for (int tensor_count = 1; tensor_count <= kMaxPermuteTensors; ++tensor_count)
      EXPECT_NO_THROW(PermuteFamily::validate(config, fake_params(tensor_count, config.head_dim)))
          << config.label() << " with " << tensor_count << " tensor(s)";
}

// Slots beyond tensor_count are not looked at: a Q-only call may leave K and V empty.
TEST(PermuteValidate, IgnoresUnusedTensorSlots) {
  PermuteParams params = fake_params(1);
  params.tensors[1] = {};
  params.tensors[2] = {address(0x2), nullptr, 1, 1, 1, 1, 1, 1};
  EXPECT_NO_THROW(PermuteFamily::validate(config_of(128), params));
  EXPECT_EQ(PermuteFamily::max_vector_bytes(params), 16);
}

TEST(PermuteValidate, RejectsUnsupportedHeadDims) {
  for (int head_dim : {80, 256, 0, -64, 32})
    expect_refused(config_of(head_dim), fake_params(), "head dim " + std::to_string(head_dim) +
                                                           " is not supported (64, 96 or 128)");
}

TEST(PermuteValidate, RejectsVectorWidthsOutsideTheSpace) {
  for (int vector_bytes : {2, 32, 12, 0})
    expect_refused(config_of(128, vector_bytes), fake_params(),
                   "vector width " + std::to_string(vector_bytes) + " is not 4, 8 or 16 bytes");
}

TEST(PermuteValidate, RejectsNullPointers) {
  PermuteParams params = fake_params();
  params.permutation = nullptr;
  expect_refused(config_of(128), params, "the permutation pointer is null");
  params = fake_params();
  params.tensors[1].source = nullptr;
  expect_refused(config_of(128), params, "tensor 1 has a null source or destination");
  params = fake_params();
  params.tensors[2].destination = nullptr;
  expect_refused(config_of(128), params, "tensor 2 has a null source or destination");
  params = fake_params(1);
  params.tensors[0].source = nullptr;
  params.tensors[0].destination = nullptr;
  expect_refused(config_of(64), params, "tensor 0 has a null source or destination");
}

TEST(PermuteValidate, RejectsTensorCountsOutside1To3) {
  for (int tensor_count : {0, 4, -1}) {
    PermuteParams params = fake_params();
    params.tensor_count = tensor_count;
    expect_refused(config_of(128), params,
                   "tensor_count must be 1..3, got " + std::to_string(tensor_count));
  }
}

TEST(PermuteValidate, RejectsEmptyShapes) {
  PermuteParams params = fake_params();
  params.tokens = 0;
  expect_refused(config_of(128), params, "batch, heads and tokens must be positive (got 2, 3, 0)");
  params = fake_params();
  params.batch = 0;
  expect_refused(config_of(128), params, "must be positive (got 0, 3, 777)");
  params = fake_params();
  params.heads = -1;
  expect_refused(config_of(128), params, "must be positive (got 2, -1, 777)");
}

// grid.y = heads and grid.z = batch * tensor_count are limited to 65535 by the hardware.
TEST(PermuteValidate, RejectsGridsBeyondTheHardwareLimits) {
  PermuteParams params = fake_params();
  params.heads = 65536;
  expect_refused(config_of(128), params, "at most 65535");
  params = fake_params(3);
  params.batch = 21846;  // 65538 blocks along z
  expect_refused(config_of(128), params, "at most 65535");
  params.batch = 21845;  // exactly 65535
  EXPECT_NO_THROW(PermuteFamily::validate(config_of(128), params));
}

// The kernel indexes vectors with 32-bit ints: tokens * vectors-per-row plus one CTA's worth
// must stay below 2^31. D128 with 4-byte vectors is 64 vectors per row; 256 threads x 4.
TEST(PermuteValidate, RejectsTokenCountsThatOverflowTheFlatIndex) {
  const PermuteConfig config{128, 4, 256, 4, PermuteDirection::scatter};
  PermuteParams params = fake_params();
  params.tokens = (1 << 25) - 16;  // 2^31 - 1024 vectors, + 1024 = 2^31: refused
  expect_refused(config, params, "too many tokens for one launch (" + std::to_string(params.tokens) + ")");
  params.tokens = (1 << 25) - 17;  // one row fewer fits
  EXPECT_NO_THROW(PermuteFamily::validate(config, params));
}

// A pointer aligned to less than the vector width is refused with the alignment it has.
TEST(PermuteValidate, RejectsPointersMisalignedForTheVectorWidth) {
  PermuteParams params = fake_params();
  params.tensors[1].source = address(0x10000008);
  expect_refused(config_of(128, 16), params, "aligned to 8 bytes, too little for 16-byte vectors");
  EXPECT_NO_THROW(PermuteFamily::validate(config_of(128, 8), params));

  params = fake_params();
  params.tensors[2].destination = mutable_address(0x20000004);
  expect_refused(config_of(96, 8), params, "aligned to 4 bytes, too little for 8-byte vectors");
  EXPECT_NO_THROW(PermuteFamily::validate(config_of(96, 4), params));

  params = fake_params();
  params.tensors[0].source = address(0x10000002);
  expect_refused(config_of(64, 4), params,
                 "aligned to 2 bytes, too little for 4-byte vectors (every pointer and stride*2 "
                 "must be a multiple of 4 bytes)");
}

// An odd stride (in elements) is only 2-byte aligned in bytes: no vector width fits. Each of
// the six strides is checked on its own.
TEST(PermuteValidate, RejectsOddStrides) {
  for (int field = 0; field < 6; ++field) {
    PermuteParams params = fake_params(2);
    PermuteTensor& tensor = params.tensors[1];
    long long* strides[] = {&tensor.source_batch_stride,      &tensor.source_head_stride,
                            &tensor.source_token_stride,      &tensor.destination_batch_stride,
                            &tensor.destination_head_stride, &tensor.destination_token_stride};
    *strides[field] += 1;
    SCOPED_TRACE("stride field " + std::to_string(field));
    EXPECT_EQ(PermuteFamily::max_vector_bytes(params), 2);
    expect_refused(config_of(128, 4), params, "aligned to 2 bytes");
  }
}

// The widest vector is the largest of 16/8/4 that divides every pointer and every stride in
// bytes of every used tensor; 2 when none does.
TEST(PermuteMaxVectorBytes, FollowsTheLeastAlignedPointerOrStride) {
  EXPECT_EQ(PermuteFamily::max_vector_bytes(fake_params()), 16);
  for (int t = 0; t < kMaxPermuteTensors; ++t)
    for (auto [offset, expected] : {std::pair{16, 16}, {8, 8}, {24, 8}, {4, 4}, {12, 4}, {2, 2}, {6, 2}}) {
      SCOPED_TRACE("tensor " + std::to_string(t) + " offset " + std::to_string(offset));
      PermuteParams params = fake_params();
      params.tensors[t].source = static_cast<const char*>(params.tensors[t].source) + offset;
      EXPECT_EQ(PermuteFamily::max_vector_bytes(params), expected) << "source";
      params = fake_params();
      params.tensors[t].destination = static_cast<char*>(params.tensors[t].destination) + offset;
      EXPECT_EQ(PermuteFamily::max_vector_bytes(params), expected) << "destination";
    }
  // Strides in elements of 2 bytes: +8 elements keeps 16, +4 gives 8, +2 gives 4, +1 gives 2.
  for (auto [extra, expected] : {std::pair{8, 16}, {4, 8}, {2, 4}, {1, 2}}) {
    PermuteParams params = fake_params();
    params.tensors[0].source_token_stride += extra;
    EXPECT_EQ(PermuteFamily::max_vector_bytes(params), expected) << "source token stride +" << extra;
    params = fake_params();
    params.tensors[2].destination_head_stride += extra;
    EXPECT_EQ(PermuteFamily::max_vector_bytes(params), expected) << "destination head stride +" << extra;
  }
}

// The built-in default takes the widest vector the call allows, 256 threads, unroll 2.
TEST(DefaultPermuteConfig, ChoosesTheVectorWidthByAlignment) {
  const PermuteConfig standard = default_permute_config(96, PermuteDirection::scatter);
  EXPECT_EQ(standard, (PermuteConfig{96, 16, 256, 2, PermuteDirection::scatter}));
  EXPECT_EQ(default_permute_config(64, PermuteDirection::gather, 8).vector_bytes, 8);
  EXPECT_EQ(default_permute_config(64, PermuteDirection::gather, 4).vector_bytes, 4);
  // With 2-byte alignment no width fits: the default is 4 and validate() explains why.
  PermuteParams params = fake_params();
  params.tensors[0].destination = mutable_address(0x20000002);
  const PermuteConfig narrow =
      default_permute_config(128, PermuteDirection::gather, PermuteFamily::max_vector_bytes(params));
  EXPECT_EQ(narrow.vector_bytes, 4);
  expect_refused(narrow, params, "aligned to 2 bytes");
  // An 8-byte-aligned call gets 8-byte vectors, and validate() accepts them.
  params = fake_params();
  params.tensors[1].source = address(0x10000008);
  const PermuteConfig fallback =
      default_permute_config(128, PermuteDirection::gather, PermuteFamily::max_vector_bytes(params));
  EXPECT_EQ(fallback.vector_bytes, 8);
  EXPECT_NO_THROW(PermuteFamily::validate(fallback, params));
}

TEST(PermuteConfig, NameExpressionAndLabel) {
  const PermuteConfig config{96, 8, 128, 4, PermuteDirection::scatter};
  EXPECT_EQ(config.name_expression(), "sparsejit::permute_tokens<96, 8, 128, 4, true>");
  EXPECT_EQ(config.label(), "permute_tokens<D=96 vec=8 threads=128 unroll=4 scatter>");
  EXPECT_EQ(default_permute_config(128, PermuteDirection::gather).name_expression(),
            "sparsejit::permute_tokens<128, 16, 256, 2, false>");
}

// The grid covers every vector of a row set exactly once per (head, batch*tensor): enough
// CTAs along x for tokens*vectors-per-row, and not one CTA too many.
TEST(PermuteGeometry, CoversEveryVectorWithoutASpareBlock) {
  for (const PermuteConfig& config : testing::all_permute_configs())
    for (int tokens : {1, 7, 777, 32760, 75600}) {
      PermuteParams params = fake_params(2, config.head_dim);
      params.tokens = tokens;
      const jit::LaunchConfig launch = PermuteFamily::geometry(config, params, nullptr);
      const long long vectors = static_cast<long long>(tokens) * config.head_dim * 2 / config.vector_bytes;
      const long long per_block = static_cast<long long>(config.threads) * config.unroll;
      SCOPED_TRACE(config.label() + " tokens " + std::to_string(tokens));
      EXPECT_GE(launch.grid.x * per_block, vectors);
      EXPECT_LT((launch.grid.x - 1) * per_block, vectors);
      EXPECT_EQ(launch.grid.y, 3u);
      EXPECT_EQ(launch.grid.z, 2u * 2u);
      EXPECT_EQ(launch.block.x, static_cast<unsigned>(config.threads));
      EXPECT_EQ(launch.block.y, 1u);
      EXPECT_EQ(launch.block.z, 1u);
      EXPECT_EQ(launch.dynamic_shared_bytes, 0u);
    }
}

// The space: 3 head dims x 3 vector widths x 2 thread counts x 3 unrolls x 2 directions.
// Each specialization's name expression encodes its config (parsed back here), its label and
// cache key are unique, and its request compiles the embedded permute sources for the target.
TEST(PermuteEnumerate, HasEveryConfigOnceWithDistinctKeysAndLabels) {
  const jit::Target target = jit::Target::parse("sm_90");
  const std::vector<jit::KernelSpec> space = PermuteFamily().enumerate(target);
  ASSERT_EQ(space.size(), 108u);
  const std::regex pattern(R"(sparsejit::permute_tokens<(\d+), (\d+), (\d+), (\d+), (true|false)>)");
  std::set<std::string> keys, labels, expressions, parsed_labels;
  for (const jit::KernelSpec& specialization : space) {
    SCOPED_TRACE(specialization.label);
    keys.insert(specialization.request.cache_key());
    labels.insert(specialization.label);
    expressions.insert(specialization.name_expression);
    std::smatch match;
    ASSERT_TRUE(std::regex_match(specialization.name_expression, match, pattern));
    const PermuteConfig config{std::stoi(match[1]), std::stoi(match[2]), std::stoi(match[3]),
                               std::stoi(match[4]),
                               match[5] == "true" ? PermuteDirection::scatter : PermuteDirection::gather};
    EXPECT_NE(std::find(kPermuteHeadDims.begin(), kPermuteHeadDims.end(), config.head_dim), kPermuteHeadDims.end());
    EXPECT_NE(std::find(kPermuteVectorBytes.begin(), kPermuteVectorBytes.end(), config.vector_bytes), kPermuteVectorBytes.end());
    EXPECT_NE(std::find(kPermuteThreads.begin(), kPermuteThreads.end(), config.threads), kPermuteThreads.end());
    EXPECT_NE(std::find(kPermuteUnroll.begin(), kPermuteUnroll.end(), config.unroll), kPermuteUnroll.end());
    EXPECT_EQ(config.label(), specialization.label);
    parsed_labels.insert(config.label());

    EXPECT_EQ(specialization.family, "permute_tokens");
    const jit::CompileRequest& request = specialization.request;
    EXPECT_EQ(request.target, target);
    EXPECT_EQ(request.name_expressions, std::vector<std::string>{specialization.name_expression});
    EXPECT_EQ(request.options, common_nvrtc_options());
    EXPECT_EQ(request.source, "#include \"permute/permute_tokens.cuh\"\n");
    ASSERT_EQ(request.headers.size(), 2u);
    EXPECT_EQ(request.headers[0].name, "permute/permute_tokens.cuh");
    EXPECT_EQ(request.headers[0].content, embedded_source("permute/permute_tokens.cuh"));
    EXPECT_EQ(request.headers[1].name, "permute/permute_params.h");
    EXPECT_EQ(request.headers[1].content, embedded_source("permute/permute_params.h"));
  }
  EXPECT_EQ(keys.size(), 108u);
  EXPECT_EQ(labels.size(), 108u);
  EXPECT_EQ(expressions.size(), 108u);
  EXPECT_EQ(parsed_labels.size(), 108u);  // 108 distinct configs, each inside the space

  // all_permute_configs() (which the GPU tests iterate) is the same space.
  std::set<std::string> listed;
  for (const PermuteConfig& config : testing::all_permute_configs()) listed.insert(config.label());
  EXPECT_EQ(listed, labels);
}

// The target is part of every key: sm_80, sm_90 and sm_90a never share a CUBIN.
TEST(PermuteEnumerate, KeysDifferAcrossTargets) {
  std::set<std::string> keys;
  for (const char* arch : {"sm_80", "sm_90", "sm_90a"})
    for (const jit::KernelSpec& specialization : PermuteFamily().enumerate(jit::Target::parse(arch))) {
      EXPECT_EQ(specialization.request.target.name(), arch);
      keys.insert(specialization.request.cache_key());
    }
  EXPECT_EQ(keys.size(), 3u * 108u);
}

// render() of a config is the enumerated specialization of that config.
TEST(PermuteEnumerate, RenderMatchesTheEnumeratedSpecialization) {
  const jit::Target target = jit::Target::parse("sm_90a");
  const PermuteConfig config{64, 4, 128, 1, PermuteDirection::scatter};
  const jit::KernelSpec rendered = PermuteFamily::render(config, target);
  int found = 0;
  for (const jit::KernelSpec& specialization : PermuteFamily().enumerate(target))
    if (specialization.label == config.label()) {
      ++found;
      EXPECT_EQ(specialization.request.cache_key(), rendered.request.cache_key());
      EXPECT_EQ(specialization.name_expression, rendered.name_expression);
    }
  EXPECT_EQ(found, 1);
}

TEST(Registry, FindsPermuteTokensAndListsTheFamiliesOnAMiss) {
  ASSERT_FALSE(registered_families().empty());
  const KernelFamily& family = find_family("permute_tokens");
  EXPECT_EQ(family.name(), "permute_tokens");
  EXPECT_FALSE(family.summary().empty());
  EXPECT_EQ(family.enumerate(jit::Target::parse("sm_80")).size(), 108u);
  bool listed = false;
  for (const KernelFamily* registered : registered_families()) listed |= registered == &family;
  EXPECT_TRUE(listed);
  try {
    find_family("permute");
    ADD_FAILURE() << "an unknown family must be refused";
  } catch (const std::invalid_argument& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("'permute'"), std::string::npos) << what;
    EXPECT_NE(what.find("registered: permute_tokens"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace sparsejit::templates
