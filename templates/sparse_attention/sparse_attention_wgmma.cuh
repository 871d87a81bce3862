#pragma once
// sparse_attention_forward_wgmma: the Hopper (sm_90a) variant of sparse_attention.cuh, same
// semantics, formats and limits (attention_params.h), after FlashAttention-3's scheme.
//
// Persistent: each CTA walks work items (query tiles of BlockM = 64 or 128 rows of one query
// block, of one batch and head; numbered query tiles fastest, then heads, then batches). On
// the persistent grid a dynamic scheduler hands them out in that order (an atomic counter,
// params.work_counter), so the CTAs running at once stay on neighbouring tiles of one head
// and share its K and V in L2, however long each item takes; without a counter CTA c walks
// the items c, c + gridDim.x, ... (a CTA per item). A CTA has one producer warpgroup and
// BlockM / 64 consumer warpgroups of 64 rows each. The producer (one thread) takes the items,
// hands each to the consumers through shared memory with its Q (an empty item's Q barrier
// completes with no copy; -1 ends the walk), walks each
// item's kept key blocks and loads Q and each BlockN-key tile of K and V by TMA into a ring of
// Stages shared-memory stages that runs on across items, each stage with a "full" mbarrier
// (bytes landed) and an "empty" one (every consumer warp is done with it); Q has its own pair.
// So the next item's Q and first tiles load while the consumers finish and store this one.
// Consumers compute S = Q K^T with wgmma (both operands in shared memory), the online softmax
// in registers, and O += P V with P from registers; the producer gives its registers to them
// (setmaxnreg). Each tile's softmax overlaps the previous tile's O += P V, and at D = 128 the
// two consumer warpgroups take turns to issue their products (ping-pong, below).
//
// Work really skipped by fine bits: a key tile that none of a warpgroup's 64 rows keeps costs
// that warpgroup no wgmma and no softmax (the K/V tile is still loaded: the other consumer
// warpgroup may need it). Inside a computed tile, keys a row does not keep are masked to
// -inf; wgmma has no finer skip.
//
// O leaves through shared memory where it fits (kOStaged) and O's strides allow a tensor map
// (params.o_tensor_map): each consumer warpgroup writes its 64 normalized rows into its
// staging tile (stmatrix) and one of its threads stores them by TMA without waiting, so the
// next item starts at once; the staging tile is written again only after that store has read
// it. Otherwise each thread stores its own elements (4-byte stores, every warp touching 8 rows
// at a time), which took ~3,400 cycles of each item at D = 128 (clock64 traces on the H100).
//
// Shared memory (1024-byte aligned for the 128-byte swizzle): one or two Q buffers
// (kQBuffers), each HeadDim / 64 panels of [BlockM][64], then (kOStaged) the O staging
// tiles, per consumer warpgroup HeadDim / 64 panels of [64][64], then Stages K tiles and
// Stages V tiles as panels of [BlockN][64], then the barriers and the handed-over item index
// per Q buffer. TMA zero-fills rows past the end of the tensors on loads and leaves them out
// on stores.
//
// Grid: x = at most the work items (query blocks * (BlockQ / BlockM) * heads * batch), a
// full wave of resident CTAs; y = z = 1. Block: the Tile's kThreads. Dynamic shared memory:
// kSharedBytes. Requires what sparse_attention.cuh requires,
// plus tensor maps of Q, K, V (4-D: head dim, tokens, heads, batch; box 64 x BlockM for Q
// and 64 x BlockN for K and V; 128-byte swizzle) and head/batch strides that TMA accepts
// (multiples of 16 bytes), and with params.o_tensor_map set, O's map (box 64 x 64): all
// built and checked on the host.
#include "common/hopper.cuh"
#include "sparse_attention/attention_steps.cuh"

namespace sparsejit {

// Traits of one tile configuration of the wgmma kernel.
template <int HeadDim, int BlockM, int BlockN, int Stages>
struct wgmma_attention_tile {
  static constexpr int kConsumers = BlockM / 64;  // consumer warpgroups, 64 rows each
  static constexpr int kThreads = (kConsumers + 1) * 128;
  // Two consumers fill an SM's registers alone; one consumer leaves room for a second CTA.
  static constexpr int kMinBlocks = kConsumers == 2 ? 1 : 2;
  // setmaxnreg moves registers between the warpgroups of a CTA, within what the launch gave
  // it: __launch_bounds__ allots each thread the SM's 64K registers / (kThreads * kMinBlocks),
  // rounded down to a multiple of 8 (168 with two consumers, 128 with one). The producer keeps
  // 24 and the consumers share the rest, rounded down to a multiple of 8 (240 with two
  // consumers, 232 with one); asking for more than was released would wait forever.
  // ptxas 13.0 (tools/wgmma_sass.sh): the producer thread, which takes the items from a
  // counter and hands them over, spills 32-60 bytes at 24 registers (local memory in its item
  // loop, none in the consumers' HGMMA loop); 32 or 48 remove most or all of that but leave
  // the consumers 232 or 224, which measured 1-5% slower at D = 64 on the H100 (BENCHMARKS.md,
  // fifth and sixth sessions).
  static constexpr int kEntryRegisters = 65536 / (kThreads * kMinBlocks) / 8 * 8;
  static constexpr int kProducerRegisters = 24;
  static constexpr int kConsumerRegisters =
      (kEntryRegisters * kThreads - kProducerRegisters * 128) / (kConsumers * 128) / 8 * 8 > 240
          ? 240
          : (kEntryRegisters * kThreads - kProducerRegisters * 128) / (kConsumers * 128) / 8 * 8;
  static_assert(kProducerRegisters * 128 + kConsumerRegisters * kConsumers * 128 <= kEntryRegisters * kThreads,
                "setmaxnreg cannot hand out more registers than the launch gave the CTA");
  static constexpr int kPanels = HeadDim / 64;  // 64-column panels of 128-byte rows
  static constexpr int kQBytes = BlockM * HeadDim * 2;
  static constexpr int kTileBytes = BlockN * HeadDim * 2;  // one K or V tile
  static constexpr int kScoreTiles = BlockN / 8;
  static constexpr int kOutTiles = HeadDim / 8;
  static constexpr int kConsumerOBytes = 64 * HeadDim * 2;  // one consumer's O staging tile
  // Dynamic shared memory with `q_buffers` Q buffers and O staged or not: 1024 bytes of
  // alignment slack, the Q buffers, the O staging tiles (as many bytes as a Q buffer), Stages K
  // and V tiles, the mbarriers (Q full and Q empty per Q buffer; K full, V full, K empty,
  // V empty per stage) and a slot of 8 bytes per Q buffer for the item index the producer
  // hands over with it (AttentionConfig::shared_bytes mirrors this).
  static constexpr int shared_bytes_with(int q_buffers, bool o_staged) {
    return 1024 + (q_buffers + (o_staged ? 1 : 0)) * kQBytes + 2 * Stages * kTileBytes +
           (2 * q_buffers + 4 * Stages) * 8 + q_buffers * 8;
  }
  // Where the shared memory of an sm_90 CTA (227 KB) allows, Q is double-buffered, so that the
  // next item's Q loads while this item runs instead of after its last S = Q K^T (all but D =
  // 128 with 128-row tiles and 3 stages), and then O is staged for a TMA store (the same set
  // here: D = 128 with 128 x 128 tiles and 2 stages takes 225 KB with both).
  static constexpr int kMaxSharedBytes = 227 * 1024;
  static constexpr int kQBuffers = shared_bytes_with(2, false) <= kMaxSharedBytes ? 2 : 1;
  static constexpr bool kOStaged = shared_bytes_with(kQBuffers, true) <= kMaxSharedBytes;
  static constexpr int kBarriers = 2 * kQBuffers + 4 * Stages;
  static constexpr int kSharedBytes = shared_bytes_with(kQBuffers, kOStaged);
  static_assert(kSharedBytes <= kMaxSharedBytes, "the tile does not fit an sm_90 CTA's shared memory");
  static_assert(BlockM == 64 || BlockM == 128, "64 rows per consumer warpgroup, one or two of them");
  static_assert(BlockN == 64 || BlockN == 128, "wgmma shapes of this kernel: n64 and n128");
  static_assert(HeadDim == 64 || HeadDim == 128, "head dims in whole 64-column panels");
  static_assert(Stages >= 2 && Stages <= 4, "2 to 4 pipeline stages");
};

// Writes one warp's 16 rows of O (the mma C layout: out[d] holds head dims 8d..8d+7), scaled
// by the rows' inverse sums, into a consumer's staging tile of 64 rows starting at row
// `first_row`: HeadDim / 64 panels of [64][64] with the 128-byte swizzle (16-byte chunk j of
// row r at chunk j ^ (r % 8)), as a TMA store of a 64 x 64 box reads it. One stmatrix.x4 per
// 16 head dims: its matrices are rows 0-7 and 8-15 of the first 8 head dims, then of the next
// 8, and lane l addresses row l % 8 of matrix l / 8. Rows 16 bytes apart in a chunk column
// fall in 8 different chunks, so no bank conflicts.
template <int Dtype, int OutTiles>
__device__ __forceinline__ void stage_row_group(unsigned char* staging, int first_row,
                                                const float (&out)[OutTiles][4], const float (&inverse)[2],
                                                int lane) {
  const int matrix = lane / 8;
  const int row = first_row + (matrix & 1) * 8 + lane % 8;
#pragma unroll
  for (int k = 0; k < OutTiles / 2; ++k) {
    const int column = 16 * k + (matrix >> 1) * 8;  // the first of this lane's 8 head dims
    unsigned char* chunk = staging + (column / 64) * 64 * 128 + row * 128 + ((((column % 64) / 8) ^ (row % 8)) * 16);
    store_matrix_x4(chunk, pack_pair<Dtype>(out[2 * k][0] * inverse[0], out[2 * k][1] * inverse[0]),
                    pack_pair<Dtype>(out[2 * k][2] * inverse[1], out[2 * k][3] * inverse[1]),
                    pack_pair<Dtype>(out[2 * k + 1][0] * inverse[0], out[2 * k + 1][1] * inverse[0]),
                    pack_pair<Dtype>(out[2 * k + 1][2] * inverse[1], out[2 * k + 1][3] * inverse[1]));
  }
}

template <int Dtype, int HeadDim, int BlockQ, int BlockKV, int BlockM, int BlockN, int Stages,
          int FineN, bool MaskBits>
__global__ void __launch_bounds__(wgmma_attention_tile<HeadDim, BlockM, BlockN, Stages>::kThreads,
                                  wgmma_attention_tile<HeadDim, BlockM, BlockN, Stages>::kMinBlocks)
    sparse_attention_forward_wgmma(const __grid_constant__ SparseAttentionParams params,
                                   const __grid_constant__ TensorMap q_map,
                                   const __grid_constant__ TensorMap k_map,
                                   const __grid_constant__ TensorMap v_map,
                                   const __grid_constant__ TensorMap o_map) {
  using Tile = wgmma_attention_tile<HeadDim, BlockM, BlockN, Stages>;
  constexpr int kTilesPerQBlock = BlockQ / BlockM;
  constexpr int kTilesPerKvBlock = BlockKV / BlockN;
  static_assert(BlockQ % BlockM == 0 && BlockKV % BlockN == 0, "tiles must divide the blocks");
  static_assert(FineN == 0 || (BlockKV % FineN == 0 && FineN % 8 == 0 &&
                               (BlockQ / 16) * (BlockKV / FineN) <= 64),
                "fine sub-tiles must fit one 64-bit word per block pair");

  extern __shared__ unsigned char shared_raw[];
  // The host computes the same size (AttentionConfig::shared_bytes); a launch with less would
  // corrupt shared memory, so it stops here instead (the launch then reports an illegal
  // instruction).
  if (dynamic_shared_bytes() < Tile::kSharedBytes) __trap();
  unsigned char* q_tile = shared_raw + ((1024u - (shared_address(shared_raw) & 1023u)) & 1023u);
  unsigned char* o_staging = q_tile + Tile::kQBuffers * Tile::kQBytes;  // [kConsumers][kPanels][64][64]
  unsigned char* k_tiles = o_staging + (Tile::kOStaged ? Tile::kQBytes : 0);  // [Stages][kPanels][BlockN][64]
  unsigned char* v_tiles = k_tiles + Stages * Tile::kTileBytes;
  unsigned long long* q_full = reinterpret_cast<unsigned long long*>(v_tiles + Stages * Tile::kTileBytes);
  unsigned long long* q_empty = q_full + Tile::kQBuffers;
  unsigned long long* k_full = q_empty + Tile::kQBuffers;
  unsigned long long* v_full = k_full + Stages;
  unsigned long long* k_empty = v_full + Stages;
  unsigned long long* v_empty = k_empty + Stages;
  // Per Q buffer, the item whose Q its q_full barrier announces, written by the producer before
  // it arrives there; -1: no more items. Item h (counting from 0 in this CTA) uses buffer
  // h % kQBuffers, in that buffer's phase (h / kQBuffers) & 1.
  int* handed_item = reinterpret_cast<int*>(v_empty + Stages);

  // One work item: a query tile of one (batch, head), and its mask row.
  const int q_blocks = (params.tokens_q + BlockQ - 1) / BlockQ;
  const int q_tiles = q_blocks * kTilesPerQBlock;
  const int items = q_tiles * params.heads * params.batch;  // below 2^30 (validated on the host)
  struct WorkItem {
    int m_in_block, m0, head, batch;
    long long mask_row;
  };
  const auto work_item = [&](int item) {
    WorkItem w;
    const int tile = item % q_tiles;
    const int batch_head = item / q_tiles;
    w.head = batch_head % params.heads;
    w.batch = batch_head / params.heads;
    w.m_in_block = (tile % kTilesPerQBlock) * BlockM;
    w.m0 = (tile / kTilesPerQBlock) * BlockQ + w.m_in_block;
    w.mask_row = batch_head * q_blocks + tile / kTilesPerQBlock;
    return w;
  };

  if (threadIdx.x == 0) {
    for (int b = 0; b < Tile::kQBuffers; ++b) {
      barrier_init(&q_full[b], 1);
      barrier_init(&q_empty[b], Tile::kConsumers * 4);  // one arrival per consumer warp
    }
    for (int s = 0; s < Stages; ++s) {
      barrier_init(&k_full[s], 1);
      barrier_init(&v_full[s], 1);
      barrier_init(&k_empty[s], Tile::kConsumers * 4);
      barrier_init(&v_empty[s], Tile::kConsumers * 4);
    }
    barrier_init_fence();
  }
  __syncthreads();

  const int warpgroup = threadIdx.x / 128;
  if (warpgroup == 0) {
    // Producer: one thread issues every copy; a stage (or Q) is refilled once all consumer
    // warps released it (the first round waits on parity 1 of fresh barriers: no wait).
    release_registers<Tile::kProducerRegisters>();
    if (threadIdx.x != 0) return;
    int ring = 0;        // tiles loaded so far, over all items: the ring position
    int q_loads = 0;     // items handed over so far
    int static_item = blockIdx.x;
    const auto take_item = [&]() -> int {
      if (params.work_counter == nullptr) {
        const int item = static_item;
        static_item += gridDim.x;
        return item;
      }
      return static_cast<int>(atomicAdd(params.work_counter, 1u));
    };
    for (int item = take_item(); item < items; item = take_item()) {
      const WorkItem w = work_item(item);
      if (w.m0 >= params.tokens_q) continue;  // a tile past the ragged end of the last block
      KeptBlocks<MaskBits> kept_blocks(params, w.mask_row);
      const int tiles = kept_blocks.count * kTilesPerKvBlock;
      const int buffer = q_loads % Tile::kQBuffers;
      // The buffer's last item has been read and its Q used.
      barrier_wait(&q_empty[buffer], ((q_loads / Tile::kQBuffers) & 1) ^ 1);
      handed_item[buffer] = item;
      ++q_loads;
      if (tiles == 0) {  // the consumers write zeros
        barrier_arrive(&q_full[buffer]);
        continue;
      }
      barrier_arrive_expect_bytes(&q_full[buffer], Tile::kQBytes);
#pragma unroll
      for (int p = 0; p < Tile::kPanels; ++p)
        tensor_load_4d(q_tile + buffer * Tile::kQBytes + p * BlockM * 128, q_map, &q_full[buffer], p * 64, w.m0,
                       w.head, w.batch);
      int block = 0;
      for (int t = 0; t < tiles; ++t, ++ring) {
        if (t % kTilesPerKvBlock == 0) block = kept_blocks.kept(t / kTilesPerKvBlock);
        const int n0 = block * BlockKV + (t % kTilesPerKvBlock) * BlockN;
        const int stage = ring % Stages;
        const int phase = (ring / Stages) & 1;
        unsigned char* k_tile = k_tiles + stage * Tile::kTileBytes;
        unsigned char* v_tile = v_tiles + stage * Tile::kTileBytes;
        barrier_wait(&k_empty[stage], phase ^ 1);
        barrier_arrive_expect_bytes(&k_full[stage], Tile::kTileBytes);
#pragma unroll
        for (int p = 0; p < Tile::kPanels; ++p)
          tensor_load_4d(k_tile + p * BlockN * 128, k_map, &k_full[stage], p * 64, n0, w.head, w.batch);
        barrier_wait(&v_empty[stage], phase ^ 1);
        barrier_arrive_expect_bytes(&v_full[stage], Tile::kTileBytes);
#pragma unroll
        for (int p = 0; p < Tile::kPanels; ++p)
          tensor_load_4d(v_tile + p * BlockN * 128, v_map, &v_full[stage], p * 64, n0, w.head, w.batch);
      }
    }
    const int buffer = q_loads % Tile::kQBuffers;
    barrier_wait(&q_empty[buffer], ((q_loads / Tile::kQBuffers) & 1) ^ 1);
    handed_item[buffer] = -1;
    barrier_arrive(&q_full[buffer]);
    if (params.work_counter != nullptr) {
      // The last CTA to finish taking items sets the counters back to zero for the next
      // launch on this stream: every other CTA took its last item before counting itself.
      __threadfence();
      if (atomicAdd(params.work_counter + 1, 1u) == gridDim.x - 1) {
        atomicExch(params.work_counter, 0u);
        atomicExch(params.work_counter + 1, 0u);
      }
    }
    return;
  }

  // Consumers.
  claim_registers<Tile::kConsumerRegisters>();
  const int consumer = warpgroup - 1;
  const int warp_in_group = (threadIdx.x / 32) % 4;
  const int lane = threadIdx.x % 32;
  const int quad = lane % 4;
  const float scale_log2 = params.softmax_scale * 1.4426950408889634f;
  int ring = 0;     // the producer's ring position of the item's first tile
  int q_loads = 0;  // items handed over so far
  // Descriptors of this warpgroup's rows of Q buffer 0 and of stage 0's K and V tiles; every
  // operand of a wgmma below is one of them plus a byte offset (descriptor_at).
  const unsigned long long q_descriptor = swizzled_descriptor(q_tile + consumer * 64 * 128, 16, 1024);
  const unsigned long long k_descriptor = swizzled_descriptor(k_tiles, 16, 1024);
  const unsigned long long v_descriptor = swizzled_descriptor(v_tiles, BlockN * 128, 1024);

  // Ping-pong (FlashAttention-3): two consumer warpgroups take turns to issue their products,
  // named barrier 1 + c being consumer c's turn, so that one's softmax runs under the other's
  // products. Both walk the same tiles, so the turns pair up; not with fine bits, where a
  // warpgroup may skip a tile the other computes. Consumer 0 goes first. Measured on the H100
  // (BENCHMARKS.md, version 5): +4-10% at D = 128, 1-3% slower at D = 64 (shorter products
  // hide less softmax), so D = 128 only.
  constexpr bool kPingPong = Tile::kConsumers == 2 && FineN == 0 && HeadDim >= 128;
  constexpr int kPingPongThreads = 2 * 128;
  if (kPingPong && consumer == 1) named_barrier_arrive(1, kPingPongThreads);

  for (;;) {
    const int buffer = q_loads % Tile::kQBuffers;
    barrier_wait(&q_full[buffer], (q_loads / Tile::kQBuffers) & 1);
    ++q_loads;
    const int item = handed_item[buffer];
    if (item < 0) break;
    const WorkItem w = work_item(item);
    KeptBlockWalk<MaskBits, FineN> walk(params, w.mask_row);  // the consumer's own walk
    const int tiles = walk.count() * kTilesPerKvBlock;
    const int first_subtile = (w.m_in_block + consumer * 64) / 16;  // the warpgroup's first 16 rows

    float out[1][Tile::kOutTiles][4];
    float row_max[1][2], row_sum[1][2];
#pragma unroll
    for (int d = 0; d < Tile::kOutTiles; ++d)
#pragma unroll
      for (int e = 0; e < 4; ++e) out[0][d][e] = 0.f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_max[0][h] = negative_infinity();
      row_sum[0][h] = 0.f;
    }

    if (tiles > 0) {
      walk.start();
    } else {  // the item is read: the producer may hand over the next
      __syncwarp();
      if (lane == 0) barrier_arrive(&q_empty[buffer]);
    }

    // Software pipeline across tiles (FlashAttention-3's intra-warpgroup overlap): tile t's
    // S = Q K^T is issued, then the previous tile's O += P V behind it, and tile t's softmax
    // runs while that product is on the tensor cores. O is rescaled only after it lands.
    u32 p[BlockN / 16][4];       // P of the pending tile, the A operand of its O += P V
    bool pending = false;        // a tile's P waits for its O += P V
    int pending_stage = 0, pending_phase = 0;
    // Issues the pending tile's O += P V: BlockN / 16 k-steps of 16 keys (2048 bytes of the
    // tile each); V is MN-major (head dims contiguous), its 64-column panels BlockN * 128 apart.
    const auto issue_pv = [&] {
      barrier_wait(&v_full[pending_stage], pending_phase);
      const unsigned long long v_tile = descriptor_at(v_descriptor, pending_stage * Tile::kTileBytes);
      warpgroup_fence();
#pragma unroll
      for (int kk = 0; kk < BlockN / 16; ++kk)
        warpgroup_mma<Dtype, HeadDim>::registers_shared_transposed(out[0], p[kk],
                                                                   descriptor_at(v_tile, kk * 16 * 128), 1);
      warpgroup_commit();
    };
    // Waits for it and hands its V stage back to the producer.
    const auto finish_pv = [&] {
      warpgroup_wait<0>();
      fence_accumulators(out[0]);
      __syncwarp();
      if (lane == 0) barrier_arrive(&v_empty[pending_stage]);
      pending = false;
    };

    for (int t = 0; t < tiles; ++t) {
      const int tile_in_block = t % kTilesPerKvBlock;
      const int n0 = walk.block * BlockKV + tile_in_block * BlockN;
      const int stage = (ring + t) % Stages;
      const int phase = ((ring + t) / Stages) & 1;
      unsigned keep[1] = {fine_kept_tiles<Tile::kScoreTiles, BlockKV, FineN>(walk.bits, first_subtile + warp_in_group,
                                                                          tile_in_block * BlockN)};
      bool group_computes = true;  // uniform across the warpgroup
      if constexpr (FineN > 0) {
        unsigned any = 0;
#pragma unroll
        for (int w = 0; w < 4; ++w)
          any |= fine_kept_tiles<Tile::kScoreTiles, BlockKV, FineN>(walk.bits, first_subtile + w,
                                                                   tile_in_block * BlockN);
        group_computes = any != 0;
      }

      if (!group_computes) {
        // Nothing of this tile for the warpgroup. A pending product is finished first: its V
        // stage may be the one the producer must refill before this tile's V lands. The
        // tile's stages are handed back once their copies landed (a stage released earlier
        // could be refilled under them).
        if (pending) {
          issue_pv();
          finish_pv();
        }
        barrier_wait(&k_full[stage], phase);
        barrier_wait(&v_full[stage], phase);
        __syncwarp();
        if (lane == 0) {
          barrier_arrive(&k_empty[stage]);
          barrier_arrive(&v_empty[stage]);
        }
      } else {
        // S = Q K^T: HeadDim / 16 k-steps, 32 bytes apart inside a 128-byte swizzled row.
        barrier_wait(&k_full[stage], phase);
        if constexpr (kPingPong) named_barrier_sync(1 + consumer, kPingPongThreads);  // my turn
        float score[1][Tile::kScoreTiles][4];
        const unsigned long long q_rows = descriptor_at(q_descriptor, buffer * Tile::kQBytes);
        const unsigned long long k_tile = descriptor_at(k_descriptor, stage * Tile::kTileBytes);
        warpgroup_fence();
#pragma unroll
        for (int ks = 0; ks < HeadDim / 16; ++ks) {
          const int panel = ks / 4, offset = (ks % 4) * 32;
          warpgroup_mma<Dtype, BlockN>::shared_shared(score[0], descriptor_at(q_rows, panel * BlockM * 128 + offset),
                                                      descriptor_at(k_tile, panel * BlockN * 128 + offset), ks > 0);
        }
        warpgroup_commit();
        // The tile's softmax, once S has landed; K's stage goes back to the producer.
        float rescale[1][2];
        const auto softmax = [&] {
          fence_accumulators(score[0]);
          __syncwarp();
          if (lane == 0) barrier_arrive(&k_empty[stage]);
          constexpr unsigned kAllScoreTiles = (1u << Tile::kScoreTiles) - 1u;
          if (n0 + BlockN > params.tokens_kv || keep[0] != kAllScoreTiles)
            mask_scores(score[0], keep[0], params.tokens_kv - n0 - quad * 2);
          const bool moved = move_softmax_reference(score, row_max, row_sum, rescale, scale_log2);
          exponentiate_scores<FineN>(score, row_max, row_sum, keep, scale_log2);
          return moved;
        };
        // Both branches keep each wgmma's issue and wait in one straight line, so that ptxas
        // sees no accumulator read while a product runs (it would serialize every wgmma).
        bool moved;
        if (pending) {
          issue_pv();
          if constexpr (kPingPong) named_barrier_arrive(2 - consumer, kPingPongThreads);  // your turn
          warpgroup_wait<1>();  // S has landed; the previous tile's O += P V may still run
          moved = softmax();
          finish_pv();
        } else {
          if constexpr (kPingPong) named_barrier_arrive(2 - consumer, kPingPongThreads);
          warpgroup_wait<0>();
          moved = softmax();
        }
        if (moved) rescale_outputs(out, rescale);
#pragma unroll
        for (int kk = 0; kk < BlockN / 16; ++kk) pack_probabilities<Dtype>(p[kk], score[0], kk);
        pending = true;
        pending_stage = stage;
        pending_phase = phase;
      }

      if (t == tiles - 1) {  // the item's last S has landed (or was skipped): Q goes back
        __syncwarp();
        if (lane == 0) barrier_arrive(&q_empty[buffer]);
      }

      if (tile_in_block + 1 == kTilesPerKvBlock) walk.next_block();
    }
    if (pending) {
      issue_pv();
      finish_pv();
    }
    ring += tiles;

    const long long lse_base = (static_cast<long long>(w.batch) * params.heads + w.head) * params.tokens_q;
    const int first_row = w.m0 + consumer * 64;  // the warpgroup's
    if (Tile::kOStaged && params.o_tensor_map != 0) {
      unsigned char* staging = o_staging + consumer * Tile::kConsumerOBytes;
      const bool issuer = threadIdx.x % 128 == 0;  // issues this warpgroup's stores
      if (issuer) bulk_wait_read<0>();  // the previous item's store has read the staging tile
      named_barrier_sync(3 + consumer, 128);
      float inverse[2];
      finish_row_group(params, lse_base, first_row + warp_in_group * 16, row_max[0], row_sum[0], scale_log2, lane,
                       inverse);
      stage_row_group<Dtype>(staging, warp_in_group * 16, out[0], inverse, lane);
      fence_shared_to_async();
      named_barrier_sync(3 + consumer, 128);
      if (issuer) {
#pragma unroll
        for (int panel = 0; panel < Tile::kPanels; ++panel)
          tensor_store_4d(o_map, staging + panel * 64 * 128, panel * 64, first_row, w.head, w.batch);
        bulk_commit();
      }
    } else {
      char* o_base =
          static_cast<char*>(params.o) + (w.batch * params.o_batch_stride + w.head * params.o_head_stride) * 2;
      store_row_group<Dtype>(params, o_base, lse_base, first_row + warp_in_group * 16, out[0], row_max[0],
                             row_sum[0], scale_log2, lane);
    }
  }
  // The stores in flight complete before the CTA's shared memory goes away.
  if (Tile::kOStaged && threadIdx.x % 128 == 0) bulk_wait<0>();
  // Consumer 1's last "your turn" still waits on barrier 1: consumer 0 takes it, so no
  // barrier is left half-arrived.
  if (kPingPong && consumer == 0) named_barrier_sync(1, kPingPongThreads);
}

}  // namespace sparsejit
