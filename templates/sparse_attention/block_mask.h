#pragma once
// The block mask of sparse_attention on the host, in the two forms the kernels read
// (attention_params.h), block-CSR and block bitmask: validation, conversions, random masks
// for tests and tuning, and helpers.
//
// Shapes, with QB = ceil(tokens_q / block_q) and KB = ceil(tokens_kv / block_kv):
//   count     [batch, heads, QB]                  int, 0 <= count <= min(max_kv_blocks, KB)
//   index     [batch, heads, QB, max_kv_blocks]   int, first `count` entries strictly
//                                                 ascending in [0, KB); the rest is padding
//                                                 that nobody reads
//   fine_bits [batch, heads, QB, max_kv_blocks]   uint64 per kept pair, or empty (fine_n = 0);
//                                                 bit qs * (block_kv / fine_n) + ks keeps the
//                                                 sub-tile of queries 16*qs.. and keys
//                                                 fine_n*ks.. inside the pair
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace sparsejit::templates {

struct BlockMask {
  int batch = 0;
  int heads = 0;
  int q_blocks = 0;       // QB
  int kv_blocks = 0;      // KB
  int max_kv_blocks = 0;  // row pitch of index and fine_bits
  int block_q = 0;        // queries per sparse block
  int block_kv = 0;       // keys per sparse block
  int fine_n = 0;         // keys per fine sub-tile; 0: no fine bits
  std::vector<int> count;
  std::vector<int> index;
  std::vector<std::uint64_t> fine_bits;

  // Position of row (b, h, qb) in `count`; times max_kv_blocks, in `index` and `fine_bits`.
  std::size_t row(int b, int h, int qb) const {
    return (static_cast<std::size_t>(b) * static_cast<std::size_t>(heads) + static_cast<std::size_t>(h)) *
               static_cast<std::size_t>(q_blocks) +
           static_cast<std::size_t>(qb);
  }
  // The kept key blocks of (b, h, qb): the first count entries of its index row.
  std::span<const int> kept_blocks(int b, int h, int qb) const {
    const std::size_t r = row(b, h, qb);
    return {index.data() + r * static_cast<std::size_t>(max_kv_blocks), static_cast<std::size_t>(count[r])};
  }
  // The fine bits of the i-th kept pair of (b, h, qb); only when fine_n != 0.
  std::uint64_t fine_word(int b, int h, int qb, int i) const {
    return fine_bits[row(b, h, qb) * static_cast<std::size_t>(max_kv_blocks) + static_cast<std::size_t>(i)];
  }
  // Kept (query block, key block) pairs / (batch * heads * QB * KB); 0 for an empty shape.
  // Fine bits are not counted.
  double density() const;
};

// The block bitmask form of a mask (attention_params.h): row (b, h, qb) is words_per_row =
// ceil(kv_blocks / 64) words, bit kb % 64 of word kb / 64 set when key block kb is kept.
// 80 bytes a row for the 591 key blocks of 75,600 tokens, against 4 bytes per kept block in
// block-CSR: the form for masks cached across steps and layers. Fine bits are not part of
// it; with a bitmask they follow each row's kept blocks in ascending order (a BlockMask's
// fine_bits of the same mask serve unchanged).
struct BlockBitmask {
  int batch = 0;
  int heads = 0;
  int q_blocks = 0;
  int kv_blocks = 0;
  int words_per_row = 0;
  std::vector<std::uint64_t> bits;  // [batch, heads, q_blocks, words_per_row]

  std::size_t row(int b, int h, int qb) const {
    return (static_cast<std::size_t>(b) * static_cast<std::size_t>(heads) + static_cast<std::size_t>(h)) *
               static_cast<std::size_t>(q_blocks) +
           static_cast<std::size_t>(qb);
  }
  bool kept(int b, int h, int qb, int kb) const {
    return (bits[row(b, h, qb) * static_cast<std::size_t>(words_per_row) + static_cast<std::size_t>(kb / 64)] >>
            (kb % 64)) & 1u;
  }
  int kept_count(int b, int h, int qb) const;
};

// Words of a bitmask row for `kv_blocks` key blocks: ceil(kv_blocks / 64).
int bitmask_words(int kv_blocks);

// The bitmask of `mask`'s kept blocks (mask must be valid; its fine bits are not copied).
BlockBitmask to_bitmask(const BlockMask& mask);

// The block-CSR mask of `bitmask` for blocks of block_q x block_kv, rows padded to
// max_kv_blocks (fine_n = 0, no fine bits). Throws std::invalid_argument, naming the row,
// when a row keeps more than max_kv_blocks blocks.
BlockMask to_block_mask(const BlockBitmask& bitmask, int block_q, int block_kv, int max_kv_blocks);

// Throws std::invalid_argument unless `bitmask` is a valid bitmask for tokens_q queries and
// tokens_kv keys in blocks of block_q x block_kv: positive sizes, q_blocks and kv_blocks the
// ceil-divisions, words_per_row = bitmask_words(kv_blocks), bits sized to match, and no bit at
// or above kv_blocks in any row (named with its row and word).
void validate_block_bitmask(const BlockBitmask& bitmask, int tokens_q, int tokens_kv, int block_q,
                            int block_kv);

// Sub-tiles of 16 queries x fine_n keys in a block_q x block_kv pair (the bits used in
// one fine word): (block_q / 16) * (block_kv / fine_n), rounding down; 0 for fine_n <= 0.
int fine_subtiles(int block_q, int block_kv, int fine_n);

// Whether fine_n can refine block_q x block_kv pairs: fine_n in {8, 16, 32}, block_q a
// positive multiple of 16, block_kv a positive multiple of fine_n, and at most 64 sub-tiles
// (one uint64 per pair).
bool fine_granularity_valid(int block_q, int block_kv, int fine_n);

// Throws std::invalid_argument, naming the entry (b, h, qb, i) and its value, unless `mask`
// is a valid mask for tokens_q queries and tokens_kv keys: positive batch, heads, tokens and
// block sizes; q_blocks and kv_blocks equal to the ceil-divisions; max_kv_blocks >= 0; vector
// sizes as above (fine_bits empty iff fine_n == 0); fine_n valid for the block sizes; every
// count within 0..min(max_kv_blocks, KB); the kept indices in [0, KB) and strictly
// ascending; no fine bit at or above fine_subtiles. Padding entries are not checked. A kept
// pair whose fine word is 0 is valid (it contributes no key).
void validate_block_mask(const BlockMask& mask, int tokens_q, int tokens_kv);

// The number of key blocks a row keeps at `density`: ceil(density * kv_blocks), clamped to
// 0..kv_blocks, with a 1e-9 tolerance so that float noise does not add a block (0.7 of 10 is
// 7, though 0.7 * 10 == 7.000000000000001 in double).
int kept_blocks_per_row(double density, int kv_blocks);

// A random valid mask: every (b, h, qb) keeps k = kept_blocks_per_row(density, KB) distinct
// random key blocks in ascending order (density 0: every row empty), among them the diagonal
// block min(qb * block_q / block_kv, KB - 1) when keep_diagonal and k > 0; max_kv_blocks = k.
// With fine_n != 0 every kept pair gets fine bits, each of its fine_subtiles bits set with
// probability fine_density, and one random bit set if none was (a pair never ends up empty
// by accident). Throws std::invalid_argument for non-positive sizes, density or fine_density
// outside [0, 1], or a fine_n that fine_granularity_valid refuses.
BlockMask random_block_mask(int batch, int heads, int tokens_q, int tokens_kv, int block_q,
                            int block_kv, double density, std::mt19937_64& generator,
                            bool keep_diagonal = true, int fine_n = 0, double fine_density = 1.0);

// `mask` with ceil(fraction * rows) random rows (b, h, qb) emptied (count = 0), at least one
// when fraction > 0; their index and fine entries are left as they were, as stale padding
// that readers must ignore. Throws std::invalid_argument for fraction outside [0, 1].
BlockMask with_empty_rows(BlockMask mask, double fraction, std::mt19937_64& generator);

}  // namespace sparsejit::templates
