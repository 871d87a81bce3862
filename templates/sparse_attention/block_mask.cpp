#include "templates/sparse_attention/block_mask.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>

#include "templates/common/ceil_div.h"

namespace sparsejit::templates {
namespace {

[[noreturn]] void refuse(const std::string& why) {
  throw std::invalid_argument("block mask: " + why);
}

std::string position(int b, int h, int qb) {
  return "[b=" + std::to_string(b) + ", h=" + std::to_string(h) + ", qb=" + std::to_string(qb) + "]";
}
std::string position(int b, int h, int qb, int i) {
  return "[b=" + std::to_string(b) + ", h=" + std::to_string(h) + ", qb=" + std::to_string(qb) +
         ", i=" + std::to_string(i) + "]";
}

std::string hex(std::uint64_t value) {
  std::ostringstream out;
  out << "0x" << std::hex << value;
  return out.str();
}

// Bits 0..count-1 set (count in 1..64).
std::uint64_t low_bits(int count) {
  return count >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << count) - 1;
}

void expect_size(const char* name, std::size_t actual, std::size_t expected, const std::string& formula) {
  if (actual != expected)
    refuse(std::string(name) + " has " + std::to_string(actual) + " entries, expected " + formula +
           " = " + std::to_string(expected));
}

void require_positive(const char* name, long long value) {
  if (value <= 0) refuse(std::string(name) + " = " + std::to_string(value) + " must be positive");
}

// The sizes both mask forms share: positive batch, heads, tokens and block sizes (below), and
// block counts that are the ceil-divisions (require_grid).
void require_positive_sizes(int batch, int heads, int tokens_q, int tokens_kv, int block_q, int block_kv) {
  require_positive("batch", batch);
  require_positive("heads", heads);
  require_positive("tokens_q", tokens_q);
  require_positive("tokens_kv", tokens_kv);
  require_positive("block_q", block_q);
  require_positive("block_kv", block_kv);
}

void require_grid(int batch, int heads, int q_blocks, int kv_blocks, int tokens_q, int tokens_kv,
                  int block_q, int block_kv) {
  require_positive_sizes(batch, heads, tokens_q, tokens_kv, block_q, block_kv);
  if (q_blocks != ceil_div(tokens_q, block_q))
    refuse("q_blocks = " + std::to_string(q_blocks) + ", expected ceil(tokens_q " + std::to_string(tokens_q) +
           " / block_q " + std::to_string(block_q) + ") = " + std::to_string(ceil_div(tokens_q, block_q)));
  if (kv_blocks != ceil_div(tokens_kv, block_kv))
    refuse("kv_blocks = " + std::to_string(kv_blocks) + ", expected ceil(tokens_kv " +
           std::to_string(tokens_kv) + " / block_kv " + std::to_string(block_kv) + ") = " +
           std::to_string(ceil_div(tokens_kv, block_kv)));
}

}  // namespace

int BlockBitmask::kept_count(int b, int h, int qb) const {
  const std::size_t first = row(b, h, qb) * static_cast<std::size_t>(words_per_row);
  int count = 0;
  for (int w = 0; w < words_per_row; ++w) count += std::popcount(bits[first + static_cast<std::size_t>(w)]);
  return count;
}

int bitmask_words(int kv_blocks) { return ceil_div(kv_blocks, 64); }

BlockBitmask to_bitmask(const BlockMask& mask) {
  BlockBitmask bitmask;
  bitmask.batch = mask.batch;
  bitmask.heads = mask.heads;
  bitmask.q_blocks = mask.q_blocks;
  bitmask.kv_blocks = mask.kv_blocks;
  bitmask.words_per_row = bitmask_words(mask.kv_blocks);
  const std::size_t rows = static_cast<std::size_t>(mask.batch) * mask.heads * mask.q_blocks;
  bitmask.bits.assign(rows * static_cast<std::size_t>(bitmask.words_per_row), 0);
  for (std::size_t r = 0; r < rows; ++r)
    for (int i = 0; i < mask.count[r]; ++i) {
      const int kb = mask.index[r * static_cast<std::size_t>(mask.max_kv_blocks) + static_cast<std::size_t>(i)];
      bitmask.bits[r * static_cast<std::size_t>(bitmask.words_per_row) + static_cast<std::size_t>(kb / 64)] |=
          std::uint64_t{1} << (kb % 64);
    }
  return bitmask;
}

BlockMask to_block_mask(const BlockBitmask& bitmask, int block_q, int block_kv, int max_kv_blocks) {
  BlockMask mask;
  mask.batch = bitmask.batch;
  mask.heads = bitmask.heads;
  mask.q_blocks = bitmask.q_blocks;
  mask.kv_blocks = bitmask.kv_blocks;
  mask.max_kv_blocks = max_kv_blocks;
  mask.block_q = block_q;
  mask.block_kv = block_kv;
  const std::size_t rows = static_cast<std::size_t>(mask.batch) * mask.heads * mask.q_blocks;
  mask.count.assign(rows, 0);
  mask.index.assign(rows * static_cast<std::size_t>(std::max(max_kv_blocks, 0)), 0);
  for (int b = 0; b < mask.batch; ++b)
    for (int h = 0; h < mask.heads; ++h)
      for (int qb = 0; qb < mask.q_blocks; ++qb) {
        const std::size_t r = mask.row(b, h, qb);
        const int count = bitmask.kept_count(b, h, qb);
        if (count > max_kv_blocks)
          refuse("bitmask row" + position(b, h, qb) + " keeps " + std::to_string(count) +
                 " key blocks, more than max_kv_blocks = " + std::to_string(max_kv_blocks));
        for (int kb = 0; kb < bitmask.kv_blocks; ++kb)
          if (bitmask.kept(b, h, qb, kb))
            mask.index[r * static_cast<std::size_t>(max_kv_blocks) + static_cast<std::size_t>(mask.count[r]++)] = kb;
      }
  return mask;
}

void validate_block_bitmask(const BlockBitmask& bitmask, int tokens_q, int tokens_kv, int block_q,
                            int block_kv) {
  require_grid(bitmask.batch, bitmask.heads, bitmask.q_blocks, bitmask.kv_blocks, tokens_q, tokens_kv,
               block_q, block_kv);
  if (bitmask.words_per_row != bitmask_words(bitmask.kv_blocks))
    refuse("words_per_row = " + std::to_string(bitmask.words_per_row) + ", expected ceil(kv_blocks " +
           std::to_string(bitmask.kv_blocks) + " / 64) = " + std::to_string(bitmask_words(bitmask.kv_blocks)));
  const std::size_t rows = static_cast<std::size_t>(bitmask.batch) * static_cast<std::size_t>(bitmask.heads) *
                           static_cast<std::size_t>(bitmask.q_blocks);
  expect_size("bits", bitmask.bits.size(), rows * static_cast<std::size_t>(bitmask.words_per_row),
              "batch*heads*q_blocks*words_per_row");
  // Only the last word of a row can hold bits at or above kv_blocks.
  const int last = bitmask.words_per_row - 1;
  const int used_in_last = bitmask.kv_blocks - 64 * last;
  const std::uint64_t beyond = ~low_bits(used_in_last);
  for (int b = 0; b < bitmask.batch; ++b)
    for (int h = 0; h < bitmask.heads; ++h)
      for (int qb = 0; qb < bitmask.q_blocks; ++qb) {
        const std::uint64_t word =
            bitmask.bits[bitmask.row(b, h, qb) * static_cast<std::size_t>(bitmask.words_per_row) +
                         static_cast<std::size_t>(last)];
        if ((word & beyond) != 0)
          refuse("bits" + position(b, h, qb) + " word " + std::to_string(last) + " = " + hex(word) +
                 " keeps key blocks at or above kv_blocks = " + std::to_string(bitmask.kv_blocks));
      }
}

double BlockMask::density() const {
  const double pairs = static_cast<double>(batch) * heads * q_blocks * kv_blocks;
  if (pairs <= 0) return 0.0;
  return static_cast<double>(std::accumulate(count.begin(), count.end(), 0LL)) / pairs;
}

int fine_subtiles(int block_q, int block_kv, int fine_n) {
  if (fine_n <= 0) return 0;
  return (block_q / 16) * (block_kv / fine_n);
}

bool fine_granularity_valid(int block_q, int block_kv, int fine_n) {
  if (fine_n != 8 && fine_n != 16 && fine_n != 32) return false;
  if (block_q <= 0 || block_q % 16 != 0) return false;
  if (block_kv <= 0 || block_kv % fine_n != 0) return false;
  return fine_subtiles(block_q, block_kv, fine_n) <= 64;
}

void validate_block_mask(const BlockMask& mask, int tokens_q, int tokens_kv) {
  require_grid(mask.batch, mask.heads, mask.q_blocks, mask.kv_blocks, tokens_q, tokens_kv, mask.block_q,
               mask.block_kv);
  if (mask.max_kv_blocks < 0)
    refuse("max_kv_blocks = " + std::to_string(mask.max_kv_blocks) + " is negative");
  if (mask.fine_n != 0 && !fine_granularity_valid(mask.block_q, mask.block_kv, mask.fine_n))
    refuse("fine_n = " + std::to_string(mask.fine_n) + " is not valid for " +
           std::to_string(mask.block_q) + "x" + std::to_string(mask.block_kv) +
           " blocks (fine_n in {8, 16, 32}, block_q % 16 == 0, block_kv % fine_n == 0, at most 64 "
           "sub-tiles)");

  const std::size_t rows = static_cast<std::size_t>(mask.batch) * static_cast<std::size_t>(mask.heads) *
                           static_cast<std::size_t>(mask.q_blocks);
  const std::size_t entries = rows * static_cast<std::size_t>(mask.max_kv_blocks);
  expect_size("count", mask.count.size(), rows, "batch*heads*q_blocks");
  expect_size("index", mask.index.size(), entries, "batch*heads*q_blocks*max_kv_blocks");
  if (mask.fine_n == 0 && !mask.fine_bits.empty())
    refuse("fine_bits has " + std::to_string(mask.fine_bits.size()) +
           " entries, expected none (fine_n = 0)");
  if (mask.fine_n != 0)
    expect_size("fine_bits", mask.fine_bits.size(), entries, "batch*heads*q_blocks*max_kv_blocks");

  const int count_limit = std::min(mask.max_kv_blocks, mask.kv_blocks);
  const std::uint64_t allowed_bits =
      mask.fine_n == 0 ? 0 : low_bits(fine_subtiles(mask.block_q, mask.block_kv, mask.fine_n));
  for (int b = 0; b < mask.batch; ++b)
    for (int h = 0; h < mask.heads; ++h)
      for (int qb = 0; qb < mask.q_blocks; ++qb) {
        const std::size_t r = mask.row(b, h, qb);
        const int count = mask.count[r];
        if (count < 0 || count > count_limit)
          refuse("count" + position(b, h, qb) + " = " + std::to_string(count) + " is outside 0.." +
                 std::to_string(count_limit) + " (max_kv_blocks = " + std::to_string(mask.max_kv_blocks) +
                 ", kv_blocks = " + std::to_string(mask.kv_blocks) + ")");
        for (int i = 0; i < count; ++i) {
          const std::size_t entry = r * static_cast<std::size_t>(mask.max_kv_blocks) + static_cast<std::size_t>(i);
          const int kb = mask.index[entry];
          if (kb < 0 || kb >= mask.kv_blocks)
            refuse("index" + position(b, h, qb, i) + " = " + std::to_string(kb) + " is outside 0.." +
                   std::to_string(mask.kv_blocks - 1));
          if (i > 0 && kb <= mask.index[entry - 1])
            refuse("index" + position(b, h, qb, i) + " = " + std::to_string(kb) +
                   " does not exceed the previous entry " + std::to_string(mask.index[entry - 1]) +
                   " (kept blocks must be strictly ascending)");
          if (mask.fine_n != 0 && (mask.fine_bits[entry] & ~allowed_bits) != 0)
            refuse("fine_bits" + position(b, h, qb, i) + " = " + hex(mask.fine_bits[entry]) +
                   " sets bits at or above fine_subtiles = " +
                   std::to_string(fine_subtiles(mask.block_q, mask.block_kv, mask.fine_n)));
        }
      }
}

int kept_blocks_per_row(double density, int kv_blocks) {
  const double wanted = std::ceil(density * kv_blocks - 1e-9);
  return static_cast<int>(std::clamp(wanted, 0.0, static_cast<double>(kv_blocks)));
}

BlockMask random_block_mask(int batch, int heads, int tokens_q, int tokens_kv, int block_q,
                            int block_kv, double density, std::mt19937_64& generator,
                            bool keep_diagonal, int fine_n, double fine_density) {
  require_positive_sizes(batch, heads, tokens_q, tokens_kv, block_q, block_kv);
  if (!(density >= 0.0 && density <= 1.0))
    refuse("density = " + std::to_string(density) + " is outside [0, 1]");
  if (fine_n != 0 && !fine_granularity_valid(block_q, block_kv, fine_n))
    refuse("fine_n = " + std::to_string(fine_n) + " is not valid for " + std::to_string(block_q) +
           "x" + std::to_string(block_kv) + " blocks");
  if (!(fine_density >= 0.0 && fine_density <= 1.0))
    refuse("fine_density = " + std::to_string(fine_density) + " is outside [0, 1]");

  BlockMask mask;
  mask.batch = batch;
  mask.heads = heads;
  mask.q_blocks = ceil_div(tokens_q, block_q);
  mask.kv_blocks = ceil_div(tokens_kv, block_kv);
  mask.block_q = block_q;
  mask.block_kv = block_kv;
  mask.fine_n = fine_n;
  const int kept = kept_blocks_per_row(density, mask.kv_blocks);
  mask.max_kv_blocks = kept;
  const std::size_t rows = static_cast<std::size_t>(batch) * static_cast<std::size_t>(heads) *
                           static_cast<std::size_t>(mask.q_blocks);
  mask.count.assign(rows, kept);
  mask.index.reserve(rows * static_cast<std::size_t>(kept));

  std::vector<int> blocks(static_cast<std::size_t>(mask.kv_blocks));
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < heads; ++h)
      for (int qb = 0; qb < mask.q_blocks; ++qb) {
        std::iota(blocks.begin(), blocks.end(), 0);
        int chosen = 0;
        if (keep_diagonal && kept > 0) {
          const int diagonal = std::min(static_cast<int>(static_cast<long long>(qb) * block_q / block_kv),
                                        mask.kv_blocks - 1);
          std::swap(blocks[0], blocks[static_cast<std::size_t>(diagonal)]);
          chosen = 1;
        }
        // Partial Fisher-Yates: blocks[chosen..kept) become distinct random picks.
        for (int i = chosen; i < kept; ++i) {
          std::uniform_int_distribution<int> pick(i, mask.kv_blocks - 1);
          std::swap(blocks[static_cast<std::size_t>(i)], blocks[static_cast<std::size_t>(pick(generator))]);
        }
        std::sort(blocks.begin(), blocks.begin() + kept);
        mask.index.insert(mask.index.end(), blocks.begin(), blocks.begin() + kept);
      }

  if (fine_n != 0) {
    const int subtiles = fine_subtiles(block_q, block_kv, fine_n);
    std::bernoulli_distribution keep_subtile(fine_density);
    std::uniform_int_distribution<int> any_subtile(0, subtiles - 1);
    mask.fine_bits.resize(mask.index.size());
    for (std::uint64_t& word : mask.fine_bits) {
      if (fine_density == 0.5) {
        word = generator() & low_bits(subtiles);  // 64 fair bits in one draw (the tuner's masks: 10 M words)
      } else {
        for (int s = 0; s < subtiles; ++s)
          if (keep_subtile(generator)) word |= std::uint64_t{1} << s;
      }
      if (word == 0) word = std::uint64_t{1} << any_subtile(generator);
    }
  }
  return mask;
}

BlockMask with_empty_rows(BlockMask mask, double fraction, std::mt19937_64& generator) {
  if (!(fraction >= 0.0 && fraction <= 1.0))
    refuse("empty-row fraction = " + std::to_string(fraction) + " is outside [0, 1]");
  std::vector<std::size_t> rows(mask.count.size());
  std::iota(rows.begin(), rows.end(), std::size_t{0});
  std::shuffle(rows.begin(), rows.end(), generator);
  std::size_t emptied = static_cast<std::size_t>(
      std::ceil(fraction * static_cast<double>(rows.size()) - 1e-9));
  if (fraction > 0.0) emptied = std::max(emptied, std::size_t{1});
  for (std::size_t i = 0; i < std::min(emptied, rows.size()); ++i) mask.count[rows[i]] = 0;
  return mask;
}

}  // namespace sparsejit::templates
