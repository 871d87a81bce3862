// block_select without a GPU: the float64 reference's rules on small hand-made rows (top-k,
// ties, k >= KB, the always-kept blocks, the threshold's edges, the row cap, per-head k),
// fine bits from sub-tile masses (ties, shares, tiles larger and smaller than sub-tiles,
// ragged ends), the descriptor's space and validation, and NVRTC compiles of a stratified
// subset.
#include <gtest/gtest.h>

#include <array>
#include <bit>
#include <cmath>
#include <numeric>
#include <set>

#include "jit/nvrtc_compiler.h"
#include "templates/block_select/block_select_family.h"
#include "templates/block_select/block_select_reference.h"
#include "tests/support/gpu_test.h"

namespace sparsejit::templates {
namespace {

// One (batch, head) of `tokens` queries and keys with the given scores ([QB, KB] row-major).
struct SelectCase {
  std::vector<float> scores;
  BlockSelectParams params{};
  BlockSelectConfig config = block_select_config(64, 64, 0);

  SelectCase(int tokens, std::vector<float> values, int top_k, float threshold, int text_blocks, int max_kv_blocks)
      : scores(std::move(values)) {
    params.scores = scores.data();
    static int sink[1];
    params.kv_block_count = params.kv_block_index = sink;  // output pointers: unused by the reference
    params.batch = params.heads = 1;
    params.tokens_q = params.tokens_kv = tokens;
    params.top_k = top_k;
    params.threshold = threshold;
    params.text_blocks = text_blocks;
    params.max_kv_blocks = max_kv_blocks;
  }
  std::vector<int> kept(const BlockMask& mask, int qb) const {
    const std::span<const int> blocks = mask.kept_blocks(0, 0, qb);
    return {blocks.begin(), blocks.end()};
  }
};

// 5 blocks of 64 (300 tokens); query block 2's diagonal is block 2.
TEST(BlockSelectReference, TopKKeepsTheBestWithTheAlwaysKeptAscending) {
  std::vector<float> scores(25, 0.f);
  const float row2[] = {0.01f, 0.4f, 0.02f, 0.3f, 0.27f};
  std::copy(std::begin(row2), std::end(row2), scores.begin() + 10);
  SelectCase c(300, scores, 3, 0.f, 0, 3);
  const BlockMask mask = block_select_reference(c.params, c.config);
  validate_block_mask(mask, 300, 300);
  // First (0) and diagonal (2) are kept although their scores are the lowest; then block 1.
  EXPECT_EQ(c.kept(mask, 2), (std::vector<int>{0, 1, 2}));
  c.params.top_k = c.params.max_kv_blocks = 4;
  EXPECT_EQ(c.kept(block_select_reference(c.params, c.config), 2), (std::vector<int>{0, 1, 2, 3}));
}

// first_block_by_score: block 0 competes by its score (the oracle's rule); the diagonal and
// the text blocks stay kept, in both top-k and threshold mode.
TEST(BlockSelectReference, FirstBlockByScoreKeepsItOnlyForItsScore) {
  std::vector<float> scores(25, 0.f);
  const float row2[] = {0.01f, 0.4f, 0.02f, 0.3f, 0.27f};
  std::copy(std::begin(row2), std::end(row2), scores.begin() + 10);
  SelectCase c(300, scores, 3, 0.f, 0, 3);
  c.params.first_block_by_score = 1;
  EXPECT_EQ(c.kept(block_select_reference(c.params, c.config), 2), (std::vector<int>{1, 2, 3}));
  scores[10] = 0.35f;  // now block 0 is the second best
  SelectCase heavy_first(300, scores, 3, 0.f, 0, 3);
  heavy_first.params.first_block_by_score = 1;
  EXPECT_EQ(heavy_first.kept(block_select_reference(heavy_first.params, heavy_first.config), 2),
            (std::vector<int>{0, 1, 2}));
  // k = 1 keeps the diagonal alone, plus a text block.
  std::vector<float> flat(25, 1.f);
  SelectCase text(300, flat, 1, 0.f, 1, 3);
  text.params.first_block_by_score = 1;
  const BlockMask mask = block_select_reference(text.params, text.config);
  EXPECT_EQ(text.kept(mask, 2), (std::vector<int>{2, 4}));
  EXPECT_EQ(text.kept(mask, 0), (std::vector<int>{0, 4}));  // block 0 is row 0's diagonal
  // Threshold mode: the diagonal's 0.125 alone, then 0.375 (block 2) reaches 0.5.
  std::vector<float> row_scores(25, 0.f);
  const float row3[] = {0.125f, 0.25f, 0.375f, 0.125f, 0.125f};
  std::copy(std::begin(row3), std::end(row3), row_scores.begin() + 15);
  SelectCase threshold(300, row_scores, 0, 0.5f, 0, 5);
  threshold.params.first_block_by_score = 1;
  EXPECT_EQ(threshold.kept(block_select_reference(threshold.params, threshold.config), 3), (std::vector<int>{2, 3}));
}

TEST(BlockSelectReference, EqualScoresKeepTheLowerIndex) {
  std::vector<float> scores(25, 0.5f);  // every block ties
  SelectCase c(300, scores, 3, 0.f, 0, 3);
  const BlockMask mask = block_select_reference(c.params, c.config);
  EXPECT_EQ(c.kept(mask, 0), (std::vector<int>{0, 1, 2}));  // first = diagonal, then 1, 2
  EXPECT_EQ(c.kept(mask, 4), (std::vector<int>{0, 1, 4}));  // first, diagonal, then 1
  // Non-positive scores all rank as 0 and tie too.
  std::vector<float> negative(25, -1.f);
  negative[13] = 0.f;
  SelectCase d(300, negative, 3, 0.f, 0, 3);
  EXPECT_EQ(d.kept(block_select_reference(d.params, d.config), 2), (std::vector<int>{0, 1, 2}));
}

TEST(BlockSelectReference, KAtOrAboveTheBlockCountKeepsEveryBlock) {
  std::vector<float> scores(25);
  std::iota(scores.begin(), scores.end(), 1.f);
  for (int k : {5, 6, 1000}) {
    SelectCase c(300, scores, k, 0.f, 0, 5);
    const BlockMask mask = block_select_reference(c.params, c.config);
    for (int qb = 0; qb < 5; ++qb) EXPECT_EQ(c.kept(mask, qb), (std::vector<int>{0, 1, 2, 3, 4})) << "k " << k;
  }
}

// No row is ever empty: with k = 1 every row keeps its always-kept blocks (and only those).
TEST(BlockSelectReference, RowsKeepTheirAlwaysKeptBlocksAtLeast) {
  std::vector<float> scores(25, 1.f);
  SelectCase c(300, scores, 1, 0.f, 1, 3);  // the last block is text
  const BlockMask mask = block_select_reference(c.params, c.config);
  EXPECT_EQ(c.kept(mask, 0), (std::vector<int>{0, 4}));
  EXPECT_EQ(c.kept(mask, 2), (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(c.kept(mask, 4), (std::vector<int>{0, 4}));
  // The ragged last query block of 44 tokens: its diagonal is the last key block.
  SelectCase ragged(300, scores, 1, 0.f, 0, 2);
  EXPECT_EQ(ragged.kept(block_select_reference(ragged.params, ragged.config), 4), (std::vector<int>{0, 4}));
}

TEST(BlockSelectReference, ThresholdKeepsTheSmallestSetReachingIt) {
  std::vector<float> scores(25, 0.f);
  // Query block 3 (binary fractions: sums are exact): first 0.125 and diagonal 0.125 are
  // always kept (0.25 of 1.0), then 0.375 (block 2), 0.25 (block 1), 0.125 (block 4).
  const float row3[] = {0.125f, 0.25f, 0.375f, 0.125f, 0.125f};
  std::copy(std::begin(row3), std::end(row3), scores.begin() + 15);
  const struct {
    float threshold;
    std::vector<int> kept;
  } cases[] = {{0.f, {0, 3}},           // nothing wanted: the always-kept blocks only
               {0.25f, {0, 3}},         // they reach it already
               {0.5f, {0, 2, 3}},       // + 0.375 = 0.625
               {0.625f, {0, 2, 3}},     // exactly reached
               {0.75f, {0, 1, 2, 3}},   // + 0.25 = 0.875
               {1.f, {0, 1, 2, 3, 4}}};
  for (const auto& expected : cases) {
    SelectCase c(300, scores, 0, expected.threshold, 0, 5);
    EXPECT_EQ(c.kept(block_select_reference(c.params, c.config), 3), expected.kept) << "threshold " << expected.threshold;
  }
  // Zero-score blocks are not needed to reach 1.0.
  std::vector<float> sparse(25, 0.f);
  sparse[0] = 0.5f;
  sparse[2] = 0.5f;
  SelectCase c(300, sparse, 0, 1.f, 0, 5);
  EXPECT_EQ(c.kept(block_select_reference(c.params, c.config), 0), (std::vector<int>{0, 2}));
  // A cap of max_kv_blocks keeps the best that fit.
  SelectCase capped(300, scores, 0, 1.f, 0, 3);
  EXPECT_EQ(capped.kept(block_select_reference(capped.params, capped.config), 3), (std::vector<int>{0, 2, 3}));
}

// Per-head k (SVOO's per-head densities): 3 heads of 5 blocks of 64 (300 tokens), all scores
// tied within a head, so each head keeps its always-kept blocks and then the lowest indices.
TEST(BlockSelectReference, PerHeadTopKKeepsEachHeadsOwnCount) {
  std::vector<float> scores(3 * 25, 0.5f);
  SelectCase c(300, scores, 5, 0.f, 0, 5);
  c.params.heads = 3;
  const int head_top_k[] = {1, 3, 5};
  c.params.top_k_per_head = head_top_k;
  const BlockMask mask = block_select_reference(c.params, c.config);
  validate_block_mask(mask, 300, 300);
  const auto kept = [&](int h, int qb) {
    const std::span<const int> blocks = mask.kept_blocks(0, h, qb);
    return std::vector<int>(blocks.begin(), blocks.end());
  };
  EXPECT_EQ(kept(0, 3), (std::vector<int>{0, 3}));  // k = 1: first and diagonal only
  EXPECT_EQ(kept(0, 0), (std::vector<int>{0}));     // first = diagonal
  EXPECT_EQ(kept(1, 3), (std::vector<int>{0, 1, 3}));  // ties: the lower index
  EXPECT_EQ(kept(1, 0), (std::vector<int>{0, 1, 2}));
  for (int qb = 0; qb < 5; ++qb) EXPECT_EQ(kept(2, qb), (std::vector<int>{0, 1, 2, 3, 4})) << "k = KB";

  // Distinct scores: head 1 keeps its 3 best (with first and diagonal), head 0 only those two.
  std::vector<float> ranked(3 * 25, 0.f);
  const float row2[] = {0.01f, 0.4f, 0.02f, 0.3f, 0.27f};
  for (int h = 0; h < 3; ++h) std::copy(std::begin(row2), std::end(row2), ranked.begin() + h * 25 + 10);
  c.scores = ranked;
  c.params.scores = c.scores.data();
  const BlockMask by_score = block_select_reference(c.params, c.config);
  EXPECT_EQ(std::vector<int>(by_score.kept_blocks(0, 0, 2).begin(), by_score.kept_blocks(0, 0, 2).end()),
            (std::vector<int>{0, 2}));
  EXPECT_EQ(std::vector<int>(by_score.kept_blocks(0, 1, 2).begin(), by_score.kept_blocks(0, 1, 2).end()),
            (std::vector<int>{0, 1, 2}));

  // A k past KB keeps every block; the row pitch stays KB.
  const int past_the_end[] = {7, 2, 6};
  c.params.top_k = 7;
  c.params.top_k_per_head = past_the_end;
  const BlockMask wide = block_select_reference(c.params, c.config);
  EXPECT_EQ(wide.kept_blocks(0, 0, 1).size(), 5u);
  EXPECT_EQ(wide.kept_blocks(0, 2, 4).size(), 5u);
  EXPECT_EQ(wide.kept_blocks(0, 1, 4).size(), 2u);  // first and diagonal
}

// Short rows: a single key block (50 tokens) keeps it, whatever each head asks for.
TEST(BlockSelectReference, PerHeadTopKOnAOneBlockRow) {
  SelectCase c(50, std::vector<float>(2, 0.25f), 2, 0.f, 0, 1);
  c.params.heads = 2;
  const int head_top_k[] = {1, 2};
  c.params.top_k_per_head = head_top_k;
  const BlockMask mask = block_select_reference(c.params, c.config);
  for (int h = 0; h < 2; ++h) {
    ASSERT_EQ(mask.kept_blocks(0, h, 0).size(), 1u) << "head " << h;
    EXPECT_EQ(mask.kept_blocks(0, h, 0)[0], 0) << "head " << h;
  }
}

TEST(BlockSelectReference, PerHeadTopKOutsideOneToTopKIsRefused) {
  SelectCase c(300, std::vector<float>(2 * 25, 1.f), 3, 0.f, 0, 3);
  c.params.heads = 2;
  for (const auto& [ks, words] : {std::pair{std::array<int, 2>{0, 2}, "top_k_per_head[0] = 0 is outside 1..3"},
                                 std::pair{std::array<int, 2>{3, 4}, "top_k_per_head[1] = 4 is outside 1..3"}}) {
    c.params.top_k_per_head = ks.data();
    try {
      block_select_reference(c.params, c.config);
      ADD_FAILURE() << "expected a refusal mentioning '" << words << "'";
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find(words), std::string::npos) << error.what();
    }
  }
}

TEST(BlockSelectReference, FineWordKeepsTheFewestSubtilesReachingTheShare) {
  EXPECT_EQ(fine_word_for({0.1, 0.5, 0.2, 0.2}, 0.5), 0b0010u);
  EXPECT_EQ(fine_word_for({0.1, 0.5, 0.2, 0.2}, 0.51), 0b0110u);  // equal masses: lower bit first
  EXPECT_EQ(fine_word_for({0.1, 0.5, 0.2, 0.2}, 1.0), 0b1111u);
  EXPECT_EQ(fine_word_for({0.1, 0.5, 0.2, 0.2}, 1e-9), 0b0010u);  // at least one
  EXPECT_EQ(fine_word_for({0.0, 0.0, 0.0}, 0.5), 0b001u);          // nothing to rank: still one
  EXPECT_EQ(fine_word_for({0.5, 0.5, 0.0}, 1.0), 0b011u);          // massless sub-tiles are not needed
}

// Sub-tile masses from random pooled tiles with their own normalizers: the masses of all
// pairs of a query block sum to its real tiles' mass (1 per tile), for tiles larger, equal
// and smaller than the 16 x fine_n sub-tiles, on ragged lengths.
TEST(BlockSelectReference, SubtileMassesSumToTheTileRows) {
  std::mt19937_64 generator = testing::fresh_generator();
  const int tokens = 200, head_dim = 64;
  for (int tile : kSelectTileTokens)
    for (int fine_n : {8, 16, 32}) {
      SCOPED_TRACE("t " + std::to_string(tile) + " fine " + std::to_string(fine_n));
      const BlockSelectConfig config = block_select_config(64, 64, fine_n, HalfDtype::fp16, head_dim, tile);
      const int tiles = (tokens + tile - 1) / tile;
      const std::vector<std::uint16_t> pooled_q = random_half(tiles * head_dim, HalfDtype::fp16, generator);
      const std::vector<std::uint16_t> pooled_k = random_half(tiles * head_dim, HalfDtype::fp16, generator);
      std::vector<float> lse(tiles);
      const float scale = 0.125f;
      for (int i = 0; i < tiles; ++i) {
        double normalizer = 0.0;
        for (int j = 0; j < tiles; ++j) {
          double dot = 0.0;
          for (int d = 0; d < head_dim; ++d)
            dot += half_bits_to_float(pooled_q[i * head_dim + d], HalfDtype::fp16) *
                   half_bits_to_float(pooled_k[j * head_dim + d], HalfDtype::fp16);
          normalizer += std::exp(dot * scale);
        }
        lse[i] = static_cast<float>(std::log(normalizer));
      }
      std::vector<float> scores(16, 1.f);
      unsigned long long fine_sink[1];
      SelectCase c(tokens, scores, 4, 0.f, 0, 4);
      c.config = config;
      c.params.fine_bits = fine_sink;
      c.params.pooled_q = pooled_q.data();
      c.params.pooled_k = pooled_k.data();
      c.params.tile_lse = lse.data();
      // Below 1 - 1/8: the smallest of at most 8 sub-tiles holds at most 1/8 of a block's mass,
      // so reaching the share never needs every sub-tile, however even the masses are.
      c.params.fine_share = 0.85f;
      c.params.softmax_scale = scale;
      for (int qb = 0; qb < 4; ++qb) {
        double total = 0.0;
        for (int kb = 0; kb < 4; ++kb) {
          const std::vector<double> masses = fine_subtile_masses(c.params, config, 0, 0, qb, kb);
          ASSERT_EQ(masses.size(), static_cast<std::size_t>(fine_subtiles(64, 64, fine_n)));
          total += std::accumulate(masses.begin(), masses.end(), 0.0);
          // Sub-tiles past the 200 tokens (query block 3 holds 8 real queries) have no mass.
          for (std::size_t s = 0; s < masses.size(); ++s) {
            const int qs = static_cast<int>(s) / (64 / fine_n), ks = static_cast<int>(s) % (64 / fine_n);
            if (qb * 64 + qs * 16 >= tokens || kb * 64 + ks * fine_n >= tokens) {
              EXPECT_EQ(masses[s], 0.0) << s;
            }
          }
        }
        const int real_tiles = std::min(tiles, (qb + 1) * 64 / tile) - qb * 64 / tile;
        EXPECT_NEAR(total, real_tiles, 1e-5 * real_tiles);  // the LSE is float32
      }
      // Always-kept pairs keep every sub-tile; the others a subset reaching the share.
      const BlockMask mask = block_select_reference(c.params, config);
      validate_block_mask(mask, tokens, tokens);
      const std::uint64_t full = fine_subtiles(64, 64, fine_n) == 64 ? ~0ull : (1ull << fine_subtiles(64, 64, fine_n)) - 1;
      EXPECT_EQ(mask.fine_word(0, 0, 2, 0), full);  // block 0
      EXPECT_EQ(mask.fine_word(0, 0, 2, 2), full);  // the diagonal
      const std::uint64_t scored = mask.fine_word(0, 0, 2, 1);  // block 1, kept for its score
      const std::vector<double> masses = fine_subtile_masses(c.params, config, 0, 0, 2, 1);
      double kept_mass = 0.0;
      for (std::size_t s = 0; s < masses.size(); ++s)
        if ((scored >> s) & 1u) kept_mass += masses[s];
      EXPECT_GE(kept_mass, 0.85 * std::accumulate(masses.begin(), masses.end(), 0.0));
      EXPECT_LT(std::popcount(scored), std::popcount(full)) << "a share below 1 - 1/8 leaves some sub-tile out";
    }
}

TEST(BlockSelectSpace, EveryPointIsValidAndDistinct) {
  const std::vector<jit::KernelSpec> space = BlockSelectFamily().enumerate(jit::Target::parse("sm_90"));
  // 4 block pairs without fine bits; 11 valid (blocks, fine_n) x 2 dtypes x 3 head dims x 3 tiles.
  EXPECT_EQ(space.size(), 4u + 11u * 18u);
  std::set<std::string> keys;
  for (const jit::KernelSpec& spec : space) keys.insert(spec.request.cache_key());
  EXPECT_EQ(keys.size(), space.size());
  EXPECT_EQ(block_select_config(128, 128, 0, HalfDtype::fp16, 128, 16), block_select_config(128, 128, 0));
}

TEST(BlockSelectSpace, InvalidPointsSayWhy) {
  EXPECT_NE(block_select_config_problem({96, 128, 0}).find("64 or 128"), std::string::npos);
  EXPECT_NE(block_select_config_problem({128, 128, 8, HalfDtype::bf16, 128, 16}).find("64-bit"), std::string::npos);
  EXPECT_NE(block_select_config_problem({128, 128, 16, HalfDtype::bf16, 80, 16}).find("head dim 80"), std::string::npos);
  EXPECT_NE(block_select_config_problem({128, 128, 16, HalfDtype::bf16, 128, 4}).find("tiles of 4"), std::string::npos);
  EXPECT_NE(block_select_config_problem({128, 128, 0, HalfDtype::bf16, 128, 16}).find("unused"), std::string::npos);
}

TEST(BlockSelectValidate, RefusesBadParamsWithTheReason) {
  const BlockSelectConfig fine = block_select_config(128, 128, 16, HalfDtype::bf16, 128, 16);
  alignas(16) static char memory[64];
  BlockSelectParams p{};
  p.scores = reinterpret_cast<const float*>(memory);
  p.kv_block_count = p.kv_block_index = reinterpret_cast<int*>(memory);
  p.fine_bits = reinterpret_cast<unsigned long long*>(memory);
  p.pooled_q = p.pooled_k = memory;
  p.tile_lse = reinterpret_cast<const float*>(memory);
  p.batch = p.heads = 1;
  p.tokens_q = p.tokens_kv = 1000;  // 8 key blocks
  p.top_k = 3;
  p.text_blocks = 1;
  p.max_kv_blocks = 3;
  p.fine_share = 0.9f;
  p.softmax_scale = 0.125f;
  EXPECT_NO_THROW(BlockSelectFamily::validate(fine, p));
  const auto expect_refused = [&](const BlockSelectConfig& config, BlockSelectParams bad, const std::string& words) {
    try {
      BlockSelectFamily::validate(config, bad);
      ADD_FAILURE() << "expected a refusal mentioning '" << words << "'";
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find(words), std::string::npos) << error.what();
    }
  };
  BlockSelectParams bad = p;
  bad.top_k = -1;
  expect_refused(fine, bad, "top_k = -1");
  bad = p;
  bad.top_k = 0;
  bad.threshold = 1.5f;
  expect_refused(fine, bad, "threshold = 1.5");
  bad = p;
  bad.text_blocks = 9;
  expect_refused(fine, bad, "text_blocks = 9");
  bad = p;
  bad.first_block_by_score = 2;
  expect_refused(fine, bad, "first_block_by_score = 2 is neither 0 nor 1");
  bad = p;
  bad.max_kv_blocks = 2;  // first + diagonal + 1 text block need 3
  expect_refused(fine, bad, "max_kv_blocks = 2 is outside 3..8");
  bad = p;
  bad.top_k = 5;  // 5 blocks need a pitch of 5
  expect_refused(fine, bad, "max_kv_blocks = 3 is outside 5..8");
  bad = p;
  bad.tokens_kv = 128 * 2049;
  bad.max_kv_blocks = 2049;
  expect_refused(fine, bad, "more than the 2048");
  bad = p;
  bad.tile_lse = nullptr;
  expect_refused(fine, bad, "tile_lse must not be null");
  bad = p;
  bad.fine_share = 0.f;
  expect_refused(fine, bad, "fine_share");
  bad = p;
  bad.pooled_k = memory + 8;
  expect_refused(fine, bad, "16-byte aligned");
  expect_refused(block_select_config(128, 128, 0), p, "without fine bits");
  bad = p;
  bad.scores = nullptr;
  expect_refused(fine, bad, "must not be null");
  bad = p;
  const int head_top_k[] = {2};
  bad.top_k_per_head = head_top_k;
  bad.top_k = 0;
  expect_refused(fine, bad, "top_k_per_head needs top_k > 0");
}

// A stratified subset compiles for sm_80 and sm_90: every block pair without fine bits, and
// every fine width, dtype, head dim and tile at least once with fine bits. The whole space
// (202 specializations) is `sparsejit precompile --family block_select`.
TEST(BlockSelectCompile, StratifiedSubsetCompilesToCubins) {
  std::vector<BlockSelectConfig> subset;
  for (int block_q : kSelectBlockSizes)
    for (int block_kv : kSelectBlockSizes) subset.push_back(block_select_config(block_q, block_kv, 0));
  subset.push_back(block_select_config(128, 128, 16, HalfDtype::bf16, 128, 16));
  subset.push_back(block_select_config(64, 128, 8, HalfDtype::fp16, 64, 32));
  subset.push_back(block_select_config(128, 64, 32, HalfDtype::bf16, 96, 8));
  for (const char* arch : {"sm_80", "sm_90"})
    for (const BlockSelectConfig& config : subset) {
      SCOPED_TRACE(config.label() + " " + arch);
      ASSERT_EQ(block_select_config_problem(config), "");
      const jit::KernelSpec spec = BlockSelectFamily::render(config, jit::Target::parse(arch));
      const jit::CompiledBinary binary = jit::compile(spec.request);
      EXPECT_GT(binary.cubin.size(), 1000u);
      EXPECT_EQ(binary.lowered_names.count(spec.name_expression), 1u);
    }
}

}  // namespace
}  // namespace sparsejit::templates
