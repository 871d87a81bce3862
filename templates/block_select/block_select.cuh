#pragma once
// block_select: block-CSR mask (and fine bits) from block scores (block_select_params.h has
// the rules and formats). One CTA of kThreads per (batch, head, query block). Each key block
// has a rank word: its score's bits, always-kept blocks above every score; equal words rank
// the lower index first. KB <= kMaxSelectKvBlocks.
//  1. top-k without fine bits: a radix select over the rank words flags the kept blocks by
//     index (no order is needed: the output is ascending by index);
//  1'. otherwise a bitonic sort in shared memory orders 64-bit keys (rank word high, ~index
//     low), descending; the kept count is top_k (or the head's top_k_per_head), or
//     (threshold mode) the number of sorted positions whose preceding scores sum to less
//     than threshold * total (chunked scan, fixed order); the kept blocks are flagged;
//  3. the flagged blocks are compacted in ascending order (chunked scan);
//  4. with fine bits, each warp takes kept pairs in turn: it recomputes the pair's tile
//     probabilities from the pooled tiles (by mma.sync where a key block has a multiple of 8
//     tiles, else one dot product of HeadDim per lane and tile pair),
//     spreads them over the 16 x FineN sub-tiles by real tokens, ranks the sub-tiles by mass
//     and keeps the fewest that reach fine_share.
// Grid: x = QB, y = heads, z = batch. Block: kThreads. Static shared memory only (< 48 KB).
// Without fine bits (FineN = 0) Dtype, HeadDim and Tile are unused and 0.
#include "block_select/block_select_params.h"
#include "common/ptx.cuh"

namespace sparsejit {

constexpr int kSelectWarps = kSelectThreads / 32;

// Exclusive prefix sum of one value per thread over the CTA, in thread order (fixed
// reduction order: deterministic); `total` gets the sum. `scratch` holds kSelectWarps values.
template <class T>
__device__ __forceinline__ T block_exclusive_sum(T value, T* scratch, T& total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  T inclusive = value;
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    const T other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  if (lane == 31) scratch[warp] = inclusive;
  __syncthreads();
  T before = T(0);
  total = T(0);
#pragma unroll
  for (int w = 0; w < kSelectWarps; ++w) {
    if (w < warp) before += scratch[w];
    total += scratch[w];
  }
  __syncthreads();  // scratch may be reused
  return before + inclusive - value;
}

static_assert(kSelectThreads == 256 && kSelectWarps >= 2, "the radix select gives each thread one of 256 bins");

template <int BlockQ, int BlockKV, int FineN, int Dtype, int HeadDim, int Tile>
__global__ void __launch_bounds__(kSelectThreads) block_select(const BlockSelectParams p) {
  static_assert(FineN == 0 || ((BlockQ / 16) * (BlockKV / FineN) <= 64 && BlockKV % FineN == 0),
                "fine sub-tiles must fit one 64-bit word");
  constexpr int kRows = FineN > 0 ? BlockQ / Tile : 1;      // query tiles of a block
  constexpr int kCols = FineN > 0 ? BlockKV / Tile : 1;     // key tiles of a block
  constexpr int kSubtiles = FineN > 0 ? (BlockQ / 16) * (BlockKV / FineN) : 0;
  constexpr int kKeySubtiles = FineN > 0 ? BlockKV / FineN : 1;

  __shared__ unsigned long long keys[kMaxSelectKvBlocks];  // sort; then the ascending kept list
  __shared__ unsigned char kept_flag[kMaxSelectKvBlocks];
  __shared__ float float_scratch[kSelectWarps];
  __shared__ int int_scratch[kSelectWarps];
  __shared__ unsigned histogram[256];  // the radix select's, one bin per thread
  __shared__ float pooled_q_rows[FineN > 0 ? kRows : 1][FineN > 0 ? HeadDim + 4 : 1];
  __shared__ float row_lse2[kRows];
  __shared__ float tile_probability[kSelectWarps][kRows * kCols];
  __shared__ float subtile_mass[kSelectWarps][kSubtiles > 0 ? kSubtiles : 1];

  const int q_block = blockIdx.x, head = blockIdx.y, batch = blockIdx.z;
  const int q_blocks = (p.tokens_q + BlockQ - 1) / BlockQ;
  const int kv_blocks = (p.tokens_kv + BlockKV - 1) / BlockKV;
  const long long row = (static_cast<long long>(batch) * p.heads + head) * q_blocks + q_block;
  const float* scores = p.scores + row * kv_blocks;
  const int diagonal = min(static_cast<int>(static_cast<long long>(q_block) * BlockQ / BlockKV), kv_blocks - 1);
  const int text_first = kv_blocks - p.text_blocks;
  const bool keep_first = p.first_block_by_score == 0;
  const auto always_kept = [&](int kb) { return (keep_first && kb == 0) || kb == diagonal || kb >= text_first; };
  const int always_count = p.text_blocks + (keep_first && text_first > 0 ? 1 : 0) +
                           (diagonal < text_first && !(keep_first && diagonal == 0) ? 1 : 0);

  // Each thread owns a chunk of consecutive key blocks (the scans below go in index order).
  const int chunk = (kv_blocks + kSelectThreads - 1) / kSelectThreads;
  const int chunk_first = threadIdx.x * chunk;
  const int chunk_last = min(chunk_first + chunk, kv_blocks);
  // A block's rank word: always-kept blocks above every score, non-positive scores equal (0).
  const auto rank_word = [&](int kb) {
    const float score = scores[kb];
    return always_kept(kb) ? 0xffffffffu : (score > 0.f ? __float_as_uint(score) : 0u);
  };
  int kept;
  if (FineN == 0 && p.top_k > 0) {
    // Top-k without fine bits: the output lists blocks by index, so only the kept set matters.
    // A radix select over the rank words (4 passes of 8 bits, a histogram each) finds the
    // kept-th largest word T; the blocks above T are kept, and of those equal to T the lowest
    // indices (the order the sort below gives ties). 20 barriers where the sort takes 55 at
    // 591 key blocks.
    const int wanted = p.top_k_per_head != nullptr ? p.top_k_per_head[head] : p.top_k;
    kept = min(min(max(wanted, always_count), kv_blocks), p.max_kv_blocks);
    constexpr int kMaxChunk = kMaxSelectKvBlocks / kSelectThreads;
    unsigned words[kMaxChunk];
#pragma unroll
    for (int c = 0; c < kMaxChunk; ++c) words[c] = chunk_first + c < chunk_last ? rank_word(chunk_first + c) : 0u;
    unsigned prefix = 0, prefix_mask = 0;
    int remaining = kept;  // >= 1: top_k >= 1
    for (int shift = 24; shift >= 0; shift -= 8) {
      histogram[threadIdx.x] = 0;
      __syncthreads();
#pragma unroll
      for (int c = 0; c < kMaxChunk; ++c)
        if (chunk_first + c < chunk_last && (words[c] & prefix_mask) == prefix)
          atomicAdd(&histogram[(words[c] >> shift) & 255u], 1u);
      __syncthreads();
      const int digit = 255 - static_cast<int>(threadIdx.x);  // thread t holds the t-th bin from the top
      const int count = static_cast<int>(histogram[digit]);
      int total;
      const int above = block_exclusive_sum(count, int_scratch, total);  // matching words in higher bins
      if (above < remaining && above + count >= remaining) {
        int_scratch[0] = digit;  // exactly one thread; block_exclusive_sum is done with it
        int_scratch[1] = above;
      }
      __syncthreads();
      prefix |= static_cast<unsigned>(int_scratch[0]) << shift;
      prefix_mask |= 255u << shift;
      remaining -= int_scratch[1];
      __syncthreads();  // int_scratch is read before the next pass writes it
    }
    int ties = 0;
#pragma unroll
    for (int c = 0; c < kMaxChunk; ++c) ties += chunk_first + c < chunk_last && words[c] == prefix;
    int ties_total;
    int tie_rank = block_exclusive_sum(ties, int_scratch, ties_total);
#pragma unroll
    for (int c = 0; c < kMaxChunk; ++c)
      if (chunk_first + c < chunk_last)
        kept_flag[chunk_first + c] = words[c] > prefix || (words[c] == prefix && tie_rank++ < remaining);
    __syncthreads();
  } else {
    // 1. Sort keys, descending: the rank word high, ~index low (equal words: lower index first).
    int padded = 1;
    while (padded < kv_blocks) padded *= 2;
    for (int i = threadIdx.x; i < padded; i += kSelectThreads)
      keys[i] = i < kv_blocks ? (static_cast<unsigned long long>(rank_word(i)) << 32) | (0xffffffffu - static_cast<unsigned>(i))
                              : 0ull;  // padding sorts last
    __syncthreads();
    for (int size = 2; size <= padded; size *= 2)
      for (int stride = size / 2; stride > 0; stride /= 2) {
        for (int i = threadIdx.x; i < padded / 2; i += kSelectThreads) {
          const int a = 2 * stride * (i / stride) + i % stride;
          const int b = a + stride;
          const bool descending = (a & size) == 0;
          const unsigned long long x = keys[a], y = keys[b];
          if ((x < y) == descending) {
            keys[a] = y;
            keys[b] = x;
          }
        }
        __syncthreads();
      }
    const auto block_at = [&](int position) { return static_cast<int>(0xffffffffu - static_cast<unsigned>(keys[position])); };

    // 2. How many sorted positions are kept.
    int wanted;
    if (p.top_k > 0) {
      wanted = p.top_k_per_head != nullptr ? p.top_k_per_head[head] : p.top_k;
    } else {
      float chunk_sum = 0.f;
      for (int i = chunk_first; i < chunk_last; ++i) chunk_sum += scores[block_at(i)];
      float total;
      float before = block_exclusive_sum(chunk_sum, float_scratch, total);
      const float target = p.threshold * total;
      int below = 0;
      for (int i = chunk_first; i < chunk_last; ++i) {
        below += before < target ? 1 : 0;
        before += scores[block_at(i)];
      }
      int below_total;
      block_exclusive_sum(below, int_scratch, below_total);
      wanted = below_total;
    }
    kept = min(min(max(wanted, always_count), kv_blocks), p.max_kv_blocks);

    // 3. Flag the kept ones by index.
    for (int i = threadIdx.x; i < kv_blocks; i += kSelectThreads) kept_flag[i] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < kept; i += kSelectThreads) kept_flag[block_at(i)] = 1;
    __syncthreads();
  }

  // Compact the flagged blocks, ascending.
  int flagged = 0;
  for (int i = chunk_first; i < chunk_last; ++i) flagged += kept_flag[i];
  int flagged_total;
  int slot = block_exclusive_sum(flagged, int_scratch, flagged_total);  // syncs: keys are free now
  int* kept_list = reinterpret_cast<int*>(keys);
  int* index_row = p.kv_block_index + row * p.max_kv_blocks;
  for (int i = chunk_first; i < chunk_last; ++i)
    if (kept_flag[i]) {
      kept_list[slot] = i;
      index_row[slot] = i;
      ++slot;
    }
  if (threadIdx.x == 0) p.kv_block_count[row] = kept;

  // 4. Fine bits.
  if constexpr (FineN > 0) {
    const int tiles_q = (p.tokens_q + Tile - 1) / Tile;
    const int tiles_k = (p.tokens_kv + Tile - 1) / Tile;
    const long long slice = static_cast<long long>(batch) * p.heads + head;
    const int tile_q0 = q_block * kRows;
    for (int e = threadIdx.x; e < kRows * (HeadDim / 2); e += kSelectThreads) {
      const int r = e / (HeadDim / 2), d = e % (HeadDim / 2) * 2;
      float low = 0.f, high = 0.f;
      if (tile_q0 + r < tiles_q)
        unpack_pair<Dtype>(static_cast<const u32*>(p.pooled_q)[((slice * tiles_q + tile_q0 + r) * HeadDim + d) / 2], low, high);
      pooled_q_rows[r][d] = low;
      pooled_q_rows[r][d + 1] = high;
    }
    for (int r = threadIdx.x; r < kRows; r += kSelectThreads)
      row_lse2[r] = tile_q0 + r < tiles_q ? p.tile_lse[slice * tiles_q + tile_q0 + r] * 1.4426950408889634f
                                          : __int_as_float(0x7f800000u);  // no such tile: P = 0
    __syncthreads();

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const float scale_log2 = p.softmax_scale * 1.4426950408889634f;
    // How a pair's tile dot products are computed. Where a key block has a multiple of 8
    // tiles, on the tensor cores: S (query tiles x key tiles) = Q̄ K̄^T by mma.sync m16n8k16,
    // Q̄'s fragments built once, K̄'s loaded per pair from global memory, 16 bytes per lane
    // and 32 head dims. Inside each 32 head dims the k order is permuted alike in both
    // operands (a dot product does not depend on it) so that a lane's B values lie together:
    // lane (g = lane / 4, q = lane % 4) holds dims 32c + 8q + 4h + {0, 1} where the m16n8k16
    // layout wants k = 2q + {0, 1} of k-step (c, h), and 32c + 8q + 4h + {2, 3} where it wants
    // 2q + 8 + {0, 1}. Otherwise (2 or 4 key tiles) each lane computes whole dot products.
    // Measured on the H100 (BENCHMARKS.md, tenth session) against the lanes splitting the
    // head dims and reducing by shuffles, the path before it.
    constexpr bool kTensorDots = kCols % 8 == 0 && HeadDim % 32 == 0;
    constexpr int kQueryTiles16 = (kRows + 15) / 16;  // m16 tiles of query tiles
    constexpr int kKeyTiles8 = kCols / 8;             // n8 tiles of key tiles
    constexpr int kChunks = HeadDim / 32;             // 32-dim chunks, two k-steps each
    const int group = lane / 4, quad = lane % 4;
    u32 query_fragments[kTensorDots ? kQueryTiles16 : 1][kTensorDots ? kChunks : 1][2][4];
    if constexpr (kTensorDots) {
#pragma unroll
      for (int m = 0; m < kQueryTiles16; ++m)
#pragma unroll
        for (int c = 0; c < kChunks; ++c)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int d = 32 * c + 8 * quad + 4 * h;
            const int top = 16 * m + group, bottom = top + 8;  // rows past kRows are zeros
            const auto value = [&](int r, int dim) { return r < kRows ? pooled_q_rows[r][dim] : 0.f; };
            query_fragments[m][c][h][0] = pack_pair<Dtype>(value(top, d), value(top, d + 1));
            query_fragments[m][c][h][1] = pack_pair<Dtype>(value(bottom, d), value(bottom, d + 1));
            query_fragments[m][c][h][2] = pack_pair<Dtype>(value(top, d + 2), value(top, d + 3));
            query_fragments[m][c][h][3] = pack_pair<Dtype>(value(bottom, d + 2), value(bottom, d + 3));
          }
    }
    unsigned long long* fine_row = p.fine_bits + row * p.max_kv_blocks;
    // Real tokens of tile `first_token`.. inside [from, from + width), over the tile's real tokens.
    const auto share_of_tile = [](int first_token, int tokens, int from, int width) {
      const int real = min(Tile, tokens - first_token);
      const int inside = min(min(first_token + Tile, tokens), from + width) - max(first_token, from);
      return inside > 0 ? static_cast<float>(inside) / static_cast<float>(real) : 0.f;
    };
    for (int i = warp; i < kept; i += kSelectWarps) {
      const int kb = kept_list[i];
      if (always_kept(kb)) {
        if (lane == 0) fine_row[i] = kSubtiles == 64 ? ~0ull : (1ull << kSubtiles) - 1ull;
        continue;
      }
      const int tile_k0 = kb * kCols;
      if constexpr (kTensorDots) {
#pragma unroll
        for (int n = 0; n < kKeyTiles8; ++n) {
          // Key tile 8n + group of the pair (the last real one again past the end: P = 0 there).
          const uint4* key_row = reinterpret_cast<const uint4*>(
              static_cast<const char*>(p.pooled_k) +
              ((slice * tiles_k + min(tile_k0 + 8 * n + group, tiles_k - 1)) * HeadDim + 8 * quad) * 2);
          uint4 key[kChunks];
#pragma unroll
          for (int c = 0; c < kChunks; ++c) key[c] = key_row[4 * c];  // dims 32c + 8q .. + 7
          float dots[kQueryTiles16][4] = {};
#pragma unroll
          for (int m = 0; m < kQueryTiles16; ++m)
#pragma unroll
            for (int c = 0; c < kChunks; ++c) {
              mma_16816<Dtype>(dots[m], query_fragments[m][c][0], key[c].x, key[c].y);
              mma_16816<Dtype>(dots[m], query_fragments[m][c][1], key[c].z, key[c].w);
            }
          // dots[m]: rows 16m + group (elements 0, 1) and + 8 (2, 3), key tiles 8n + 2q + {0, 1}.
#pragma unroll
          for (int m = 0; m < kQueryTiles16; ++m)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int r = 16 * m + group + (e / 2) * 8, c = 8 * n + 2 * quad + e % 2;
              if (r < kRows)
                tile_probability[warp][r * kCols + c] =
                    tile_k0 + c < tiles_k ? fast_exp2(dots[m][e] * scale_log2 - row_lse2[r]) : 0.f;
            }
        }
      } else {
        for (int e = lane; e < kRows * kCols; e += 32) {
          const int r = e / kCols, c = e % kCols;
          float probability = 0.f;
          if (tile_k0 + c < tiles_k) {
            const uint4* key_row =
                reinterpret_cast<const uint4*>(static_cast<const char*>(p.pooled_k) + (slice * tiles_k + tile_k0 + c) * HeadDim * 2);
            float dot = 0.f;
#pragma unroll 4
            for (int v = 0; v < HeadDim / 8; ++v) {
              const uint4 packed = key_row[v];
              const u32 words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
              for (int w = 0; w < 4; ++w) {
                float low, high;
                unpack_pair<Dtype>(words[w], low, high);
                dot += pooled_q_rows[r][v * 8 + 2 * w] * low + pooled_q_rows[r][v * 8 + 2 * w + 1] * high;
              }
            }
            probability = fast_exp2(dot * scale_log2 - row_lse2[r]);
          }
          tile_probability[warp][e] = probability;
        }
      }
      __syncwarp();
      for (int s = lane; s < kSubtiles; s += 32) {
        const int qs = s / kKeySubtiles, ks = s % kKeySubtiles;
        const int query_from = q_block * BlockQ + qs * 16, key_from = kb * BlockKV + ks * FineN;
        float mass = 0.f;
        // The tiles that overlap the sub-tile (one, or several smaller ones).
        for (int r = query_from / Tile - tile_q0; r <= (query_from + 15) / Tile - tile_q0; ++r) {
          const float query_share = share_of_tile((tile_q0 + r) * Tile, p.tokens_q, query_from, 16);
          if (query_share == 0.f) continue;
          for (int c = key_from / Tile - tile_k0; c <= (key_from + FineN - 1) / Tile - tile_k0; ++c) {
            const float key_share = share_of_tile((tile_k0 + c) * Tile, p.tokens_kv, key_from, FineN);
            mass += tile_probability[warp][r * kCols + c] * query_share * key_share;
          }
        }
        subtile_mass[warp][s] = mass;
      }
      __syncwarp();
      float total = 0.f;
      for (int s = 0; s < kSubtiles; ++s) total += subtile_mass[warp][s];
      const float target = p.fine_share * total;
      unsigned keep_low = 0, keep_high = 0;
      for (int half = 0; half < 2; ++half) {
        const int s = lane + 32 * half;
        bool keep = false;
        if (s < kSubtiles) {
          const float mass = subtile_mass[warp][s];
          int rank = 0;
          float before = 0.f;  // mass of the sub-tiles ranked ahead
          for (int u = 0; u < kSubtiles; ++u) {
            const float other = subtile_mass[warp][u];
            if (other > mass || (other == mass && u < s)) {
              ++rank;
              before += other;
            }
          }
          keep = rank == 0 || before < target;
        }
        (half == 0 ? keep_low : keep_high) = __ballot_sync(0xffffffffu, keep);
      }
      if (lane == 0) fine_row[i] = (static_cast<unsigned long long>(keep_high) << 32) | keep_low;
      __syncwarp();  // tile_probability and subtile_mass are reused by the next pair
    }
  }
}

}  // namespace sparsejit
