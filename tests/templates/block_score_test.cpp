// block_score without a GPU: the float64 reference against naive dense computations on
// small odd sizes (pooling with a ragged last tile, the full tile softmax, block sums), the
// descriptor's space, defaults and validation, and NVRTC compiles of a stratified subset.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

#include "jit/nvrtc_compiler.h"
#include "templates/block_score/block_score_family.h"
#include "templates/block_score/block_score_reference.h"
#include "templates/sparse_attention/attention_family.h"
#include "tests/support/gpu_test.h"

namespace sparsejit::templates {
namespace {

constexpr int kHopperShared = 227 * 1024;

// [B, N, H, D] storage (token stride H * D), the layout the models write.
struct HostInputs {
  int batch, heads, tokens_q, tokens_kv, head_dim;
  std::vector<std::uint16_t> q, k;
  BlockScoreParams params{};
};

HostInputs make_inputs(int batch, int heads, int tokens_q, int tokens_kv, int head_dim, HalfDtype dtype,
                       std::mt19937_64& generator) {
  HostInputs in{batch, heads, tokens_q, tokens_kv, head_dim, {}, {}, {}};
  in.q = random_half(static_cast<std::size_t>(batch) * heads * tokens_q * head_dim, dtype, generator, 2.0f);
  in.k = random_half(static_cast<std::size_t>(batch) * heads * tokens_kv * head_dim, dtype, generator, 2.0f);
  BlockScoreParams& p = in.params;
  p.q = in.q.data();
  p.k = in.k.data();
  p.q_batch_stride = static_cast<long long>(tokens_q) * heads * head_dim;
  p.k_batch_stride = static_cast<long long>(tokens_kv) * heads * head_dim;
  p.q_head_stride = p.k_head_stride = head_dim;
  p.q_token_stride = p.k_token_stride = static_cast<long long>(heads) * head_dim;
  p.batch = batch;
  p.heads = heads;
  p.tokens_q = tokens_q;
  p.tokens_kv = tokens_kv;
  p.softmax_scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  return in;
}

TEST(BlockScoreReference, PoolsTilesWithARaggedLastTile) {
  std::mt19937_64 generator = testing::fresh_generator();
  const HostInputs in = make_inputs(2, 3, 37, 29, 64, HalfDtype::fp16, generator);
  for (int tile : kScoreTileTokens) {
    SCOPED_TRACE("t = " + std::to_string(tile));
    const BlockScoreParams& p = in.params;
    const std::vector<double> pooled = pool_tiles_reference(p.q, p.q_batch_stride, p.q_head_stride, p.q_token_stride,
                                                            2, 3, 37, 64, tile, HalfDtype::fp16);
    const int tiles = (37 + tile - 1) / tile;
    ASSERT_EQ(pooled.size(), 2u * 3 * tiles * 64);
    for (int b = 0; b < 2; ++b)
      for (int h = 0; h < 3; ++h)
        for (int i = 0; i < tiles; ++i)
          for (int d = 0; d < 64; d += 7) {
            double sum = 0.0;
            int count = 0;
            for (int n = i * tile; n < std::min(37, (i + 1) * tile); ++n, ++count)
              sum += half_bits_to_float(in.q[((static_cast<std::size_t>(b) * 37 + n) * 3 + h) * 64 + d], HalfDtype::fp16);
            EXPECT_NEAR(pooled[((b * 3 + h) * tiles + i) * 64 + d], sum / count, 1e-12);
          }
  }
}

// The reference against a dense [Tq, Tk] probability matrix built here, for every tile and
// block pair on odd lengths (a ragged last tile and block on both sides).
TEST(BlockScoreReference, MatchesDenseTileSoftmaxAndBlockSums) {
  std::mt19937_64 generator = testing::fresh_generator();
  const HostInputs in = make_inputs(1, 2, 301, 233, 96, HalfDtype::bf16, generator);
  for (int tile : kScoreTileTokens)
    for (int block_q : kScoreBlockSizes)
      for (int block_kv : kScoreBlockSizes) {
        SCOPED_TRACE("t " + std::to_string(tile) + " blocks " + std::to_string(block_q) + "x" + std::to_string(block_kv));
        const BlockScoreReference ref = block_score_reference(in.params, HalfDtype::bf16, 96, tile, block_q, block_kv);
        const BlockScoreShape shape = block_score_shape(301, 233, tile, block_q, block_kv);
        for (int h = 0; h < 2; ++h) {
          std::vector<double> block_sums(static_cast<std::size_t>(shape.q_blocks) * shape.kv_blocks, 0.0);
          for (int i = 0; i < shape.tiles_q; ++i) {
            std::vector<double> logits(shape.tiles_k);
            for (int j = 0; j < shape.tiles_k; ++j) {
              double dot = 0.0;
              for (int d = 0; d < 96; ++d)
                dot += ref.pooled_q[(h * shape.tiles_q + i) * 96 + d] * ref.pooled_k[(h * shape.tiles_k + j) * 96 + d];
              logits[j] = dot * in.params.softmax_scale;
            }
            double normalizer = 0.0;
            for (double logit : logits) normalizer += std::exp(logit);
            EXPECT_NEAR(ref.tile_lse[h * shape.tiles_q + i], std::log(normalizer), 1e-9);
            for (int j = 0; j < shape.tiles_k; ++j)
              block_sums[(i * tile / block_q) * shape.kv_blocks + j * tile / block_kv] += std::exp(logits[j]) / normalizer;
          }
          for (int qb = 0; qb < shape.q_blocks; ++qb) {
            double row_total = 0.0;
            for (int kb = 0; kb < shape.kv_blocks; ++kb) {
              const double score = ref.scores[(h * shape.q_blocks + qb) * shape.kv_blocks + kb];
              EXPECT_NEAR(score, block_sums[qb * shape.kv_blocks + kb], 1e-12);
              row_total += score;
            }
            // Each query tile's row sums to 1: a block's scores sum to its number of tiles.
            const int tiles_in_block = std::min(shape.tiles_q, (qb + 1) * block_q / tile) - qb * block_q / tile;
            EXPECT_NEAR(row_total, tiles_in_block, 1e-9);
          }
        }
      }
}

TEST(BlockScoreReference, RefusesBadArguments) {
  std::mt19937_64 generator = testing::fresh_generator();
  HostInputs in = make_inputs(1, 1, 64, 64, 64, HalfDtype::bf16, generator);
  EXPECT_THROW(block_score_reference(in.params, HalfDtype::bf16, 64, 16, 72, 64), std::invalid_argument);
  EXPECT_THROW(block_score_reference(in.params, HalfDtype::bf16, 0, 16, 64, 64), std::invalid_argument);
  in.params.k = nullptr;
  EXPECT_THROW(block_score_reference(in.params, HalfDtype::bf16, 64, 16, 64, 64), std::invalid_argument);
}

TEST(BlockScoreSpace, EveryPointIsValidDistinctAndDefaultsFit) {
  const std::vector<jit::KernelSpec> space = BlockScoreFamily().enumerate(jit::Target::parse("sm_90"));
  // 18 pool_tiles (dtype x head dim x tile) and 288 score_blocks points, all fitting sm_90.
  EXPECT_EQ(space.size(), 18u + 288u);
  std::set<std::string> keys;
  for (const jit::KernelSpec& spec : space) {
    EXPECT_EQ(spec.family, "block_score");
    keys.insert(spec.request.cache_key());
  }
  EXPECT_EQ(keys.size(), space.size());
  for (HalfDtype dtype : {HalfDtype::bf16, HalfDtype::fp16})
    for (int head_dim : kScoreHeadDims)
      for (int tile : kScoreTileTokens)
        for (int block_q : kScoreBlockSizes)
          for (int block_kv : kScoreBlockSizes)
            for (int shared : {48 * 1024, kHopperShared}) {
              const BlockScoreConfig config = default_block_score_config(dtype, head_dim, tile, block_q, block_kv, shared);
              EXPECT_EQ(block_score_config_problem(config, shared), "") << config.label();
            }
}

TEST(BlockScoreSpace, InvalidPointsSayWhy) {
  BlockScoreConfig c;
  c.head_dim = 80;
  EXPECT_NE(block_score_config_problem(c, kHopperShared).find("head dim 80"), std::string::npos);
  c = {};
  c.tile = 12;
  EXPECT_NE(block_score_config_problem(c, kHopperShared).find("tiles of 12"), std::string::npos);
  c = {};
  c.block_kv = 256;
  EXPECT_NE(block_score_config_problem(c, kHopperShared).find("64 or 128"), std::string::npos);
  c = {};
  c.warps = 2;
  EXPECT_NE(block_score_config_problem(c, kHopperShared).find("warps"), std::string::npos);
  c = {};
  c.step_tiles = 16;
  EXPECT_NE(block_score_config_problem(c, kHopperShared).find("32 or 64 key tiles"), std::string::npos);
  c = {};
  c.warps = 8;
  EXPECT_NE(block_score_config_problem(c, 32 * 1024).find("shared memory"), std::string::npos);
  EXPECT_THROW(default_block_score_config(HalfDtype::bf16, 128, 24, 128, 128, kHopperShared), std::invalid_argument);
}

TEST(BlockScoreValidate, RefusesBadParamsWithTheReason) {
  const BlockScoreConfig config = default_block_score_config(HalfDtype::bf16, 128, 16, 128, 128, kHopperShared);
  alignas(16) static char memory[64];
  BlockScoreParams p{};
  p.q = p.k = memory;
  p.q_token_stride = p.k_token_stride = 128;
  p.pooled_q = p.pooled_k = memory;
  p.tile_lse = p.scores = reinterpret_cast<float*>(memory);
  p.batch = p.heads = 1;
  p.tokens_q = p.tokens_kv = 100;
  p.softmax_scale = 0.125f;
  EXPECT_NO_THROW(BlockScoreFamily::validate(config, p, kHopperShared));
  const auto expect_refused = [&](BlockScoreParams bad, const std::string& words) {
    try {
      BlockScoreFamily::validate(config, bad, kHopperShared);
      ADD_FAILURE() << "expected a refusal mentioning '" << words << "'";
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find(words), std::string::npos) << error.what();
    }
  };
  BlockScoreParams bad = p;
  bad.q = nullptr;
  expect_refused(bad, "q is null");
  bad = p;
  bad.k = memory + 2;
  expect_refused(bad, "k: the pointer and the token stride");
  bad = p;
  bad.q_token_stride = 100;
  expect_refused(bad, "q: the pointer and the token stride");
  bad = p;
  bad.heads = 2;
  bad.k_head_stride = 12;  // 24 bytes: head 1's rows off their 16-byte chunks
  expect_refused(bad, "k: the head stride (12 elements) must be a multiple of 16 bytes");
  bad = p;
  bad.scores = nullptr;
  expect_refused(bad, "scores is null");
  bad = p;
  bad.pooled_k = memory + 4;
  expect_refused(bad, "pooled_k must be 16-byte aligned");
  bad = p;
  bad.tokens_q = 0;
  expect_refused(bad, "must be positive");
  for (float scale : {0.f, -1.f, std::numeric_limits<float>::infinity()}) {
    bad = p;
    bad.softmax_scale = scale;
    expect_refused(bad, "softmax_scale");
  }
}

// NVRTC compiles a stratified subset for sm_80 and sm_90: every value of every axis at least
// once (dtype, head dim, tile, both block sizes on both sides, warps, step). The whole space
// (306 specializations, 1-2 s each for score_blocks) is `sparsejit precompile --family
// block_score`, too slow for every CI run.
TEST(BlockScoreCompile, StratifiedSubsetCompilesToCubins) {
  const std::vector<BlockScoreConfig> subset = {
      {HalfDtype::bf16, 128, 16, 128, 128, 4, 64}, {HalfDtype::fp16, 64, 8, 64, 128, 8, 32},
      {HalfDtype::bf16, 96, 32, 128, 64, 4, 32},   {HalfDtype::fp16, 128, 32, 64, 64, 8, 64},
      {HalfDtype::bf16, 64, 16, 64, 64, 4, 64},    {HalfDtype::fp16, 96, 8, 128, 128, 4, 64}};
  for (const char* arch : {"sm_80", "sm_90"}) {
    const jit::Target target = jit::Target::parse(arch);
    for (const BlockScoreConfig& config : subset) {
      SCOPED_TRACE(config.label() + " " + arch);
      ASSERT_EQ(block_score_config_problem(config, max_shared_bytes_for(target)), "");
      for (const jit::KernelSpec& spec :
           {BlockScoreFamily::render_pool(config, target), BlockScoreFamily::render_score(config, target)}) {
        const jit::CompiledBinary binary = jit::compile(spec.request);
        EXPECT_GT(binary.cubin.size(), 1000u);
        EXPECT_EQ(binary.lowered_names.count(spec.name_expression), 1u);
      }
    }
  }
}

}  // namespace
}  // namespace sparsejit::templates
