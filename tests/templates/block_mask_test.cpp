// The block mask of sparse_attention on the host: validate_block_mask (accepts what it should,
// names every defect), random_block_mask (k per row, diagonal, order, fine bits),
// with_empty_rows, density, the fine granularity rules, and the bitmask form (conversions both
// ways, validate_block_bitmask).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <random>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "templates/common/ceil_div.h"
#include "templates/sparse_attention/block_mask.h"
#include "tests/support/gpu_test.h"

namespace sparsejit::templates {
namespace {

// "" if validate_block_mask accepts `mask`, else its message.
std::string rejection(const BlockMask& mask, int tokens_q, int tokens_kv) {
  try {
    validate_block_mask(mask, tokens_q, tokens_kv);
    return "";
  } catch (const std::invalid_argument& error) {
    return error.what();
  }
}

std::string at(int b, int h, int qb) {
  return "[b=" + std::to_string(b) + ", h=" + std::to_string(h) + ", qb=" + std::to_string(qb) + "]";
}
std::string at(int b, int h, int qb, int i) {
  return "[b=" + std::to_string(b) + ", h=" + std::to_string(h) + ", qb=" + std::to_string(qb) +
         ", i=" + std::to_string(i) + "]";
}

// A random row (b, h, qb) of `mask` and its position in count.
struct Row {
  int b, h, qb;
  std::size_t r;
};
Row random_row(const BlockMask& mask, std::mt19937_64& generator) {
  const auto pick = [&](int n) { return std::uniform_int_distribution<int>(0, n - 1)(generator); };
  Row row{pick(mask.batch), pick(mask.heads), pick(mask.q_blocks), 0};
  row.r = mask.row(row.b, row.h, row.qb);
  return row;
}

// The same mask with index and fine_bits re-pitched to `pitch` >= max_kv_blocks entries per
// row; the new padding holds garbage that no reader may look at.
BlockMask widened(const BlockMask& mask, int pitch) {
  BlockMask wide = mask;
  wide.max_kv_blocks = pitch;
  wide.index.assign(mask.count.size() * static_cast<std::size_t>(pitch), -77);
  if (mask.fine_n != 0) wide.fine_bits.assign(wide.index.size(), ~std::uint64_t{0});
  for (std::size_t r = 0; r < mask.count.size(); ++r)
    for (int i = 0; i < mask.max_kv_blocks; ++i) {
      const std::size_t from = r * static_cast<std::size_t>(mask.max_kv_blocks) + static_cast<std::size_t>(i);
      const std::size_t to = r * static_cast<std::size_t>(pitch) + static_cast<std::size_t>(i);
      wide.index[to] = mask.index[from];
      if (mask.fine_n != 0) wide.fine_bits[to] = mask.fine_bits[from];
    }
  return wide;
}

TEST(FineGranularity, SubtileCountsAndValidity) {
  EXPECT_EQ(fine_subtiles(64, 128, 16), 32);
  EXPECT_EQ(fine_subtiles(128, 128, 16), 64);
  EXPECT_EQ(fine_subtiles(128, 128, 8), 128);
  EXPECT_EQ(fine_subtiles(64, 64, 8), 32);
  EXPECT_EQ(fine_subtiles(128, 64, 32), 16);
  EXPECT_EQ(fine_subtiles(64, 64, 0), 0);
  EXPECT_TRUE(fine_granularity_valid(64, 128, 8));   // 64 sub-tiles: the limit
  EXPECT_TRUE(fine_granularity_valid(128, 64, 8));
  EXPECT_TRUE(fine_granularity_valid(128, 128, 16));
  EXPECT_TRUE(fine_granularity_valid(128, 128, 32));
  EXPECT_TRUE(fine_granularity_valid(16, 8, 8));
  EXPECT_TRUE(fine_granularity_valid(64, 120, 8));   // 4 x 15 sub-tiles
  EXPECT_FALSE(fine_granularity_valid(128, 128, 8)) << "128 sub-tiles do not fit in a uint64";
  EXPECT_FALSE(fine_granularity_valid(64, 64, 12)) << "fine_n outside {8, 16, 32}";
  EXPECT_FALSE(fine_granularity_valid(64, 64, 64));
  EXPECT_FALSE(fine_granularity_valid(64, 64, 0));
  EXPECT_FALSE(fine_granularity_valid(40, 64, 16)) << "block_q not a multiple of 16";
  EXPECT_FALSE(fine_granularity_valid(64, 120, 16)) << "block_kv not a multiple of fine_n";
  EXPECT_FALSE(fine_granularity_valid(0, 64, 16));
  EXPECT_FALSE(fine_granularity_valid(64, 0, 16));
}

TEST(KeptBlocksPerRow, IsCeilOfDensityTimesBlocksClamped) {
  EXPECT_EQ(kept_blocks_per_row(0.7, 10), 7) << "0.7 * 10 is 7.000000000000001 in double";
  EXPECT_EQ(kept_blocks_per_row(0.3, 10), 3);
  EXPECT_EQ(kept_blocks_per_row(0.31, 10), 4);
  EXPECT_EQ(kept_blocks_per_row(0.5, 3), 2);
  EXPECT_EQ(kept_blocks_per_row(0.01, 3), 1);
  EXPECT_EQ(kept_blocks_per_row(0.0, 5), 0);
  EXPECT_EQ(kept_blocks_per_row(1.0, 5), 5);
  EXPECT_EQ(kept_blocks_per_row(1.0, 1), 1);
  EXPECT_EQ(kept_blocks_per_row(0.3, 591), 178);  // Wan2.1 720p: 75,600 / 128 blocks
}

TEST(BlockMaskDensity, IsKeptPairsOverAllPairs) {
  BlockMask mask;
  mask.batch = 1;
  mask.heads = 2;
  mask.q_blocks = 2;
  mask.kv_blocks = 4;
  mask.max_kv_blocks = 3;
  mask.block_q = mask.block_kv = 64;
  mask.count = {3, 0, 1, 2};
  mask.index = {0, 1, 3, 9, 9, 9, 2, 9, 9, 0, 3, 9};
  EXPECT_EQ(rejection(mask, 128, 256), "");
  EXPECT_DOUBLE_EQ(mask.density(), 6.0 / 16.0);
  EXPECT_EQ(std::vector<int>(mask.kept_blocks(0, 0, 0).begin(), mask.kept_blocks(0, 0, 0).end()),
            (std::vector<int>{0, 1, 3}));
  EXPECT_TRUE(mask.kept_blocks(0, 0, 1).empty());
  EXPECT_EQ(std::vector<int>(mask.kept_blocks(0, 1, 1).begin(), mask.kept_blocks(0, 1, 1).end()),
            (std::vector<int>{0, 3}));
  EXPECT_EQ(BlockMask{}.density(), 0.0);
}

// Random masks of many shapes (ragged token counts, both block sizes, every fine_n that the
// blocks allow, empty rows, wider padding) pass.
TEST(ValidateBlockMask, AcceptsRandomMasks) {
  std::mt19937_64 generator = testing::fresh_generator();
  int checked = 0;
  for (int tokens_q : {1, 7, 37, 200, 1000})
    for (int tokens_kv : {1, 64, 129, 777})
      for (int block_q : {64, 128})
        for (int block_kv : {64, 128})
          for (int fine_n : {0, 8, 16, 32}) {
            if (fine_n != 0 && !fine_granularity_valid(block_q, block_kv, fine_n)) continue;
            for (double density : {0.0, 0.1, 0.5, 1.0}) {
              const BlockMask mask = random_block_mask(2, 3, tokens_q, tokens_kv, block_q, block_kv,
                                                       density, generator, true, fine_n, 0.3);
              SCOPED_TRACE("tokens " + std::to_string(tokens_q) + "x" + std::to_string(tokens_kv) +
                           " blocks " + std::to_string(block_q) + "x" + std::to_string(block_kv) +
                           " fine_n " + std::to_string(fine_n) + " density " + std::to_string(density));
              EXPECT_EQ(rejection(mask, tokens_q, tokens_kv), "");
              EXPECT_EQ(rejection(with_empty_rows(mask, 0.3, generator), tokens_q, tokens_kv), "");
              EXPECT_EQ(rejection(widened(mask, mask.max_kv_blocks + 3), tokens_q, tokens_kv), "");
              ++checked;
            }
          }
  EXPECT_GT(checked, 300);
}

// The base of the defect tests: B=2, H=3, 200 queries in QB=4 blocks of 64, 300 keys in KB=3
// blocks of 128, 2 kept blocks per row (max_kv_blocks = 2 < KB), fine_n 16 (32 sub-tiles).
constexpr int kTokensQ = 200, kTokensKv = 300;
BlockMask defect_base(std::mt19937_64& generator, int fine_n) {
  BlockMask mask = random_block_mask(2, 3, kTokensQ, kTokensKv, 64, 128, 0.5, generator, true, fine_n, 0.5);
  EXPECT_EQ(mask.q_blocks, 4);
  EXPECT_EQ(mask.kv_blocks, 3);
  EXPECT_EQ(mask.max_kv_blocks, 2);
  EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv), "");
  return mask;
}

TEST(ValidateBlockMask, RejectsBadCountsNamingTheRow) {
  std::mt19937_64 generator = testing::fresh_generator();
  for (int fine_n : {0, 16}) {
    const BlockMask base = defect_base(generator, fine_n);
    const Row row = random_row(base, generator);
    const std::string bounds = " is outside 0..2 (max_kv_blocks = 2, kv_blocks = 3)";
    BlockMask mask = base;
    mask.count[row.r] = -1;
    EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv), "block mask: count" + at(row.b, row.h, row.qb) + " = -1" + bounds);
    mask.count[row.r] = 3;  // > max_kv_blocks (== kv_blocks here)
    EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv), "block mask: count" + at(row.b, row.h, row.qb) + " = 3" + bounds);
    // Padding wider than KB is fine, but a count above KB is not.
    BlockMask wide = widened(base, 5);
    EXPECT_EQ(rejection(wide, kTokensQ, kTokensKv), "");
    wide.count[row.r] = 4;
    EXPECT_EQ(rejection(wide, kTokensQ, kTokensKv),
              "block mask: count" + at(row.b, row.h, row.qb) +
                  " = 4 is outside 0..3 (max_kv_blocks = 5, kv_blocks = 3)");
  }
}

TEST(ValidateBlockMask, RejectsBadIndicesNamingTheEntry) {
  std::mt19937_64 generator = testing::fresh_generator();
  for (int fine_n : {0, 16}) {
    const BlockMask base = defect_base(generator, fine_n);
    const Row row = random_row(base, generator);
    const std::size_t first = row.r * 2;  // entries first, first + 1 are the row's 2 kept blocks
    const int kept0 = base.index[first], kept1 = base.index[first + 1];
    ASSERT_LT(kept0, kept1);

    BlockMask mask = base;
    mask.index[first + 1] = 3;  // == kv_blocks
    EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv),
              "block mask: index" + at(row.b, row.h, row.qb, 1) + " = 3 is outside 0..2");
    mask = base;
    mask.index[first] = -1;
    EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv),
              "block mask: index" + at(row.b, row.h, row.qb, 0) + " = -1 is outside 0..2");
    mask = base;
    mask.index[first + 1] = kept0;  // repeated
    EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv),
              "block mask: index" + at(row.b, row.h, row.qb, 1) + " = " + std::to_string(kept0) +
                  " does not exceed the previous entry " + std::to_string(kept0) +
                  " (kept blocks must be strictly ascending)");
    mask = base;
    std::swap(mask.index[first], mask.index[first + 1]);  // descending
    EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv),
              "block mask: index" + at(row.b, row.h, row.qb, 1) + " = " + std::to_string(kept0) +
                  " does not exceed the previous entry " + std::to_string(kept1) +
                  " (kept blocks must be strictly ascending)");
    // Entries past count are padding: garbage there is not an error.
    mask = base;
    mask.count[row.r] = 1;
    mask.index[first + 1] = -5;
    if (fine_n != 0) mask.fine_bits[first + 1] = ~std::uint64_t{0};
    EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv), "");
  }
}

TEST(ValidateBlockMask, RejectsWrongSizesAndBlockCounts) {
  std::mt19937_64 generator = testing::fresh_generator();
  const BlockMask base = defect_base(generator, 0);
  const BlockMask fine = defect_base(generator, 16);
  BlockMask mask = base;
  mask.count.pop_back();
  EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv),
            "block mask: count has 23 entries, expected batch*heads*q_blocks = 24");
  mask = base;
  mask.index.push_back(0);
  EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv),
            "block mask: index has 49 entries, expected batch*heads*q_blocks*max_kv_blocks = 48");
  mask = base;
  mask.max_kv_blocks = 3;  // index still has pitch 2
  EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv),
            "block mask: index has 48 entries, expected batch*heads*q_blocks*max_kv_blocks = 72");
  mask = fine;
  mask.fine_bits.pop_back();
  EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv),
            "block mask: fine_bits has 47 entries, expected batch*heads*q_blocks*max_kv_blocks = 48");
  mask = base;
  mask.fine_bits.assign(48, 1);  // bits without a granularity
  EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv),
            "block mask: fine_bits has 48 entries, expected none (fine_n = 0)");
  mask = base;
  mask.max_kv_blocks = -1;
  EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv), "block mask: max_kv_blocks = -1 is negative");

  // q_blocks / kv_blocks against the token counts: 193..256 queries are 4 blocks of 64,
  // 257..384 keys are 3 blocks of 128.
  EXPECT_EQ(rejection(base, 193, 257), "");
  EXPECT_EQ(rejection(base, 256, 384), "");
  EXPECT_EQ(rejection(base, 257, kTokensKv),
            "block mask: q_blocks = 4, expected ceil(tokens_q 257 / block_q 64) = 5");
  EXPECT_EQ(rejection(base, 192, kTokensKv),
            "block mask: q_blocks = 4, expected ceil(tokens_q 192 / block_q 64) = 3");
  EXPECT_EQ(rejection(base, kTokensQ, 385),
            "block mask: kv_blocks = 3, expected ceil(tokens_kv 385 / block_kv 128) = 4");
  mask = base;
  mask.kv_blocks = 2;
  EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv),
            "block mask: kv_blocks = 2, expected ceil(tokens_kv 300 / block_kv 128) = 3");

  for (auto [field, name] : {std::pair{&BlockMask::batch, "batch"}, {&BlockMask::heads, "heads"},
                             {&BlockMask::block_q, "block_q"}, {&BlockMask::block_kv, "block_kv"}}) {
    mask = base;
    mask.*field = 0;
    EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv), std::string("block mask: ") + name + " = 0 must be positive");
  }
  EXPECT_EQ(rejection(base, 0, kTokensKv), "block mask: tokens_q = 0 must be positive");
  EXPECT_EQ(rejection(base, kTokensQ, -3), "block mask: tokens_kv = -3 must be positive");
}

TEST(ValidateBlockMask, RejectsBadFineGranularityAndStrayBits) {
  std::mt19937_64 generator = testing::fresh_generator();
  const BlockMask fine = defect_base(generator, 16);
  const std::string rules =
      " blocks (fine_n in {8, 16, 32}, block_q % 16 == 0, block_kv % fine_n == 0, at most 64 sub-tiles)";
  for (int bad : {12, 64, -8}) {
    BlockMask mask = fine;
    mask.fine_n = bad;
    EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv),
              "block mask: fine_n = " + std::to_string(bad) + " is not valid for 64x128" + rules);
  }
  // 128 x 128 blocks at fine_n 8 would need 128 bits.
  BlockMask big = random_block_mask(1, 1, 300, 300, 128, 128, 1.0, generator, true, 16);
  EXPECT_EQ(rejection(big, 300, 300), "");
  big.fine_n = 8;
  EXPECT_EQ(rejection(big, 300, 300), "block mask: fine_n = 8 is not valid for 128x128" + rules);

  // 64 x 128 at fine_n 16: 32 sub-tiles, so bits 32..63 must be clear in kept pairs.
  for (int bit : {32, 63}) {
    const Row row = random_row(fine, generator);
    const int i = std::uniform_int_distribution<int>(0, 1)(generator);
    BlockMask mask = fine;
    std::uint64_t& word = mask.fine_bits[row.r * 2 + static_cast<std::size_t>(i)];
    word |= std::uint64_t{1} << bit;
    char hex[32];
    std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(word));
    EXPECT_EQ(rejection(mask, kTokensQ, kTokensKv), "block mask: fine_bits" + at(row.b, row.h, row.qb, i) +
                                                        " = " + hex +
                                                        " sets bits at or above fine_subtiles = 32");
  }
  // A kept pair with no fine bit set is valid (it contributes no key).
  BlockMask zero = fine;
  zero.fine_bits[5] = 0;
  EXPECT_EQ(rejection(zero, kTokensQ, kTokensKv), "");
}

// Every row keeps exactly ceil(density * KB) distinct blocks in ascending order, the diagonal
// among them; across rows the choice varies.
TEST(RandomBlockMask, KeepsTheRequestedBlocksPerRowWithTheDiagonal) {
  std::mt19937_64 generator = testing::fresh_generator();
  for (int tokens_q : {1, 37, 200, 1000})
    for (int tokens_kv : {7, 129, 1000})
      for (auto [block_q, block_kv] : {std::pair{64, 64}, {64, 128}, {128, 64}, {128, 128}})
        for (double density : {0.0, 0.05, 0.3, 0.5, 1.0}) {
          const BlockMask mask =
              random_block_mask(2, 3, tokens_q, tokens_kv, block_q, block_kv, density, generator);
          const int qb_count = ceil_div(tokens_q, block_q), kb_count = ceil_div(tokens_kv, block_kv);
          SCOPED_TRACE("tokens " + std::to_string(tokens_q) + "x" + std::to_string(tokens_kv) + " blocks " +
                       std::to_string(block_q) + "x" + std::to_string(block_kv) + " density " +
                       std::to_string(density));
          ASSERT_EQ(mask.q_blocks, qb_count);
          ASSERT_EQ(mask.kv_blocks, kb_count);
          const int k = kept_blocks_per_row(density, kb_count);
          EXPECT_EQ(mask.max_kv_blocks, k);
          EXPECT_TRUE(mask.fine_bits.empty());
          EXPECT_NEAR(mask.density(), static_cast<double>(k) / kb_count, 1e-12);
          for (int b = 0; b < 2; ++b)
            for (int h = 0; h < 3; ++h)
              for (int qb = 0; qb < qb_count; ++qb) {
                const std::span<const int> kept = mask.kept_blocks(b, h, qb);
                ASSERT_EQ(static_cast<int>(kept.size()), k);
                EXPECT_TRUE(std::is_sorted(kept.begin(), kept.end()));
                EXPECT_EQ(std::set<int>(kept.begin(), kept.end()).size(), kept.size()) << "distinct";
                for (int kb : kept) {
                  EXPECT_GE(kb, 0);
                  EXPECT_LT(kb, kb_count);
                }
                const int diagonal = std::min(qb * block_q / block_kv, kb_count - 1);
                if (k > 0) {
                  EXPECT_TRUE(std::binary_search(kept.begin(), kept.end(), diagonal)) << at(b, h, qb);
                }
              }
          EXPECT_EQ(rejection(mask, tokens_q, tokens_kv), "");
        }
  EXPECT_EQ(kept_blocks_per_row(0.05, 16), 1);
  // With one block of 40 kept per row, 60 rows that keep no diagonal pick different blocks
  // (all equal: probability 40^-59).
  const BlockMask sparse = random_block_mask(2, 3, 640, 40 * 64, 64, 64, 0.025, generator, false);
  ASSERT_EQ(sparse.max_kv_blocks, 1);
  EXPECT_GT(std::set<int>(sparse.index.begin(), sparse.index.end()).size(), 1u);
  int diagonal_rows = 0;
  for (int qb = 0; qb < 10; ++qb)
    for (int bh = 0; bh < 6; ++bh) diagonal_rows += sparse.kept_blocks(bh / 3, bh % 3, qb)[0] == qb;
  EXPECT_LT(diagonal_rows, 60) << "keep_diagonal = false still kept every diagonal";
}

// Fine words have bits only below fine_subtiles and never 0; fine_density 1 sets every
// sub-tile, 0 exactly one, 0.5 about half.
TEST(RandomBlockMask, FineBitsStayInRangeAndNeverEmptyAPair) {
  std::mt19937_64 generator = testing::fresh_generator();
  for (auto [block_q, block_kv] : {std::pair{64, 64}, {64, 128}, {128, 64}, {128, 128}})
    for (int fine_n : {8, 16, 32}) {
      if (!fine_granularity_valid(block_q, block_kv, fine_n)) continue;
      const int subtiles = fine_subtiles(block_q, block_kv, fine_n);
      const std::uint64_t allowed = subtiles == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << subtiles) - 1;
      for (double fine_density : {0.0, 0.5, 1.0}) {
        SCOPED_TRACE("blocks " + std::to_string(block_q) + "x" + std::to_string(block_kv) + " fine_n " +
                     std::to_string(fine_n) + " fine_density " + std::to_string(fine_density));
        const BlockMask mask = random_block_mask(2, 3, 1000, 1100, block_q, block_kv, 0.4, generator,
                                                 true, fine_n, fine_density);
        ASSERT_EQ(mask.fine_n, fine_n);
        ASSERT_EQ(mask.fine_bits.size(), mask.index.size());
        ASSERT_FALSE(mask.fine_bits.empty());
        long long set_bits = 0;
        for (std::uint64_t word : mask.fine_bits) {
          EXPECT_NE(word, 0u);
          EXPECT_EQ(word & ~allowed, 0u);
          const int bits = std::popcount(word);
          set_bits += bits;
          if (fine_density == 1.0) {
            EXPECT_EQ(word, allowed);
          }
          if (fine_density == 0.0) {
            EXPECT_EQ(bits, 1);
          }
        }
        if (fine_density == 0.5) {
          const double fraction = static_cast<double>(set_bits) /
                                  (static_cast<double>(mask.fine_bits.size()) * subtiles);
          EXPECT_NEAR(fraction, 0.5, 0.05);
        }
        EXPECT_EQ(rejection(mask, 1000, 1100), "");
      }
    }
}

TEST(RandomBlockMask, RejectsBadArguments) {
  std::mt19937_64 generator = testing::fresh_generator();
  const auto message = [&](auto&& make) -> std::string {
    try {
      make();
      return "";
    } catch (const std::invalid_argument& error) {
      return error.what();
    }
  };
  EXPECT_EQ(message([&] { random_block_mask(0, 1, 10, 10, 64, 64, 0.5, generator); }),
            "block mask: batch = 0 must be positive");
  EXPECT_EQ(message([&] { random_block_mask(1, 1, 10, 10, 64, -64, 0.5, generator); }),
            "block mask: block_kv = -64 must be positive");
  EXPECT_EQ(message([&] { random_block_mask(1, 1, 10, 10, 64, 64, 1.5, generator); }),
            "block mask: density = 1.500000 is outside [0, 1]");
  EXPECT_EQ(message([&] { random_block_mask(1, 1, 10, 10, 64, 64, -0.1, generator); }),
            "block mask: density = -0.100000 is outside [0, 1]");
  EXPECT_EQ(message([&] { random_block_mask(1, 1, 10, 10, 128, 128, 0.5, generator, true, 8); }),
            "block mask: fine_n = 8 is not valid for 128x128 blocks");
  EXPECT_EQ(message([&] { random_block_mask(1, 1, 10, 10, 64, 64, 0.5, generator, true, 16, 2.0); }),
            "block mask: fine_density = 2.000000 is outside [0, 1]");
}

// ceil(fraction * rows) rows (at least one for any fraction > 0) get count 0; the rest keep
// their blocks; the mask stays valid.
TEST(WithEmptyRows, EmptiesTheRequestedShareOfRows) {
  std::mt19937_64 generator = testing::fresh_generator();
  const BlockMask mask = random_block_mask(2, 3, 1000, 500, 64, 128, 0.5, generator, true, 16, 0.5);
  const std::size_t rows = mask.count.size();  // 2 * 3 * 16 = 96
  ASSERT_EQ(rows, 96u);
  for (double fraction : {0.0, 0.001, 0.25, 0.5, 1.0}) {
    const BlockMask emptied = with_empty_rows(mask, fraction, generator);
    const auto zero_rows = static_cast<std::size_t>(std::count(emptied.count.begin(), emptied.count.end(), 0));
    const std::size_t expected = fraction == 0.001 ? 1 : static_cast<std::size_t>(fraction * 96);
    EXPECT_EQ(zero_rows, expected) << "fraction " << fraction;
    for (std::size_t r = 0; r < rows; ++r)
      if (emptied.count[r] != 0) {
        EXPECT_EQ(emptied.count[r], mask.count[r]);
      }
    EXPECT_EQ(emptied.index, mask.index) << "stale entries stay as padding";
    EXPECT_NEAR(emptied.density(), mask.density() * static_cast<double>(rows - expected) / rows, 1e-12);
    EXPECT_EQ(rejection(emptied, 1000, 500), "");
  }
  EXPECT_THROW(with_empty_rows(mask, 1.5, generator), std::invalid_argument);
}

// Key-block counts on both sides of word boundaries (63, 64, 65, 130) and ragged last blocks.
TEST(BlockBitmask, RoundTripsThroughTheListForm) {
  std::mt19937_64 generator = testing::fresh_generator();
  for (const int tokens_kv : {900, 63 * 64, 64 * 64, 65 * 64 - 7, 130 * 64}) {
    for (const double density : {1.0, 0.3, 0.02}) {
      SCOPED_TRACE("tokens_kv " + std::to_string(tokens_kv) + " density " + std::to_string(density));
      BlockMask mask = random_block_mask(2, 3, 700, tokens_kv, 64, 64, density, generator);
      mask = with_empty_rows(std::move(mask), 0.2, generator);
      const BlockBitmask bitmask = to_bitmask(mask);
      ASSERT_EQ(bitmask.words_per_row, ceil_div(mask.kv_blocks, 64));
      ASSERT_EQ(bitmask.bits.size(), mask.count.size() * static_cast<std::size_t>(bitmask.words_per_row));
      EXPECT_NO_THROW(validate_block_bitmask(bitmask, 700, tokens_kv, 64, 64));
      const BlockMask back = to_block_mask(bitmask, 64, 64, mask.max_kv_blocks);
      EXPECT_NO_THROW(validate_block_mask(back, 700, tokens_kv));
      for (int b = 0; b < 2; ++b)
        for (int h = 0; h < 3; ++h)
          for (int qb = 0; qb < mask.q_blocks; ++qb) {
            const std::span<const int> expected = mask.kept_blocks(b, h, qb), actual = back.kept_blocks(b, h, qb);
            ASSERT_TRUE(std::equal(expected.begin(), expected.end(), actual.begin(), actual.end())) << at(b, h, qb);
            ASSERT_EQ(bitmask.kept_count(b, h, qb), static_cast<int>(expected.size())) << at(b, h, qb);
            for (int kb : expected) ASSERT_TRUE(bitmask.kept(b, h, qb, kb)) << at(b, h, qb) << " block " << kb;
          }
    }
  }
}

TEST(BlockBitmask, ListFormRefusesARowLongerThanItsPitch) {
  std::mt19937_64 generator = testing::fresh_generator();
  const BlockMask mask = random_block_mask(1, 2, 500, 500, 64, 64, 0.5, generator);  // 4 of 8 blocks a row
  const BlockBitmask bitmask = to_bitmask(mask);
  try {
    (void)to_block_mask(bitmask, 64, 64, 3);
    FAIL() << "rows of 4 kept blocks do not fit max_kv_blocks = 3";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("row[b=0, h=0, qb=0] keeps 4 key blocks, more than max_kv_blocks = 3"),
              std::string::npos)
        << error.what();
  }
}

TEST(ValidateBlockBitmask, NamesEveryDefect) {
  std::mt19937_64 generator = testing::fresh_generator();
  const BlockBitmask good = to_bitmask(random_block_mask(1, 2, 300, 70 * 64 - 5, 128, 64, 0.4, generator));
  const auto rejection_of = [](const BlockBitmask& bitmask, int tokens_kv) -> std::string {
    try {
      validate_block_bitmask(bitmask, 300, tokens_kv, 128, 64);
      return "";
    } catch (const std::invalid_argument& error) {
      return error.what();
    }
  };
  ASSERT_EQ(rejection_of(good, 70 * 64 - 5), "");
  BlockBitmask bad = good;  // 70 key blocks: bit 6 of word 1 is block 70, one past the last
  bad.bits[good.row(0, 1, 2) * 2 + 1] |= std::uint64_t{1} << 6;
  EXPECT_NE(rejection_of(bad, 70 * 64 - 5).find("bits[b=0, h=1, qb=2] word 1"), std::string::npos);
  bad = good;
  bad.words_per_row = 3;
  EXPECT_NE(rejection_of(bad, 70 * 64 - 5).find("words_per_row = 3, expected ceil(kv_blocks 70 / 64) = 2"),
            std::string::npos);
  bad = good;
  bad.bits.pop_back();
  EXPECT_NE(rejection_of(bad, 70 * 64 - 5).find("bits has"), std::string::npos);
  EXPECT_NE(rejection_of(good, 80 * 64).find("kv_blocks = 70, expected"), std::string::npos);
}

}  // namespace
}  // namespace sparsejit::templates
