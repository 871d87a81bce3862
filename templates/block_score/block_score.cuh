#pragma once
// block_score: DFSAttn's hierarchical block scoring in two kernels (block_score_params.h has
// the formats).
//
// pool_tiles: the mean of every tile of Tile tokens of Q and K, in fp32, stored in the input
// dtype. Memory-bound: each thread reads one 16-byte chunk (8 elements) of each token of one
// tile, so a warp reads whole rows. Grid: x covers max(Tq, Tk) * HeadDim / 8 chunks in
// Threads, y = heads, z = batch * 2 (even: Q, odd: K). Requires Q/K pointers and token strides
// aligned to 16 bytes (host-checked).
//
// score_blocks: the pooled scores S = Qp Kp^T on the tensor cores (mma.sync, FlashAttention-2
// layout: a warp owns 16 query tiles, Kp streams through shared memory in BlockN-tile steps,
// double-buffered by cp.async). Two sweeps over all key tiles: the first finds each row's
// maximum and normalizer (online), the second forms P = exp(S * scale - LSE) and sums it per
// (query block, key block): first over the columns of a key block (a lane's values, then the
// lanes of a quad), then over the rows of a query block (shuffles across the lanes that hold
// them). A query block (BlockQ / Tile <= 16 tiles) lies inside one warp's 16 rows and a key
// block (BlockKV / Tile <= 16 tiles) inside one step, so each score is written once, by one
// lane, without atomics. [Tq, Tk] is never stored. Grid: x = ceil(Tq / (16 * Warps)),
// y = heads, z = batch. Block: Warps * 32. Dynamic shared memory: score_tile<...>::kSharedBytes.
#include "block_score/block_score_params.h"
#include "common/mma_tiles.cuh"
#include "common/ptx.cuh"

namespace sparsejit {

template <int Dtype, int HeadDim, int Tile, int Threads>
__global__ void __launch_bounds__(Threads) pool_tiles(const BlockScoreParams p) {
  constexpr int kChunksPerRow = HeadDim / 8;  // 16-byte chunks
  static_assert(HeadDim % 8 == 0, "rows must be whole 16-byte chunks");
  const bool is_key = (blockIdx.z & 1) != 0;
  const long long batch = blockIdx.z / 2;
  const long long head = blockIdx.y;
  const int tokens = is_key ? p.tokens_kv : p.tokens_q;
  const int tiles = (tokens + Tile - 1) / Tile;
  const int flat = blockIdx.x * Threads + threadIdx.x;
  const int tile = flat / kChunksPerRow;
  const int chunk = flat % kChunksPerRow;
  if (tile >= tiles) return;

  const long long token_stride = is_key ? p.k_token_stride : p.q_token_stride;
  const char* base = static_cast<const char*>(is_key ? p.k : p.q) +
                     (batch * (is_key ? p.k_batch_stride : p.q_batch_stride) +
                      head * (is_key ? p.k_head_stride : p.q_head_stride)) * 2 +
                     chunk * 16;
  const int first = tile * Tile;
  const int count = tokens - first < Tile ? tokens - first : Tile;  // the ragged last tile
  float sum[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll 8
  for (int n = 0; n < count; ++n) {
    const uint4 packed = *reinterpret_cast<const uint4*>(base + (first + n) * token_stride * 2);
    const u32 words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      float low, high;
      unpack_pair<Dtype>(words[w], low, high);
      sum[2 * w] += low;
      sum[2 * w + 1] += high;
    }
  }
  const float inverse = 1.f / static_cast<float>(count);
  uint4 mean;
  mean.x = pack_pair<Dtype>(sum[0] * inverse, sum[1] * inverse);
  mean.y = pack_pair<Dtype>(sum[2] * inverse, sum[3] * inverse);
  mean.z = pack_pair<Dtype>(sum[4] * inverse, sum[5] * inverse);
  mean.w = pack_pair<Dtype>(sum[6] * inverse, sum[7] * inverse);
  char* pooled = static_cast<char*>(is_key ? p.pooled_k : p.pooled_q);
  *reinterpret_cast<uint4*>(pooled + (((batch * p.heads + head) * tiles + tile) * HeadDim) * 2 + chunk * 16) =
      mean;
}

template <int HeadDim, int Warps, int BlockN>
struct score_tile {
  static constexpr int kThreads = Warps * 32;
  static constexpr int kRows = Warps * 16;       // query tiles per CTA
  static constexpr int kStride = HeadDim + 8;    // padded rows: conflict-free ldmatrix
  static constexpr int kKSteps = HeadDim / 16;
  static constexpr int kScoreTiles = BlockN / 8;  // 8-column n-tiles of S per step
  static constexpr int kSharedBytes = (kRows + 2 * BlockN) * kStride * 2;  // Qp, 2 x Kp
};

template <int Dtype, int HeadDim, int Tile, int BlockQ, int BlockKV, int Warps, int BlockN>
__global__ void __launch_bounds__(Warps * 32) score_blocks(const BlockScoreParams p) {
  using Shape = score_tile<HeadDim, Warps, BlockN>;
  constexpr int kStride = Shape::kStride;
  constexpr int kScoreTiles = Shape::kScoreTiles;
  constexpr int kRowsPerQBlock = BlockQ / Tile;   // R: 2..16 query tiles
  constexpr int kColsPerKvBlock = BlockKV / Tile;  // C: 2..16 key tiles
  static_assert(16 % kRowsPerQBlock == 0, "a query block must lie inside one warp's 16 rows");
  static_assert(BlockN % kColsPerKvBlock == 0 && kColsPerKvBlock % 2 == 0,
                "a key block must lie inside one step and span whole column pairs");
  // Per-lane column groups: a key block of >= 8 tiles spans whole n-tiles (reduced over the
  // quad's 4 lanes); of 4 tiles, half an n-tile (2 lanes); of 2 tiles, one lane's pair.
  constexpr int kGroups = kColsPerKvBlock >= 8 ? BlockN / kColsPerKvBlock : kScoreTiles;
  constexpr int kQuadLanes = kColsPerKvBlock >= 8 ? 4 : kColsPerKvBlock / 2;

  extern __shared__ uint4 shared_raw[];
  unsigned short* q_tile = reinterpret_cast<unsigned short*>(shared_raw);
  unsigned short* k_tiles = q_tile + Shape::kRows * kStride;  // [2][BlockN][kStride]

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int group = lane / 4;
  const int quad = lane % 4;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int tiles_q = (p.tokens_q + Tile - 1) / Tile;
  const int tiles_k = (p.tokens_kv + Tile - 1) / Tile;
  const int q_blocks = (p.tokens_q + BlockQ - 1) / BlockQ;
  const int kv_blocks = (p.tokens_kv + BlockKV - 1) / BlockKV;
  const int row0 = blockIdx.x * Shape::kRows;
  const int warp_row0 = row0 + warp * 16;
  const long long slice = static_cast<long long>(batch) * p.heads + head;
  const char* q_base = static_cast<const char*>(p.pooled_q) + slice * tiles_q * HeadDim * 2;
  const char* k_base = static_cast<const char*>(p.pooled_k) + slice * tiles_k * HeadDim * 2;
  constexpr long long kRowBytes = HeadDim * 2;
  const float scale_log2 = p.softmax_scale * 1.4426950408889634f;
  const int steps = (tiles_k + BlockN - 1) / BlockN;

  load_rows_async<Shape::kRows, HeadDim, Shape::kThreads>(q_tile, q_base, kRowBytes, row0, tiles_q);
  load_rows_async<BlockN, HeadDim, Shape::kThreads>(k_tiles, k_base, kRowBytes, 0, tiles_k);
  copy_async_commit();

  u32 q_fragments[Shape::kKSteps][4];
  float row_max[2] = {negative_infinity(), negative_infinity()};  // of S * scale_log2
  float row_sum[2] = {0.f, 0.f};
  float row_lse2[2];  // log2 of the normalizer, from the first sweep; +inf for padding rows

  for (int g = 0; g < 2 * steps; ++g) {
    const int step = g < steps ? g : g - steps;
    copy_async_wait<0>();
    __syncthreads();  // Kp(g) has landed; every warp is done with the other buffer
    if (g + 1 < 2 * steps) {
      const int next = g + 1 < steps ? g + 1 : g + 1 - steps;
      load_rows_async<BlockN, HeadDim, Shape::kThreads>(k_tiles + ((g + 1) & 1) * BlockN * kStride,
                                                        k_base, kRowBytes, next * BlockN, tiles_k);
      copy_async_commit();
    }
    if (g == 0) {
#pragma unroll
      for (int ks = 0; ks < Shape::kKSteps; ++ks)
        load_matrix_x4(q_fragments[ks], q_tile + (warp * 16 + lane % 16) * kStride + ks * 16 + (lane / 16) * 8);
    }
    const unsigned short* k_tile = k_tiles + (g & 1) * BlockN * kStride;

    float score[kScoreTiles][4];
#pragma unroll
    for (int j = 0; j < kScoreTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) score[j][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < Shape::kKSteps; ++ks)
#pragma unroll
      for (int j = 0; j < kScoreTiles; j += 2) {
        u32 b[4];
        load_key_fragments<kStride>(b, k_tile, j, ks, lane);
        mma_16816<Dtype>(score[j], q_fragments[ks], b[0], b[1]);
        mma_16816<Dtype>(score[j + 1], q_fragments[ks], b[2], b[3]);
      }
    // Scaled to log2 units; key tiles past the end score -inf.
    const int columns_left = tiles_k - step * BlockN - quad * 2;  // this lane's first column
#pragma unroll
    for (int j = 0; j < kScoreTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        score[j][e] = j * 8 + (e & 1) < columns_left ? score[j][e] * scale_log2 : negative_infinity();

    if (g < steps) {
      // First sweep: online maximum and normalizer. Every step holds a real column, so the
      // maximum is finite after the first one.
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float new_max = fmaxf(row_max[h], row_half_max(score, h));
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kScoreTiles; ++j)
          sum += fast_exp2(score[j][2 * h] - new_max) + fast_exp2(score[j][2 * h + 1] - new_max);
        row_sum[h] = row_sum[h] * fast_exp2(row_max[h] - new_max) + sum;
        row_max[h] = new_max;
      }
      if (g == steps - 1) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float sum = row_sum[h];
          sum += __shfl_xor_sync(0xffffffffu, sum, 1);
          sum += __shfl_xor_sync(0xffffffffu, sum, 2);
          const int row = warp_row0 + group + 8 * h;
          const float lse2 = row_max[h] + fast_log2(sum);
          row_lse2[h] = row < tiles_q ? lse2 : __int_as_float(0x7f800000u);  // P = 0 on padding rows
          if (row < tiles_q && quad == 0) p.tile_lse[slice * tiles_q + row] = lse2 * 0.6931471805599453f;
        }
      }
      continue;
    }

    // Second sweep: P, summed per (query block, key block).
    float partial[2][kGroups];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int u = 0; u < kGroups; ++u) partial[h][u] = 0.f;
#pragma unroll
      for (int j = 0; j < kScoreTiles; ++j) {
        const float pair = fast_exp2(score[j][2 * h] - row_lse2[h]) + fast_exp2(score[j][2 * h + 1] - row_lse2[h]);
        partial[h][kColsPerKvBlock >= 8 ? j * 8 / kColsPerKvBlock : j] += pair;
      }
    }
    // Columns: the lanes of a quad that share a key block.
#pragma unroll
    for (int mask = 1; mask < kQuadLanes; mask *= 2)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int u = 0; u < kGroups; ++u) partial[h][u] += __shfl_xor_sync(0xffffffffu, partial[h][u], mask);
    // Rows: the groups (lanes 4 apart) that share a query block, and both halves for 16 rows.
    constexpr int kGroupLanes = kRowsPerQBlock >= 8 ? 8 : kRowsPerQBlock;
#pragma unroll
    for (int mask = 4; mask < 4 * kGroupLanes; mask *= 2)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int u = 0; u < kGroups; ++u) partial[h][u] += __shfl_xor_sync(0xffffffffu, partial[h][u], mask);
    if constexpr (kRowsPerQBlock == 16) {
#pragma unroll
      for (int u = 0; u < kGroups; ++u) partial[0][u] += partial[1][u];
    }

    const bool writer = (quad % kQuadLanes) == 0 && (group % kGroupLanes) == 0;
    if (!writer) continue;
#pragma unroll
    for (int h = 0; h < (kRowsPerQBlock == 16 ? 1 : 2); ++h) {
      const int q_block = (warp_row0 + group + 8 * h) / kRowsPerQBlock;
      if (q_block >= q_blocks) continue;
      float* out = p.scores + (slice * q_blocks + q_block) * kv_blocks;
#pragma unroll
      for (int u = 0; u < kGroups; ++u) {
        const int first_column = kColsPerKvBlock >= 8 ? u * kColsPerKvBlock : u * 8 + quad * 2;
        const int kv_block = (step * BlockN + first_column) / kColsPerKvBlock;
        if (kv_block < kv_blocks) out[kv_block] = partial[h][u];
      }
    }
  }
}

}  // namespace sparsejit
