#pragma once
// What both sparse_attention kernels share (sparse_attention.cuh on mma.sync,
// sparse_attention_wgmma.cuh on wgmma): the walk over a mask row's kept blocks, and the
// per-tile steps: which 8-key score tiles a 16-row group keeps under the fine bits, masking,
// the online softmax with its lazily moved reference, P packed as the A operand of the next
// product, and the normalized store. Scores and outputs are in the
// mma C layout, which wgmma's accumulators share: per 16-row group, a lane holds rows
// `lane / 4` and `lane / 4 + 8` (row half h = 0, 1: elements 2h, 2h + 1 of each 8-column
// tile), columns 2 * (lane % 4) and + 1.
#include "common/mma_tiles.cuh"
#include "common/ptx.cuh"
#include "sparse_attention/attention_params.h"

namespace sparsejit {

// The kept key blocks of one mask row in ascending order, in either form of the mask
// (attention_params.h), a compile-time choice (a run-time one cost 7% at D = 128: the extra
// live state changed how ptxas schedules the hot loop). kept(i) is called with i = 0, 1, 2, ...
// in order, once per kept block, never per tile.
template <bool Bitmask>
struct KeptBlocks;
template <>
struct KeptBlocks<false> {  // block-CSR: the row's ascending list
  int count;
  const int* list;
  __device__ __forceinline__ KeptBlocks(const SparseAttentionParams& params, long long mask_row)
      : count(params.kv_block_count[mask_row]), list(params.kv_block_index + mask_row * params.max_kv_blocks) {}
  __device__ __forceinline__ int kept(int i) { return list[i]; }
};
template <>
struct KeptBlocks<true> {  // bitmask: the row's words, scanned once
  int count = 0;
  const unsigned long long* words;
  int word = 0;                      // the word `remaining` came from
  unsigned long long remaining = 0;  // its kept blocks not returned yet
  __device__ __forceinline__ KeptBlocks(const SparseAttentionParams& params, long long mask_row)
      : words(params.kv_block_bits + mask_row * params.kv_block_words) {
    for (int w = 0; w < params.kv_block_words; ++w) count += __popcll(words[w]);
    remaining = words[0];
  }
  __device__ __forceinline__ int kept(int) {
    while (remaining == 0) remaining = words[++word];
    const int bit = __ffsll(static_cast<long long>(remaining)) - 1;
    remaining &= remaining - 1;
    return word * 64 + bit;
  }
};

// A walk over a row's kept blocks for the tiles that compute them: the current block's index
// (and fine word) with the next one's already read, so that their global-memory latency hides
// behind a tile's work instead of stalling every tile. start() once (only where the row keeps
// a block), next_block() after the last tile of each kept block.
template <bool Bitmask, int FineN>
struct KeptBlockWalk {
  KeptBlocks<Bitmask> blocks;
  const unsigned long long* fine_words;  // the row's fine words (FineN > 0), one per kept block
  int block = 0, following = 0;          // the current block and the one after it
  unsigned long long bits = 0, following_bits = 0;
  int done = 0;  // kept blocks finished

  __device__ __forceinline__ KeptBlockWalk(const SparseAttentionParams& params, long long mask_row)
      : blocks(params, mask_row),
        fine_words(FineN > 0 ? params.fine_bits + mask_row * params.max_kv_blocks : nullptr) {}
  __device__ __forceinline__ int count() const { return blocks.count; }
  __device__ __forceinline__ void start() {
    block = blocks.kept(0);
    if (blocks.count > 1) following = blocks.kept(1);
    if constexpr (FineN > 0) {
      bits = fine_words[0];
      if (blocks.count > 1) following_bits = fine_words[1];
    }
  }
  __device__ __forceinline__ void next_block() {
    block = following;
    bits = following_bits;
    const int after = ++done + 1;
    if (after < blocks.count) {
      following = blocks.kept(after);
      if constexpr (FineN > 0) following_bits = fine_words[after];
    }
  }
};

// Bit j set: the 8-key score tile j of this step is kept by the 16 query rows of sub-tile
// `query_subtile` of the block pair, whose fine word is `bits` (attention_params.h);
// `key_offset` is the step's first key inside the key block.
template <int ScoreTiles, int BlockKV, int FineN>
__device__ __forceinline__ unsigned fine_kept_tiles(unsigned long long bits, int query_subtile, int key_offset) {
  if constexpr (FineN == 0) {
    return (1u << ScoreTiles) - 1u;
  } else {
    unsigned keep = 0;
#pragma unroll
    for (int j = 0; j < ScoreTiles; ++j) {
      const int bit = query_subtile * (BlockKV / FineN) + (key_offset + 8 * j) / FineN;
      keep |= static_cast<unsigned>((bits >> bit) & 1ull) << j;
    }
    return keep;
  }
}

// Keys past the end (`keys_left` counts from this lane's first key, column 2 * quad) and
// score tiles not kept score -inf (selects, no branches).
template <int ScoreTiles>
__device__ __forceinline__ void mask_scores(float (&score)[ScoreTiles][4], unsigned keep, int keys_left) {
#pragma unroll
  for (int j = 0; j < ScoreTiles; ++j) {
    const bool tile_kept = ((keep >> j) & 1u) != 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const bool kept_key = tile_kept & (j * 8 + (e & 1) < keys_left);
      score[j][e] = kept_key ? score[j][e] : negative_infinity();
    }
  }
}

// The online softmax of one tile for RowGroups 16-row groups, in three steps (the wgmma
// kernel runs the third before O is final, so it calls them apart; online_softmax runs all):
// move_softmax_reference, rescale_outputs where it moved, exponentiate_scores.
//
// row_max is the point the exponentials are taken from, not always the running maximum. It
// moves (and O and the sums are rescaled) only when some row of the warp sees a score more
// than 2^kRescaleSlack above it, one uniform branch; otherwise P may reach 2^kRescaleSlack,
// which fp32 sums and the 16-bit P (relative rounding) take without loss. Exact either way: O
// and the LSE use the same point.
//
// Step 1: whether the reference moves for this warp (uniform); where it does, moves row_max,
// rescales row_sum and leaves O's factors in `rescale`. The test needs only each lane's own
// maxima: a row's quad maximum passes it exactly when one of the quad's lanes does, and the
// warp vote covers every lane, so the quad's shuffles are paid only in the rare moving branch.
template <int RowGroups, int ScoreTiles>
__device__ __forceinline__ bool move_softmax_reference(const float (&score)[RowGroups][ScoreTiles][4],
                                                       float (&row_max)[RowGroups][2],
                                                       float (&row_sum)[RowGroups][2],
                                                       float (&rescale)[RowGroups][2], float scale_log2) {
  constexpr float kRescaleSlack = 8.f;
  bool moves = false;
#pragma unroll
  for (int rg = 0; rg < RowGroups; ++rg)
#pragma unroll
    for (int h = 0; h < 2; ++h)  // -inf > -inf + slack: a row with nothing kept never moves
      moves |= reduce_row_half(score[rg], h, MaxOp{}) * scale_log2 > row_max[rg][h] * scale_log2 + kRescaleSlack;
  if (!__any_sync(0xffffffffu, moves)) return false;
#pragma unroll
  for (int rg = 0; rg < RowGroups; ++rg)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      // The tile's maxima again rather than kept from above: 4 registers fewer live across
      // the softmax, for a rare branch.
      const float new_max = fmaxf(row_max[rg][h], row_half_max(score[rg], h));
      // A row with nothing kept so far keeps max -inf and a rescale of exp2(0 - 0) = 1.
      rescale[rg][h] = new_max == negative_infinity() ? 1.f : fast_exp2((row_max[rg][h] - new_max) * scale_log2);
      row_max[rg][h] = new_max;
      row_sum[rg][h] *= rescale[rg][h];
    }
  return true;
}

// Step 2: O *= the factors of a moved reference.
template <int RowGroups, int OutTiles>
__device__ __forceinline__ void rescale_outputs(float (&out)[RowGroups][OutTiles][4],
                                                const float (&rescale)[RowGroups][2]) {
#pragma unroll
  for (int rg = 0; rg < RowGroups; ++rg)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int d = 0; d < OutTiles; ++d) {
        out[rg][d][2 * h] *= rescale[rg][h];
        out[rg][d][2 * h + 1] *= rescale[rg][h];
      }
}

// Step 3: the (masked) scores become P in place, and the row sums grow by them. Score tiles a
// group does not keep (fine bits) become 0 without an exp2.
template <int FineN, int RowGroups, int ScoreTiles>
__device__ __forceinline__ void exponentiate_scores(float (&score)[RowGroups][ScoreTiles][4],
                                                    const float (&row_max)[RowGroups][2],
                                                    float (&row_sum)[RowGroups][2], const unsigned (&keep)[RowGroups],
                                                    float scale_log2) {
#pragma unroll
  for (int rg = 0; rg < RowGroups; ++rg)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      // Subtracting 0 for a row with max -inf keeps its exp2(-inf) at 0.
      const float max_scaled = row_max[rg][h] == negative_infinity() ? 0.f : row_max[rg][h] * scale_log2;
#pragma unroll
      for (int j = 0; j < ScoreTiles; ++j) {
        if (FineN > 0 && ((keep[rg] >> j) & 1u) == 0) {  // uniform: the whole tile is masked
          score[rg][j][2 * h] = score[rg][j][2 * h + 1] = 0.f;
          continue;
        }
#pragma unroll
        for (int e = 2 * h; e < 2 * h + 2; ++e) score[rg][j][e] = fast_exp2(score[rg][j][e] * scale_log2 - max_scaled);
      }
      row_sum[rg][h] += reduce_row_half(score[rg], h, SumOp{});
    }
}

// All three steps, for a kernel whose O is final when the tile's softmax runs.
template <int FineN, int RowGroups, int ScoreTiles, int OutTiles>
__device__ __forceinline__ void online_softmax(float (&score)[RowGroups][ScoreTiles][4],
                                               float (&out)[RowGroups][OutTiles][4],
                                               float (&row_max)[RowGroups][2], float (&row_sum)[RowGroups][2],
                                               const unsigned (&keep)[RowGroups], float scale_log2) {
  float rescale[RowGroups][2];
  if (move_softmax_reference(score, row_max, row_sum, rescale, scale_log2)) rescale_outputs(out, rescale);
  exponentiate_scores<FineN>(score, row_max, row_sum, keep, scale_log2);
}

// P of keys 16kk..16kk+15 as the A operand of O += P V (the C layout of two adjacent 8-key
// tiles is the A layout of one 16-key step).
template <int Dtype, int ScoreTiles>
__device__ __forceinline__ void pack_probabilities(u32 (&a)[4], const float (&p)[ScoreTiles][4], int kk) {
  a[0] = pack_pair<Dtype>(p[2 * kk][0], p[2 * kk][1]);
  a[1] = pack_pair<Dtype>(p[2 * kk][2], p[2 * kk][3]);
  a[2] = pack_pair<Dtype>(p[2 * kk + 1][0], p[2 * kk + 1][1]);
  a[3] = pack_pair<Dtype>(p[2 * kk + 1][2], p[2 * kk + 1][3]);
}

// One 16-row group's final row sums (this lane's partial sums reduced over its quad) as the
// inverses O is scaled by (0 for a row with nothing kept), and its LSE written where asked for
// (rows past tokens_q are not; a row with nothing kept writes -inf). `first_row` is the
// group's first row.
__device__ __forceinline__ void finish_row_group(const SparseAttentionParams& params, long long lse_base,
                                                 int first_row, const float (&row_max)[2],
                                                 const float (&row_sum)[2], float scale_log2, int lane,
                                                 float (&inverse)[2]) {
  const int group = lane / 4, quad = lane % 4;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float sum = row_sum[h];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    inverse[h] = sum > 0.f ? 1.f / sum : 0.f;
    const int row = first_row + group + 8 * h;
    if (params.lse != nullptr && quad == 0 && row < params.tokens_q) {
      const float natural =
          sum > 0.f ? (row_max[h] * scale_log2 + fast_log2(sum)) * 0.6931471805599453f : negative_infinity();
      params.lse[lse_base + row] = natural;
    }
  }
}

// Normalizes and stores one 16-row group whose first row is `first_row` (rows past
// tokens_q are skipped), each lane its own elements in 4-byte stores; rows with nothing kept
// write zeros and LSE = -inf.
template <int Dtype, int OutTiles>
__device__ __forceinline__ void store_row_group(const SparseAttentionParams& params, char* o_base,
                                                long long lse_base, int first_row,
                                                const float (&out)[OutTiles][4], const float (&row_max)[2],
                                                const float (&row_sum)[2], float scale_log2, int lane) {
  const int group = lane / 4, quad = lane % 4;
  float inverse[2];
  finish_row_group(params, lse_base, first_row, row_max, row_sum, scale_log2, lane, inverse);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = first_row + group + 8 * h;
    if (row >= params.tokens_q) continue;
    char* o_row = o_base + static_cast<long long>(row) * params.o_token_stride * 2;
#pragma unroll
    for (int d = 0; d < OutTiles; ++d)
      *reinterpret_cast<u32*>(o_row + (d * 8 + quad * 2) * 2) =
          pack_pair<Dtype>(out[d][2 * h] * inverse[h], out[d][2 * h + 1] * inverse[h]);
  }
}

}  // namespace sparsejit
