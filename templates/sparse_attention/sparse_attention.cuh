#pragma once
// sparse_attention_forward: O = softmax(Q K^T * scale) V over a block-CSR mask, optionally
// refined by FG-Attn fine bits (attention_params.h has the formats). FlashAttention-2's
// scheme on mma.sync (sm_80+): a CTA owns BlockM query rows of one query block, each warp
// BlockM / Warps of them (16 or 32 rows: one or two row groups); the CTA walks the kept key
// blocks in BlockN-key tiles, K and V double-buffered in shared memory by cp.async, scores
// and the online softmax in registers, P fed back to the tensor cores straight from the
// score registers.
//
// Work really skipped by fine bits: per warp, every 16 keys that none of the warp's rows keeps
// cost no QK^T and no PV mma and no ldmatrix of K or V (one uniform branch per 16 keys; with
// one row group per warp it jumps over the whole key-dim walk). Within a computed step, keys a
// row does not keep are masked to -inf (so with fine_n = 8 an 8-key half is computed, then
// masked); an 8-key tile a row group does not keep skips its exp2 as well. Loads of K/V tiles
// into shared memory are never skipped (other warps need them).
//
// Grid: x = query blocks * (BlockQ / BlockM), y = heads, z = batch. Block: Warps * 32.
// Dynamic shared memory: attention_tile<...>::kSharedBytes. Requires: Q/K/V/O pointers and
// token strides aligned to 16 bytes, tokens_q, tokens_kv >= 1, softmax_scale > 0 (all
// host-checked).
#include "common/mma_tiles.cuh"
#include "common/ptx.cuh"
#include "sparse_attention/attention_params.h"
#include "sparse_attention/attention_steps.cuh"

namespace sparsejit {

// Traits of one tile configuration.
template <int HeadDim, int BlockM, int BlockN, int Warps>
struct attention_tile {
  static constexpr int kThreads = Warps * 32;
  static constexpr int kRowsPerWarp = BlockM / Warps;
  static constexpr int kRowGroups = kRowsPerWarp / 16;  // 16-row mma groups per warp
  // Rows padded by 16 bytes: the 8 rows an ldmatrix reads start 4 banks apart, no conflicts.
  static constexpr int kStride = HeadDim + 8;
  static constexpr int kKSteps = HeadDim / 16;       // k-steps of Q K^T
  static constexpr int kScoreTiles = BlockN / 8;     // 8-key n-tiles of S
  static constexpr int kOutTiles = HeadDim / 8;      // 8-column n-tiles of O
  static constexpr int kChunksPerRow = HeadDim / 8;  // 16-byte chunks of a row
  static constexpr int kSharedBytes = (BlockM + 4 * BlockN) * kStride * 2;  // Q, 2 x K, 2 x V
  static_assert(kRowsPerWarp == 16 || kRowsPerWarp == 32, "a warp owns 16 or 32 rows");
  static_assert(HeadDim % 16 == 0 && kOutTiles % 2 == 0, "head dim must be a multiple of 16");
  static_assert(BlockN % 16 == 0 && BlockN <= 128, "BlockN must be 16..128, a multiple of 16");
};

template <int Dtype, int HeadDim, int BlockQ, int BlockKV, int BlockM, int BlockN, int Warps,
          int FineN, bool MaskBits>
__global__ void __launch_bounds__(Warps * 32)
    sparse_attention_forward(const SparseAttentionParams params) {
  using Tile = attention_tile<HeadDim, BlockM, BlockN, Warps>;
  constexpr int kRowGroups = Tile::kRowGroups;
  constexpr int kStride = Tile::kStride;
  constexpr int kTilesPerQBlock = BlockQ / BlockM;
  constexpr int kTilesPerKvBlock = BlockKV / BlockN;
  static_assert(BlockQ % BlockM == 0 && BlockKV % BlockN == 0, "tiles must divide the blocks");
  static_assert(FineN == 0 || (BlockKV % FineN == 0 && FineN % 8 == 0 &&
                               (BlockQ / 16) * (BlockKV / FineN) <= 64),
                "fine sub-tiles must fit one 64-bit word per block pair");

  extern __shared__ uint4 shared_raw[];
  unsigned short* q_tile = reinterpret_cast<unsigned short*>(shared_raw);
  unsigned short* k_tiles = q_tile + BlockM * kStride;    // [2][BlockN][kStride]
  unsigned short* v_tiles = k_tiles + 2 * BlockN * kStride;
  // The tiles' shared addresses, for the ldmatrix in the key walk (ptxas folds each one's
  // constant offset into the instruction); K and V buffer b starts b * kTileBytes in.
  const u32 q_shared = shared_address(q_tile);
  const u32 k_shared = shared_address(k_tiles);
  const u32 v_shared = shared_address(v_tiles);
  constexpr u32 kTileBytes = BlockN * kStride * 2;

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int quad = lane % 4;   // the fragment column pair this lane holds

  const int q_block = blockIdx.x / kTilesPerQBlock;
  const int m_in_block = (blockIdx.x % kTilesPerQBlock) * BlockM;
  const int m0 = q_block * BlockQ + m_in_block;
  if (m0 >= params.tokens_q) return;  // a tile past the ragged end of the last block
  const int head = blockIdx.y;
  const int batch = blockIdx.z;

  const int q_blocks = (params.tokens_q + BlockQ - 1) / BlockQ;
  const long long mask_row = (static_cast<long long>(batch) * params.heads + head) * q_blocks + q_block;
  KeptBlockWalk<MaskBits, FineN> walk(params, mask_row);

  const char* q_base = static_cast<const char*>(params.q) +
                       (batch * params.q_batch_stride + head * params.q_head_stride) * 2;
  const char* k_base = static_cast<const char*>(params.k) +
                       (batch * params.k_batch_stride + head * params.k_head_stride) * 2;
  const char* v_base = static_cast<const char*>(params.v) +
                       (batch * params.v_batch_stride + head * params.v_head_stride) * 2;
  const long long k_row_bytes = params.k_token_stride * 2;
  const long long v_row_bytes = params.v_token_stride * 2;
  const float scale_log2 = params.softmax_scale * 1.4426950408889634f;  // exp(x) = exp2(x log2 e)

  float out[kRowGroups][Tile::kOutTiles][4];
  float row_max[kRowGroups][2];
  float row_sum[kRowGroups][2];
#pragma unroll
  for (int rg = 0; rg < kRowGroups; ++rg) {
#pragma unroll
    for (int d = 0; d < Tile::kOutTiles; ++d)
#pragma unroll
      for (int e = 0; e < 4; ++e) out[rg][d][e] = 0.f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_max[rg][h] = negative_infinity();
      row_sum[rg][h] = 0.f;
    }
  }

  // Q's fragments when a warp owns one row group (kept in registers across the key walk).
  u32 q_fragments[kRowGroups == 1 ? Tile::kKSteps : 1][4];
  const int tiles = walk.count() * kTilesPerKvBlock;
  if (tiles > 0) {
    walk.start();
    load_rows_async<BlockM, HeadDim, Tile::kThreads>(q_tile, q_base, params.q_token_stride * 2, m0,
                                                     params.tokens_q);
    copy_async_commit();
    load_rows_async<BlockN, HeadDim, Tile::kThreads>(k_tiles, k_base, k_row_bytes, walk.block * BlockKV,
                                                     params.tokens_kv);
    copy_async_commit();
  }

  for (int t = 0; t < tiles; ++t) {
    const int tile_in_block = t % kTilesPerKvBlock;
    const int n0 = walk.block * BlockKV + tile_in_block * BlockN;
    const u32 k_tile = k_shared + (t & 1) * kTileBytes;  // this tile's K buffer
    unsigned short* v_tile = v_tiles + (t & 1) * BlockN * kStride;
    load_rows_async<BlockN, HeadDim, Tile::kThreads>(v_tile, v_base, v_row_bytes, n0, params.tokens_kv);
    copy_async_commit();
    copy_async_wait<1>();  // Q and K(t) have landed; V(t) may still be in flight
    __syncthreads();

    // Which 8-key score tiles each row group computes (bit j: tile j).
    unsigned keep[kRowGroups];
#pragma unroll
    for (int rg = 0; rg < kRowGroups; ++rg)
      keep[rg] = fine_kept_tiles<Tile::kScoreTiles, BlockKV, FineN>(
          walk.bits, (m_in_block + warp * Tile::kRowsPerWarp + rg * 16) / 16, tile_in_block * BlockN);

    // S = Q K^T for this warp's rows and the tile's BlockN keys.
    float score[kRowGroups][Tile::kScoreTiles][4];
#pragma unroll
    for (int rg = 0; rg < kRowGroups; ++rg)
#pragma unroll
      for (int j = 0; j < Tile::kScoreTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) score[rg][j][e] = 0.f;
    if constexpr (kRowGroups == 1) {
      // One row group: Q's fragments stay in registers for the whole key walk.
      if (t == 0) {
#pragma unroll
        for (int ks = 0; ks < Tile::kKSteps; ++ks)
          load_matrix_x4(q_fragments[ks],
                         q_shared + ((warp * 16 + lane % 16) * kStride + ks * 16 + (lane / 16) * 8) * 2);
      }
      if constexpr (FineN == 0) {
        // Key steps outside, score tiles inside: kScoreTiles independent accumulator chains.
#pragma unroll
        for (int ks = 0; ks < Tile::kKSteps; ++ks)
#pragma unroll
          for (int j = 0; j < Tile::kScoreTiles; j += 2) {
            u32 b[4];
            load_key_fragments<kStride>(b, k_tile, j, ks, lane);
            mma_16816<Dtype>(score[0][j], q_fragments[ks], b[0], b[1]);
            mma_16816<Dtype>(score[0][j + 1], q_fragments[ks], b[2], b[3]);
          }
      } else {
        // Score-tile pairs outside: one uniform branch skips a pair's whole key walk. (Key
        // steps outside with a branch per pair inside measured 1.5x slower on the H100: the
        // branches keep ptxas from hoisting the K fragment loads.)
#pragma unroll
        for (int j = 0; j < Tile::kScoreTiles; j += 2) {
          if (((keep[0] >> j) & 3u) == 0) continue;
#pragma unroll
          for (int ks = 0; ks < Tile::kKSteps; ++ks) {
            u32 b[4];
            load_key_fragments<kStride>(b, k_tile, j, ks, lane);
            mma_16816<Dtype>(score[0][j], q_fragments[ks], b[0], b[1]);
            mma_16816<Dtype>(score[0][j + 1], q_fragments[ks], b[2], b[3]);
          }
        }
      }
    } else {
#pragma unroll
      for (int ks = 0; ks < Tile::kKSteps; ++ks) {
        u32 a[kRowGroups][4];
#pragma unroll
        for (int rg = 0; rg < kRowGroups; ++rg)
          load_matrix_x4(a[rg], q_shared + ((warp * Tile::kRowsPerWarp + rg * 16 + lane % 16) * kStride +
                                            ks * 16 + (lane / 16) * 8) * 2);
#pragma unroll
        for (int j = 0; j < Tile::kScoreTiles; j += 2) {
          bool needed = false;
#pragma unroll
          for (int rg = 0; rg < kRowGroups; ++rg) needed |= ((keep[rg] >> j) & 3u) != 0;
          if (!needed) continue;  // uniform across the warp
          u32 b[4];
          load_key_fragments<kStride>(b, k_tile, j, ks, lane);
#pragma unroll
          for (int rg = 0; rg < kRowGroups; ++rg) {
            mma_16816<Dtype>(score[rg][j], a[rg], b[0], b[1]);
            mma_16816<Dtype>(score[rg][j + 1], a[rg], b[2], b[3]);
          }
        }
      }
    }

    // K(t+1) streams in while this tile's softmax and PV run. Its buffer held K(t-1), which
    // every warp finished with before the barrier above.
    if (t + 1 < tiles) {
      load_rows_async<BlockN, HeadDim, Tile::kThreads>(k_tiles + ((t + 1) & 1) * BlockN * kStride,
                                                       k_base, k_row_bytes,
                                                       tile_in_block + 1 < kTilesPerKvBlock
                                                           ? n0 + BlockN
                                                           : walk.following * BlockKV,
                                                       params.tokens_kv);
      copy_async_commit();
    }

    // Keys past the end and fine-masked tiles score -inf. Only a ragged last tile or a warp
    // with a fine bit off needs it; the test is uniform per warp.
    constexpr unsigned kAllScoreTiles = (1u << Tile::kScoreTiles) - 1u;
#pragma unroll
    for (int rg = 0; rg < kRowGroups; ++rg)
      if (n0 + BlockN > params.tokens_kv || keep[rg] != kAllScoreTiles)
        mask_scores(score[rg], keep[rg], params.tokens_kv - n0 - quad * 2);

    online_softmax<FineN>(score, out, row_max, row_sum, keep, scale_log2);

    // O += P V, P straight from the score registers (the mma C layout of two adjacent 8-key
    // tiles is the A layout of one 16-key step).
    if (t + 1 < tiles) copy_async_wait<1>();  // V(t) has landed; K(t+1) may be in flight
    else copy_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BlockN / 16; ++kk) {
      bool needed = false;
#pragma unroll
      for (int rg = 0; rg < kRowGroups; ++rg) needed |= ((keep[rg] >> (2 * kk)) & 3u) != 0;
      if (!needed) continue;
      u32 a[kRowGroups][4];
#pragma unroll
      for (int rg = 0; rg < kRowGroups; ++rg) pack_probabilities<Dtype>(a[rg], score[rg], kk);
#pragma unroll
      for (int d = 0; d < Tile::kOutTiles; d += 2) {
        u32 b[4];
        load_matrix_x4_transposed(b, v_shared + (t & 1) * kTileBytes +
                                         ((kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * kStride + d * 8 +
                                          (lane / 16) * 8) * 2);
#pragma unroll
        for (int rg = 0; rg < kRowGroups; ++rg) {
          mma_16816<Dtype>(out[rg][d], a[rg], b[0], b[1]);
          mma_16816<Dtype>(out[rg][d + 1], a[rg], b[2], b[3]);
        }
      }
    }

    if (tile_in_block + 1 == kTilesPerKvBlock) walk.next_block();
  }

  // Normalize and store; rows with nothing kept write zeros and LSE = -inf.
  char* o_base = static_cast<char*>(params.o) +
                 (batch * params.o_batch_stride + head * params.o_head_stride) * 2;
  const long long lse_base = (static_cast<long long>(batch) * params.heads + head) * params.tokens_q;
#pragma unroll
  for (int rg = 0; rg < kRowGroups; ++rg)
    store_row_group<Dtype>(params, o_base, lse_base, m0 + warp * Tile::kRowsPerWarp + rg * 16, out[rg],
                           row_max[rg], row_sum[rg], scale_log2, lane);
}

}  // namespace sparsejit
