#pragma once
// attention_quality: exact measures of a sparse mask against dense attention
// (attention_quality_params.h has the formats).
//
// block_mass: S = Q K^T on the tensor cores (mma.sync, FlashAttention-2 layout: a warp owns 16
// query rows, K streams through shared memory in steps of 64 keys, double-buffered by
// cp.async); P = exp2(S * scale * log2(e) - lse * log2(e)) is summed over a warp's 16 rows and
// a step's 64 keys, then over the steps of a key block (BlockKV / 64 of them) in a register,
// then over the warps through shared memory. One CTA per query block: BlockQ / 16 warps.
// [N, N] is never stored. Grid: x = QB, y = heads, z = batch. Block: BlockQ * 2 threads.
// Dynamic shared memory: mass_tile<...>::kSharedBytes. Requires Q/K pointers and token
// strides aligned to 16 bytes (host-checked).
//
// output_error: a memory-bound pass over both outputs: each thread reads 16-byte chunks (8
// elements) of rows of its chunk of kOutputErrorRows rows, squares in fp32, then the CTA adds
// up in fp64 and writes its three sums. Grid: x = chunks, y = heads, z = batch; block:
// kOutputErrorThreads.
#include "attention_quality/attention_quality_params.h"
#include "common/mma_tiles.cuh"
#include "common/ptx.cuh"

namespace sparsejit {

template <int HeadDim, int BlockQ>
struct mass_tile {
  static constexpr int kWarps = BlockQ / 16;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kStepKeys = 64;          // keys per shared-memory stage
  static constexpr int kStride = HeadDim + 8;   // padded rows: conflict-free ldmatrix
  static constexpr int kKSteps = HeadDim / 16;
  static constexpr int kScoreTiles = kStepKeys / 8;
  static constexpr int kSharedBytes = (BlockQ + 2 * kStepKeys) * kStride * 2;  // Q, 2 x K
};

template <int Dtype, int HeadDim, int BlockQ, int BlockKV>
__global__ void __launch_bounds__(BlockQ * 2) block_mass(const BlockMassParams p) {
  using Shape = mass_tile<HeadDim, BlockQ>;
  constexpr int kStride = Shape::kStride;
  constexpr int kStepKeys = Shape::kStepKeys;
  constexpr int kStepsPerBlock = BlockKV / kStepKeys;
  static_assert(BlockKV % kStepKeys == 0, "a key block must be whole steps");

  extern __shared__ uint4 shared_raw[];
  unsigned short* q_tile = reinterpret_cast<unsigned short*>(shared_raw);
  unsigned short* k_tiles = q_tile + BlockQ * kStride;  // [2][kStepKeys][kStride]
  // Per warp, the mass of the last two key blocks: thread 0 adds slot kb & 1 up after the
  // barrier that follows block kb; the slot is written again only two blocks later.
  __shared__ float block_sums[2][Shape::kWarps];

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int group = lane / 4;
  const int quad = lane % 4;
  const int q_block = blockIdx.x;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int q_blocks = (p.tokens_q + BlockQ - 1) / BlockQ;
  const int kv_blocks = (p.tokens_kv + BlockKV - 1) / BlockKV;
  const long long slice = static_cast<long long>(batch) * p.heads + head;
  const char* q_base =
      static_cast<const char*>(p.q) + (batch * p.q_batch_stride + head * p.q_head_stride) * 2;
  const char* k_base =
      static_cast<const char*>(p.k) + (batch * p.k_batch_stride + head * p.k_head_stride) * 2;
  const long long q_row_bytes = p.q_token_stride * 2, k_row_bytes = p.k_token_stride * 2;
  const float scale_log2 = p.softmax_scale * 1.4426950408889634f;
  const int steps = (p.tokens_kv + kStepKeys - 1) / kStepKeys;
  float* mass_row = p.mass + (slice * q_blocks + q_block) * kv_blocks;

  load_rows_async<BlockQ, HeadDim, Shape::kThreads>(q_tile, q_base, q_row_bytes, q_block * BlockQ, p.tokens_q);
  load_rows_async<kStepKeys, HeadDim, Shape::kThreads>(k_tiles, k_base, k_row_bytes, 0, p.tokens_kv);
  copy_async_commit();

  // log2 of each of the lane's two rows' normalizers; +inf on padding rows makes their P 0.
  float row_lse2[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = q_block * BlockQ + warp * 16 + group + 8 * h;
    row_lse2[h] = row < p.tokens_q ? p.lse[slice * p.tokens_q + row] * 1.4426950408889634f
                                   : __int_as_float(0x7f800000u);
  }

  u32 q_fragments[Shape::kKSteps][4];
  float block_partial = 0.f;  // this lane's share of the current key block's mass
  for (int step = 0; step < steps; ++step) {
    copy_async_wait<0>();
    __syncthreads();  // K(step) has landed; every warp is done with the other buffer
    if (threadIdx.x == 0 && step > 0 && step % kStepsPerBlock == 0) {
      const int finished = step / kStepsPerBlock - 1;
      float sum = 0.f;
#pragma unroll
      for (int w = 0; w < Shape::kWarps; ++w) sum += block_sums[finished & 1][w];
      mass_row[finished] = sum;
    }
    if (step + 1 < steps) {
      load_rows_async<kStepKeys, HeadDim, Shape::kThreads>(k_tiles + ((step + 1) & 1) * kStepKeys * kStride, k_base,
                                                           k_row_bytes, (step + 1) * kStepKeys, p.tokens_kv);
      copy_async_commit();
    }
    if (step == 0) {
#pragma unroll
      for (int ks = 0; ks < Shape::kKSteps; ++ks)
        load_matrix_x4(q_fragments[ks], q_tile + (warp * 16 + lane % 16) * kStride + ks * 16 + (lane / 16) * 8);
    }
    const unsigned short* k_tile = k_tiles + (step & 1) * kStepKeys * kStride;

    float score[Shape::kScoreTiles][4];
#pragma unroll
    for (int j = 0; j < Shape::kScoreTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) score[j][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < Shape::kKSteps; ++ks)
#pragma unroll
      for (int j = 0; j < Shape::kScoreTiles; j += 2) {
        u32 b[4];
        load_key_fragments<kStride>(b, k_tile, j, ks, lane);
        mma_16816<Dtype>(score[j], q_fragments[ks], b[0], b[1]);
        mma_16816<Dtype>(score[j + 1], q_fragments[ks], b[2], b[3]);
      }
    // Keys past the end add nothing.
    const int columns_left = p.tokens_kv - step * kStepKeys - quad * 2;  // this lane's first key
#pragma unroll
    for (int j = 0; j < Shape::kScoreTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (j * 8 + (e & 1) < columns_left) block_partial += fast_exp2(score[j][e] * scale_log2 - row_lse2[e / 2]);

    if ((step + 1) % kStepsPerBlock == 0 || step + 1 == steps) {
#pragma unroll
      for (int mask = 1; mask < 32; mask *= 2) block_partial += __shfl_xor_sync(0xffffffffu, block_partial, mask);
      if (lane == 0) block_sums[(step / kStepsPerBlock) & 1][warp] = block_partial;
      block_partial = 0.f;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int last = kv_blocks - 1;
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < Shape::kWarps; ++w) sum += block_sums[last & 1][w];
    mass_row[last] = sum;
  }
}

template <int Dtype, int HeadDim>
__global__ void __launch_bounds__(kOutputErrorThreads) output_error(const OutputErrorParams p) {
  constexpr int kChunksPerRow = HeadDim / 8;  // 16-byte chunks
  constexpr int kWarps = kOutputErrorThreads / 32;
  static_assert(HeadDim % 8 == 0, "rows must be whole 16-byte chunks");
  const int chunk = blockIdx.x;
  const long long head = blockIdx.y;
  const long long batch = blockIdx.z;
  const int chunks = (p.tokens + kOutputErrorRows - 1) / kOutputErrorRows;
  const long long slice = batch * p.heads + head;
  const long long base = batch * p.o_batch_stride + head * p.o_head_stride;
  const char* o = static_cast<const char*>(p.o);
  const char* reference = static_cast<const char*>(p.o_reference);

  float squared_error = 0.f, squared_reference = 0.f, recall = 0.f;
  for (int flat = threadIdx.x; flat < kOutputErrorRows * kChunksPerRow; flat += kOutputErrorThreads) {
    const int row = chunk * kOutputErrorRows + flat / kChunksPerRow;
    if (row >= p.tokens) break;
    const long long offset = (base + row * p.o_token_stride) * 2 + (flat % kChunksPerRow) * 16;
    const uint4 actual = *reinterpret_cast<const uint4*>(o + offset);
    const uint4 expected = *reinterpret_cast<const uint4*>(reference + offset);
    const u32 actual_words[4] = {actual.x, actual.y, actual.z, actual.w};
    const u32 expected_words[4] = {expected.x, expected.y, expected.z, expected.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      float a_low, a_high, e_low, e_high;
      unpack_pair<Dtype>(actual_words[w], a_low, a_high);
      unpack_pair<Dtype>(expected_words[w], e_low, e_high);
      squared_error += (a_low - e_low) * (a_low - e_low) + (a_high - e_high) * (a_high - e_high);
      squared_reference += e_low * e_low + e_high * e_high;
    }
    if (flat % kChunksPerRow == 0) {
      const long long lse_index = slice * p.tokens + row;
      recall += fast_exp2((p.lse[lse_index] - p.lse_reference[lse_index]) * 1.4426950408889634f);
    }
  }

  double sums[3] = {squared_error, squared_reference, recall};
  __shared__ double warp_sums[kWarps][3];
#pragma unroll
  for (int i = 0; i < 3; ++i) {
#pragma unroll
    for (int mask = 1; mask < 32; mask *= 2) sums[i] += __shfl_xor_sync(0xffffffffu, sums[i], mask);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32][i] = sums[i];
  }
  __syncthreads();
  if (threadIdx.x < 3) {
    double total = 0.0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += warp_sums[w][threadIdx.x];
    p.partials[(slice * chunks + chunk) * 3 + threadIdx.x] = total;
  }
}

}  // namespace sparsejit
