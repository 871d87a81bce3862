// The sparse_attention descriptor without a GPU: the space, its constraints, the defaults, the
// host-side validation, and NVRTC compiles of a stratified subset for sm_80 and sm_90.
#include <gtest/gtest.h>

#include <limits>
#include <set>

#include "jit/nvrtc_compiler.h"
#include "templates/sparse_attention/attention_family.h"
#include "templates/sparse_attention/attention_tuning.h"
#include "templates/sparse_attention/block_mask.h"

namespace sparsejit::templates {
namespace {

constexpr int kHopperShared = 227 * 1024;

TEST(AttentionSpace, EveryPointIsValidAndDistinct) {
  const jit::Target sm90 = jit::Target::parse("sm_90");
  const std::vector<jit::KernelSpec> space = SparseAttentionFamily().enumerate(sm90);
  ASSERT_GT(space.size(), 100u);
  std::set<std::string> keys, expressions;
  for (const jit::KernelSpec& spec : space) {
    EXPECT_EQ(spec.family, "sparse_attention");
    keys.insert(spec.request.cache_key());
    expressions.insert(spec.name_expression);
  }
  EXPECT_EQ(keys.size(), space.size());
  EXPECT_EQ(expressions.size(), space.size());
  // sm_86 has less shared memory: its space is a strict subset.
  EXPECT_LT(SparseAttentionFamily().enumerate(jit::Target::parse("sm_86")).size(), space.size());
}

// The wgmma kernel is offered on compute capability 9.0 only, and always compiled for sm_90a.
TEST(AttentionSpace, WgmmaKernelOnlyOnHopperForSm90a) {
  const auto wgmma_specs = [](const char* arch) {
    std::vector<jit::KernelSpec> specs;
    for (jit::KernelSpec& spec : SparseAttentionFamily().enumerate(jit::Target::parse(arch)))
      if (spec.name_expression.find("_wgmma<") != std::string::npos) specs.push_back(std::move(spec));
    return specs;
  };
  const std::vector<jit::KernelSpec> hopper = wgmma_specs("sm_90");
  ASSERT_GT(hopper.size(), 100u);
  for (const jit::KernelSpec& spec : hopper) ASSERT_EQ(spec.request.target.name(), "sm_90a") << spec.label;
  EXPECT_TRUE(wgmma_specs("sm_80").empty());
  EXPECT_TRUE(wgmma_specs("sm_89").empty());
}

// On compute capability 9.0 the default is the wgmma kernel's widest tile, 3 stages where
// they fit; elsewhere (and for D = 96, which wgmma does not take) the mma.sync default.
TEST(AttentionSpace, TargetDefaultsPreferWgmmaOnHopper) {
  const jit::Target sm90 = jit::Target::parse("sm_90"), sm80 = jit::Target::parse("sm_80");
  const AttentionConfig wide = default_attention_config(HalfDtype::bf16, 128, 128, 128, 0, sm90);
  EXPECT_TRUE(wide.wgmma);
  EXPECT_EQ(wide.block_m, 128);
  EXPECT_EQ(wide.block_n, 128);
  EXPECT_EQ(wide.stages, 2);  // 3 stages leave room for one Q buffer only
  EXPECT_EQ(wide.q_buffers(), 2);
  EXPECT_TRUE(wide.persistent);
  const AttentionConfig wide_d64 = default_attention_config(HalfDtype::bf16, 64, 128, 128, 0, sm90);
  EXPECT_EQ(wide_d64.stages, 3);
  EXPECT_EQ(wide_d64.q_buffers(), 2);
  AttentionConfig three_stages = wide;
  three_stages.stages = 3;
  EXPECT_EQ(three_stages.q_buffers(), 1);
  EXPECT_LE(three_stages.shared_bytes(), kHopperShared);
  // O is staged for TMA stores beside two Q buffers and 2 stages (225 KB at D = 128), not
  // beside 3 stages' K and V tiles.
  EXPECT_TRUE(wide.o_staged());
  EXPECT_EQ(wide.shared_bytes(), 1024 + (3 * 128 + 2 * 2 * 128) * 128 * 2 + (3 * 2 + 4 * 2) * 8);
  EXPECT_LE(wide.shared_bytes(), kHopperShared);
  EXPECT_TRUE(wide_d64.o_staged());
  EXPECT_FALSE(three_stages.o_staged());
  const AttentionConfig narrow = default_attention_config(HalfDtype::fp16, 64, 64, 64, 0, sm90);
  EXPECT_TRUE(narrow.wgmma);
  EXPECT_EQ(narrow.block_m, 64);
  EXPECT_EQ(narrow.warps, 8);
  EXPECT_EQ(narrow.stages, 2);  // 64-row tiles: two CTAs an SM
  EXPECT_TRUE(narrow.persistent);
  EXPECT_EQ(attention_config_problem(narrow, kHopperShared), "");
  EXPECT_TRUE(narrow.o_staged());
  EXPECT_FALSE(default_attention_config(HalfDtype::bf16, 128, 128, 128, 0, sm80).o_staged()) << "mma.sync";
  // D = 64 with fine bits, as the full grid chose: 64-row wgmma tiles for blocks of 128, the
  // mma.sync tile (16-row warps skip sub-tiles) for blocks of 64.
  const AttentionConfig fine_wide_blocks = default_attention_config(HalfDtype::bf16, 64, 128, 128, 16, sm90);
  EXPECT_TRUE(fine_wide_blocks.wgmma);
  EXPECT_EQ(fine_wide_blocks.block_m, 64);
  EXPECT_EQ(fine_wide_blocks.block_n, 128);
  EXPECT_EQ(fine_wide_blocks.stages, 2);
  const AttentionConfig fine_narrow_blocks = default_attention_config(HalfDtype::fp16, 64, 64, 64, 16, sm90);
  EXPECT_FALSE(fine_narrow_blocks.wgmma);
  EXPECT_EQ(fine_narrow_blocks.block_m, 64);
  EXPECT_EQ(fine_narrow_blocks.block_n, 64);
  EXPECT_EQ(fine_narrow_blocks.warps, 4);
  EXPECT_TRUE(default_attention_config(HalfDtype::bf16, 128, 64, 64, 16, sm90).wgmma);  // D = 128 keeps wgmma
  EXPECT_FALSE(default_attention_config(HalfDtype::bf16, 96, 128, 128, 0, sm90).wgmma);
  EXPECT_EQ(default_attention_config(HalfDtype::bf16, 128, 128, 128, 0, sm80),
            default_attention_config(HalfDtype::bf16, 128, 128, 128, 0, max_shared_bytes_for(sm80)));
}

TEST(AttentionSpace, WgmmaConstraintsSayWhatIsWrong) {
  AttentionConfig c{HalfDtype::bf16, 128, 128, 128, 128, 128, wgmma_warps(128), 0, false, true, 2};
  EXPECT_EQ(attention_config_problem(c, kHopperShared), "");
  const auto problem = [](AttentionConfig config) { return attention_config_problem(config, kHopperShared); };
  AttentionConfig bad = c;
  bad.head_dim = 96;
  EXPECT_NE(problem(bad).find("head dims 64 and 128"), std::string::npos) << problem(bad);
  bad = c;
  bad.block_n = 32;
  EXPECT_NE(problem(bad).find("tile keys 32"), std::string::npos) << problem(bad);
  bad = c;
  bad.warps = 8;
  EXPECT_NE(problem(bad).find("runs 12 warps"), std::string::npos) << problem(bad);
  bad = c;
  bad.stages = 4;
  EXPECT_NE(problem(bad).find("stages must be 2 or 3"), std::string::npos) << problem(bad);
  // Three stages of 128-key tiles at D = 128 fill the H100's 227 KB: more than sm_80's 163 KB.
  bad = c;
  bad.stages = 3;
  EXPECT_EQ(problem(bad), "");
  EXPECT_NE(attention_config_problem(bad, 163 * 1024).find("shared memory"), std::string::npos);
  // The tile round-trips through the database's JSON.
  const AttentionKernelKind kind{HalfDtype::bf16, 128, 128, 128, 0};
  EXPECT_EQ(kind.with_tile(bad.tuning_json()), bad);
  bad.persistent = false;
  EXPECT_EQ(kind.with_tile(bad.tuning_json()), bad);
  EXPECT_NE(bad.tuning_json().find("\"persistent\":false"), std::string::npos);
  EXPECT_EQ(kind.with_tile(R"({"block_m":128,"block_n":64,"warps":8})").wgmma, false);
  EXPECT_THROW(kind.with_tile(R"({"block_m":128,"block_n":128,"warps":12,"wgmma":true})"), std::invalid_argument);
}

TEST(AttentionSpace, DefaultsAreValidForEveryProblem) {
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kAttentionHeadDims)
      for (int block_q : kAttentionBlockSizes)
        for (int block_kv : kAttentionBlockSizes)
          for (int fine_n : kAttentionFineN) {
            if (fine_n != 0 && !fine_granularity_valid(block_q, block_kv, fine_n)) continue;
            for (int shared : {99 * 1024, kHopperShared}) {
              const AttentionConfig config =
                  default_attention_config(dtype, head_dim, block_q, block_kv, fine_n, shared);
              EXPECT_EQ(attention_config_problem(config, shared), "") << config.label();
            }
          }
}

TEST(AttentionSpace, InvalidPointsSayWhy) {
  const AttentionConfig good = default_attention_config(HalfDtype::bf16, 128, 128, 128, 0, kHopperShared);
  const auto problem = [](AttentionConfig c) { return attention_config_problem(c, kHopperShared); };
  AttentionConfig c = good;
  c.head_dim = 80;
  EXPECT_NE(problem(c).find("head dim 80"), std::string::npos);
  c = good;
  c.block_m = 128;
  c.block_q = 64;
  EXPECT_NE(problem(c).find("divide block_q"), std::string::npos);
  c = good;
  c.warps = 4;
  c.block_m = 64;
  c.block_n = 128;
  c.head_dim = 96;  // 16 rows per warp: 64 score + 48 output + 24 Q registers fit
  EXPECT_EQ(problem(c), "");
  c.head_dim = 128;  // 64 + 64 + 32: spills
  EXPECT_NE(problem(c).find("registers per thread live"), std::string::npos);
  c.block_n = 32;
  c.block_m = 128;  // 32 rows per warp, 2 x (16 + 64): fits
  EXPECT_EQ(problem(c), "");
  c.block_n = 64;  // 2 x (32 + 64): spills
  EXPECT_NE(problem(c).find("registers per thread live"), std::string::npos);
  c = good;
  c.fine_n = 8;  // 8 x 16 sub-tiles of 128 x 128 do not fit 64 bits
  EXPECT_NE(problem(c).find("64-bit"), std::string::npos);
  c = good;
  c.head_dim = 96;
  c.block_n = 128;
  c.block_m = 128;
  c.warps = 8;
  EXPECT_NE(attention_config_problem(c, 64 * 1024).find("shared memory"), std::string::npos);
}

TEST(AttentionValidate, RefusesBadParamsWithTheReason) {
  const AttentionConfig config = default_attention_config(HalfDtype::bf16, 128, 128, 128, 0, kHopperShared);
  alignas(16) static char memory[64];
  SparseAttentionParams p{};
  p.q = p.k = p.v = memory;
  p.o = memory;
  p.q_token_stride = p.k_token_stride = p.v_token_stride = p.o_token_stride = 128;
  static int count[1], index[1];
  p.kv_block_count = count;
  p.kv_block_index = index;
  p.max_kv_blocks = 1;
  p.batch = p.heads = 1;
  p.tokens_q = p.tokens_kv = 100;
  p.softmax_scale = 0.125f;
  EXPECT_NO_THROW(SparseAttentionFamily::validate(config, p, kHopperShared));
  const auto expect_refused_by = [&](const AttentionConfig& by, SparseAttentionParams bad,
                                     const std::string& words) {
    try {
      SparseAttentionFamily::validate(by, bad, kHopperShared);
      ADD_FAILURE() << "expected a refusal mentioning '" << words << "'";
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find(words), std::string::npos) << error.what();
    }
  };
  const auto expect_refused = [&](SparseAttentionParams bad, const std::string& words) {
    expect_refused_by(config, bad, words);
  };
  SparseAttentionParams bad = p;
  bad.v = nullptr;
  expect_refused(bad, "v is null");
  bad = p;
  bad.k = memory + 2;
  expect_refused(bad, "k: the pointer and the token stride");
  bad = p;
  bad.o_token_stride = 129;
  expect_refused(bad, "o: the pointer and the token stride");
  bad = p;
  bad.tokens_kv = 0;
  expect_refused(bad, "must be positive");
  {
    static unsigned long long words[1];
    AttentionConfig reads_bits = config;
    reads_bits.bitmask = true;
    bad = p;
    bad.kv_block_bits = words;
    bad.kv_block_words = 1;
    expect_refused(bad, "reads the mask as block-CSR but the parameters give a bitmask");
    expect_refused_by(reads_bits, bad, "in both forms");
    bad.kv_block_count = nullptr;
    bad.kv_block_index = nullptr;
    EXPECT_NO_THROW(SparseAttentionFamily::validate(reads_bits, bad, kHopperShared));
    bad.kv_block_words = 2;  // 100 keys are one block of 128: one word a row
    expect_refused_by(reads_bits, bad, "kv_block_words 2 must be ceil(1 key blocks / 64) = 1");
    bad.kv_block_bits = nullptr;
    expect_refused_by(reads_bits, bad, "reads the mask as a bitmask but the parameters give none");
    expect_refused(bad, "the block mask is null");  // no form at all
  }
  {  // rows that keep the pointer's alignment: Q, K, V 16 bytes (loaded in 16-byte pieces), O 4
    bad = p;
    bad.heads = 2;
    bad.q_head_stride = 4;  // 8 bytes: head 1's rows would be misaligned
    expect_refused(bad, "q: the head stride (4 elements) must be a multiple of 16 bytes");
    bad.q_head_stride = 8;
    EXPECT_NO_THROW(SparseAttentionFamily::validate(config, bad, kHopperShared));
    bad.batch = 2;
    bad.v_batch_stride = 100 * 1000 * 2 + 4;
    expect_refused(bad, "v: the batch stride (200004 elements) must be a multiple of 16 bytes");
    bad = p;
    bad.heads = 2;
    bad.o_head_stride = 129;  // 258 bytes: 4-byte stores of head 1 misaligned
    expect_refused(bad, "o: the head stride (129 elements) must be a multiple of 4 bytes");
    bad.o_head_stride = 130;  // [B, N, H, D + 2]: 4-byte aligned rows, taken
    EXPECT_NO_THROW(SparseAttentionFamily::validate(config, bad, kHopperShared));
    bad = p;
    bad.k_head_stride = 4;  // a stride over one head is never applied
    EXPECT_NO_THROW(SparseAttentionFamily::validate(config, bad, kHopperShared)) << "one head";
  }
  {  // the wgmma kernel's tensor maps: head and batch strides of whole 16 bytes (not O's)
    const AttentionConfig wgmma{HalfDtype::bf16, 128, 128, 128, 128, 128, wgmma_warps(128), 0, false, true, 2};
    bad = p;
    bad.k_head_stride = 4;  // 8 bytes
    EXPECT_NO_THROW(SparseAttentionFamily::validate(config, bad, kHopperShared)) << "mma.sync, one head";
    expect_refused_by(wgmma, bad, "k: the wgmma kernel loads by TMA");
    bad = p;
    bad.v_batch_stride = 1LL << 40;
    expect_refused_by(wgmma, bad, "v: the wgmma kernel loads by TMA");
    bad = p;
    bad.o_head_stride = 4;
    EXPECT_NO_THROW(SparseAttentionFamily::validate(wgmma, bad, kHopperShared)) << "O is stored without TMA";
    // Which way O leaves: by TMA where the specialization stages it and O's strides make a
    // tensor map, else thread by thread.
    ASSERT_TRUE(wgmma.o_staged());
    EXPECT_TRUE(SparseAttentionFamily::stores_o_by_tensor_map(wgmma, p));
    EXPECT_FALSE(SparseAttentionFamily::stores_o_by_tensor_map(wgmma, bad)) << "head stride of 8 bytes";
    bad = p;
    bad.o_batch_stride = 1LL << 40;
    EXPECT_FALSE(SparseAttentionFamily::stores_o_by_tensor_map(wgmma, bad)) << "batch stride of 2^41 bytes";
    AttentionConfig three_stages = wgmma;
    three_stages.stages = 3;
    ASSERT_FALSE(three_stages.o_staged());
    EXPECT_FALSE(SparseAttentionFamily::stores_o_by_tensor_map(three_stages, p)) << "no room to stage O";
    EXPECT_FALSE(SparseAttentionFamily::stores_o_by_tensor_map(config, p)) << "mma.sync";
    bad = p;  // 8192 query tiles x 65535 heads x 3 batches: more work items than 32 bits number
    bad.tokens_q = 1 << 20;
    bad.heads = 65535;
    bad.batch = 3;
    EXPECT_NO_THROW(SparseAttentionFamily::validate(config, bad, kHopperShared)) << "mma.sync has a 3-D grid";
    expect_refused_by(wgmma, bad, "the wgmma kernel takes fewer than 2^30 query tiles of 128 rows");
  }
  for (float scale : {0.f, -0.125f, std::numeric_limits<float>::quiet_NaN(),
                      std::numeric_limits<float>::infinity()}) {
    bad = p;
    bad.softmax_scale = scale;
    expect_refused(bad, "softmax_scale");
  }
  bad = p;
  bad.kv_block_index = nullptr;
  expect_refused(bad, "block mask");
  bad = p;
  bad.max_kv_blocks = 2;  // only one key block of 128 for 100 keys
  expect_refused(bad, "max_kv_blocks 2");
  bad = p;
  static unsigned long long bits[1];
  bad.fine_bits = bits;
  expect_refused(bad, "without fine bits");
}

// A stratified subset compiles for sm_80 and sm_90 on CI: every dtype x head dim at the
// default tile, plus fine bits, the two warp layouts (16 and 32 rows per warp) and the bitmask
// form once each.
// The whole space (hundreds of specializations, about a second each) is compiled by
// `sparsejit precompile --family sparse_attention`, too slow for every CI run.
TEST(AttentionCompile, StratifiedSubsetCompilesToCubins) {
  std::vector<AttentionConfig> subset;
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kAttentionHeadDims)
      subset.push_back(default_attention_config(dtype, head_dim, 128, 128, 0, 99 * 1024));
  subset.push_back(default_attention_config(HalfDtype::bf16, 128, 128, 64, 16, 99 * 1024));
  subset.push_back({HalfDtype::fp16, 64, 128, 128, 128, 64, 4, 32});  // 32 rows per warp
  subset.push_back({HalfDtype::bf16, 96, 64, 128, 64, 32, 4, 16, true});  // the bitmask form
  // The wgmma kernel (rendered for sm_90a whatever the 9.0 target asked): the widest tile at
  // D = 128 with two Q buffers (2 stages, the default) and one (3 stages), the D = 64
  // default, and the narrowest at D = 64 with fine bits, the bitmask form and three stages.
  // ptxas must not serialize their wgmma: it says so in the log (C7511, "wgmma.mma_async
  // instructions are serialized") where the consumers' registers run short, and the kernel
  // then runs at about half its speed (BENCHMARKS.md, sixth session, version 16) while every
  // test still passes.
  const jit::Target sm90 = jit::Target::parse("sm_90");
  const std::vector<AttentionConfig> wgmma = {
      {HalfDtype::bf16, 128, 128, 128, 128, 128, wgmma_warps(128), 0, false, true, 2},
      {HalfDtype::bf16, 128, 128, 128, 128, 128, wgmma_warps(128), 0, false, true, 3},
      default_attention_config(HalfDtype::bf16, 64, 128, 128, 0, sm90),
      {HalfDtype::fp16, 64, 64, 64, 64, 64, wgmma_warps(64), 16, true, true, 3}};
  for (const AttentionConfig& config : wgmma) {
    SCOPED_TRACE(config.label());
    ASSERT_TRUE(config.wgmma);
    const jit::KernelSpec spec = SparseAttentionFamily::render(config, sm90);
    ASSERT_EQ(spec.request.target.name(), "sm_90a");
    const jit::CompiledBinary binary = jit::compile(spec.request);
    EXPECT_GT(binary.cubin.size(), 1000u);
    EXPECT_EQ(binary.lowered_names.count(config.name_expression()), 1u);
    EXPECT_EQ(binary.log.find("C7511"), std::string::npos) << binary.log;
    EXPECT_EQ(binary.log.find("serialized"), std::string::npos) << binary.log;
  }
  for (const char* arch : {"sm_80", "sm_90"})
    for (const AttentionConfig& config : subset) {
      SCOPED_TRACE(config.label() + " " + arch);
      ASSERT_EQ(attention_config_problem(config, max_shared_bytes_for(jit::Target::parse(arch))), "");
      const jit::CompiledBinary binary = jit::compile(SparseAttentionFamily::render(config, jit::Target::parse(arch)).request);
      EXPECT_GT(binary.cubin.size(), 1000u);
      EXPECT_EQ(binary.lowered_names.count(config.name_expression()), 1u);
    }
}

}  // namespace
}  // namespace sparsejit::templates
