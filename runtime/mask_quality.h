#pragma once
// Measures block masks against exact dense attention, on the GPU (issue 4, "Quality,
// measured"). For one attention problem (Q, K, V on the device) it runs dense attention once
// (sparse_attention with every block kept, writing the exact O and LSE), then for any mask:
//  - attention recall: the share of each query row's exact softmax mass the mask keeps,
//    exp(LSE_sparse - LSE_dense) (exact for fine bits too: the sparse LSE sums exactly the
//    kept keys), averaged over the rows of each (batch, head);
//  - the output error ||O_sparse - O_dense|| / ||O_dense|| per (batch, head) and overall;
// and, for the oracle, the exact mass of every (query block, key block) pair (family
// attention_quality, block_mass), whose k heaviest blocks per query block are the best any
// k-block selection can keep.
//
// Device memory: two outputs [B, H, N, D] 16-bit, two LSE [B, H, N] float32, the masses
// [B, H, QB, KB] float32 and a small dense mask (bitmask form): 0.5 GB at 12 heads x 75,600
// tokens x 128. Everything runs on the caller's stream; results are copied to the host.
//
// exact_block_masses computes the same masses from Q and K alone (SVOO's offline profiling,
// `sparsejit profile`): the row LSE does not depend on V, so the dense run reads K as V.
#include <cuda.h>

#include <span>
#include <vector>

#include "jit/device_memory.h"
#include "runtime/mask_builder.h"
#include "runtime/runtime.h"

namespace sparsejit::runtime {

// Q, K (with their shapes, dtype and scale) and V: device pointers; V has tokens_kv tokens
// and its own strides (elements, last dim contiguous; pointer and token stride multiples of
// 16 bytes).
struct AttentionInputs {
  QueryKeyInputs qk;
  const void* v = nullptr;
  long long v_batch_stride = 0, v_head_stride = 0, v_token_stride = 0;
};

// A mask's quality per (batch, head) slice, b * heads + h.
struct MaskQualityReport {
  std::vector<double> recall;             // mean over the slice's rows of the kept mass share
  std::vector<double> squared_error;      // sum of (O_sparse - O_dense)^2
  std::vector<double> squared_reference;  // sum of O_dense^2

  double mean_recall() const;                    // over all slices (each has tokens_q rows)
  double relative_error() const;                 // ||O_sparse - O_dense|| / ||O_dense|| over all slices
  double slice_relative_error(std::size_t slice) const;
};

class MaskQuality {
 public:
  // Runs dense attention of `inputs` with blocks of block_q x block_kv (64 or 128) on
  // `stream` and keeps its O and LSE. Throws std::invalid_argument for inputs
  // sparse_attention refuses (the message says which).
  MaskQuality(Runtime& runtime, const AttentionInputs& inputs, int block_q, int block_kv, CUstream stream);

  // The exact mass of every (query block, key block) pair, [batch, heads, QB, KB] on the
  // host: computed on the GPU at the first call, then kept.
  const std::vector<float>& block_masses();

  // Runs sparse attention of the inputs under `mask` (block-CSR on the device, with fine
  // bits of fine_n keys per sub-tile when mask.fine_bits is set) and compares it with the
  // dense result. Synchronizes the stream.
  MaskQualityReport measure(const DeviceBlockMask& mask, int fine_n);

  int q_blocks() const { return q_blocks_; }
  int kv_blocks() const { return kv_blocks_; }

 private:
  Runtime& runtime_;
  AttentionInputs inputs_;
  int block_q_, block_kv_, q_blocks_, kv_blocks_;
  CUstream stream_;
  jit::DeviceBuffer dense_o_, dense_lse_, sparse_o_, sparse_lse_, partials_;
  std::vector<float> masses_;
};

// The exact mass of every (query block, key block) pair of Q and K, [batch, heads, QB, KB]
// on the host (QB = ceil(tokens_q / block_q), KB likewise; blocks of 64 or 128): dense
// attention with K as V for each row's LSE, then block_mass. Device memory beyond Q and K:
// an output [B, H, Nq, D] 16-bit, the LSE and the masses (0.8 GB at 40 heads x 75,600 tokens
// x 128), freed on return. Synchronizes `stream`. Throws std::invalid_argument for inputs
// sparse_attention or block_mass refuse (the message says which).
std::vector<float> exact_block_masses(Runtime& runtime, const QueryKeyInputs& inputs, int block_q, int block_kv,
                                      CUstream stream);

// The oracle's mean recall per slice as a function of k: curves[slice][k], k = 0..KB, when
// every query block keeps its k heaviest key blocks: the sum over query blocks of their k
// largest masses, over tokens_q. `masses` is [slices, QB, KB] (block_masses()).
std::vector<std::vector<double>> oracle_recall_curves(std::span<const float> masses, int slices, int q_blocks,
                                                      int kv_blocks, int tokens_q);

// The least density k / KB at which `curve` (one slice of oracle_recall_curves) reaches
// `recall`; 1.0 when only all blocks reach it (rounding can leave the full curve a hair
// under 1). With the curves of oracle_recall_curves this is SVOO's profiled density: the
// fewest blocks per query block, chosen by exact mass, that keep `recall` of the slice's
// softmax mass (averaged over its query rows).
double density_for_recall(std::span<const double> curve, double recall);

}  // namespace sparsejit::runtime
