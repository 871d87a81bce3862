#pragma once
// Helpers of the mma.sync kernels over 16-bit row-major tiles in shared memory: asynchronous
// row loads into padded tiles, the B fragments of a [keys][Stride] tile, and reductions of a
// score row over the mma C layout (a lane holds rows `group` and `group + 8`, columns
// 2 * quad and 2 * quad + 1 of each 8-column tile). Used by sparse_attention, block_score and
// attention_quality.
#include "common/ptx.cuh"

namespace sparsejit {

// Issues cp.async for rows [first_row, first_row + Rows) of a [tokens, HeadDim] matrix whose
// rows are `row_stride_bytes` apart; rows at or past `valid_rows` are zero-filled.
template <int Rows, int HeadDim, int Threads>
__device__ __forceinline__ void load_rows_async(unsigned short* shared, const char* base,
                                     long long row_stride_bytes, int first_row, int valid_rows) {
  constexpr int kChunksPerRow = HeadDim / 8;
  constexpr int kStride = HeadDim + 8;
  constexpr int kChunks = Rows * kChunksPerRow;
  constexpr int kSteps = (kChunks + Threads - 1) / Threads;
  if constexpr (Threads % kChunksPerRow == 0) {
    // A thread's chunks share a column, kRowsPerStep rows apart: one source pointer advanced by
    // a step's rows. (A 64-bit product per row kept 2 registers per step live across the key
    // walk, which made 128 x 64 tiles at D = 128 spill on mma.sync.)
    constexpr int kRowsPerStep = Threads / kChunksPerRow;
    const int row = threadIdx.x / kChunksPerRow, column = threadIdx.x % kChunksPerRow;
    const char* source = base + static_cast<long long>(first_row + row) * row_stride_bytes + column * 16;
    const long long step_bytes = kRowsPerStep * row_stride_bytes;
    unsigned short* target = shared + row * kStride + column * 8;
#pragma unroll
    for (int step = 0; step < kSteps; ++step) {
      if (kChunks % Threads != 0 && threadIdx.x + step * Threads >= kChunks) break;
      const bool valid = first_row + row + step * kRowsPerStep < valid_rows;
      copy_async_16(target + step * kRowsPerStep * kStride, valid ? source : base, valid ? 16 : 0);
      source += step_bytes;
    }
  } else {  // e.g. D = 96 (12 chunks a row) over 128 threads: each chunk its own row and column
#pragma unroll
    for (int step = 0; step < kSteps; ++step) {
      const int chunk = threadIdx.x + step * Threads;
      if (kChunks % Threads != 0 && chunk >= kChunks) break;
      const int row = chunk / kChunksPerRow;
      const int column = chunk % kChunksPerRow;
      const bool valid = first_row + row < valid_rows;
      const char* source =
          base + (valid ? static_cast<long long>(first_row + row) * row_stride_bytes : 0) + column * 16;
      copy_async_16(shared + row * kStride + column * 8, source, valid ? 16 : 0);
    }
  }
}

// B fragments of score tiles j and j + 1 (keys 8j..8j+15) for key step ks (head dims
// 16ks..16ks+15) from a [keys][Stride] tile at shared address `k_tile`: b[0], b[1] for tile j,
// b[2], b[3] for j + 1.
template <int Stride>
__device__ __forceinline__ void load_key_fragments(u32 (&b)[4], u32 k_tile, int j, int ks, int lane) {
  load_matrix_x4(b, k_tile + ((j * 8 + (lane / 16) * 8 + lane % 8) * Stride + ks * 16 + ((lane / 8) % 2) * 8) * 2);
}
template <int Stride>
__device__ __forceinline__ void load_key_fragments(u32 (&b)[4], const unsigned short* k_tile, int j,
                                                   int ks, int lane) {
  load_key_fragments<Stride>(b, shared_address(k_tile), j, ks, lane);
}

// Reduces the 2 * Tiles values one lane holds for row half h (elements 2h, 2h + 1 of each
// 8-key score tile) by a pairwise tree: depth log2(2 * Tiles) instead of a chain of 2 * Tiles
// dependent instructions, which with two warps per scheduler would stall on latency.
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
template <int Tiles, class Op>
__device__ __forceinline__ float reduce_row_half(const float (&score)[Tiles][4], int h, Op op) {
  float partial[Tiles];
#pragma unroll
  for (int j = 0; j < Tiles; ++j) partial[j] = op(score[j][2 * h], score[j][2 * h + 1]);
#pragma unroll
  for (int width = 1; width < Tiles; width *= 2)
#pragma unroll
    for (int j = 0; j + width < Tiles; j += 2 * width) partial[j] = op(partial[j], partial[j + width]);
  return partial[0];
}

// The maximum of row half h over a warp's score tiles: the lane's own values, then the
// four lanes (a quad) that hold the same row.
template <int Tiles>
__device__ __forceinline__ float row_half_max(const float (&score)[Tiles][4], int h) {
  float value = reduce_row_half(score, h, MaxOp{});
  value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, 1));
  return fmaxf(value, __shfl_xor_sync(0xffffffffu, value, 2));
}

}  // namespace sparsejit
