#pragma once
// sparse_attention as tuning problems, and the buckets that map a real call to one.
//
// A problem is what fixes the kernel (dtype, head dim, sparse blocks, fine granularity) plus
// three buckets of the call: density, sequence length and batch x heads (DESIGN.md "Keys").
// Its key, as stored in the database:
//   "sparse_attention|bf16|d128|b128x128|fine16|p0.3|n33k|bh4+"
// The tuner times each bucket's representative shape; the runtime maps a call to its bucket
// (attention_buckets_of) and looks the key up.
#include <array>
#include <climits>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "jit/device_memory.h"
#include "templates/sparse_attention/attention_family.h"
#include "templates/sparse_attention/block_mask.h"
#include "templates/tuning.h"

namespace sparsejit::templates {

// Densities (kept share of key blocks per query block) the tuner measures. DFSAttn's mask
// schedule runs dense, then 0.3, 0.2 and 0.1; 0.5 and 0.05 are the peers' 50% and 95%
// sparsity points (DESIGN.md). A call goes to the nearest in ratio (time grows with the
// density): the boundaries are the geometric means of neighbours, so 0.4 counts as 0.5 and
// 0.02 as 0.05.
inline constexpr std::array<double, 6> kAttentionDensityBuckets = {1.0, 0.5, 0.3, 0.2, 0.1, 0.05};

// Sequence lengths: the models of DESIGN.md "Shapes" (text tokens included). A call of
// tokens_q x tokens_kv counts as sqrt(tokens_q * tokens_kv) tokens (the same work as that
// self-attention) and goes to the bucket whose representative is nearest in ratio: the upper
// bounds are the geometric means of neighbouring representatives.
struct AttentionTokenBucket {
  std::string_view name;  // in the problem key
  int upper;              // the longest sequence in the bucket
  int representative;     // the length the tuner times
};
inline constexpr std::array<AttentionTokenBucket, 4> kAttentionTokenBuckets = {{
    {"n18k", 24131, 17776},     // CogVideoX-5B 480p: 17,550 video + 226 text tokens
    {"n33k", 49766, 32760},     // Wan2.1 480p, 81 frames
    {"n76k", 94870, 75600},     // Wan2.1/2.2 720p, 81 frames
    {"n119k", INT_MAX, 119056},  // HunyuanVideo 720p, 129 frames: 118,800 + 256 text
}};

// Batch x heads: it only matters while the grid of CTAs (query tiles x batch x heads) is a
// wave or two on the GPU, where smaller tiles (more CTAs) can win. At 17,776 tokens and 128-row
// tiles, 3 heads are 417 CTAs, about 1.6 waves of two CTAs per SM on an H100; from 4 heads on
// every model shape runs many waves and the tile choice no longer depends on it. The
// representative of the wide bucket is Wan2.1-1.3B's 12 heads, the fewest of the models.
struct AttentionBatchHeadsBucket {
  std::string_view name;
  int upper;           // the most batch x heads in the bucket
  int representative;  // heads the tuner times (batch 1)
};
inline constexpr std::array<AttentionBatchHeadsBucket, 2> kAttentionBatchHeadsBuckets = {{
    {"bh1-3", 3, 2},
    {"bh4+", INT_MAX, 12},
}};

// A real call as the buckets see it.
struct AttentionCallShape {
  long long batch_heads = 1;  // batch * heads
  int tokens_q = 1;
  int tokens_kv = 1;
  double density = 1.0;  // kept share of key blocks per query block
};
// The shape of a call: density is max_kv_blocks / ceil(tokens_kv / block_kv), the width of
// the mask's rows (a top-k mask keeps exactly that many blocks per row; a threshold mask at
// most that many).
AttentionCallShape attention_call_shape(const SparseAttentionParams& params, int block_kv);

// Indices into the three bucket tables.
struct AttentionBuckets {
  int density = 0;
  int tokens = 0;
  int batch_heads = 0;
  auto operator<=>(const AttentionBuckets&) const = default;
};
AttentionBuckets attention_buckets_of(const AttentionCallShape& shape);

// What fixes a sparse_attention kernel besides its tile (the tile is what is tuned).
struct AttentionKernelKind {
  HalfDtype dtype = HalfDtype::bf16;
  int head_dim = 128;
  int block_q = 128;
  int block_kv = 128;
  int fine_n = 0;
  auto operator<=>(const AttentionKernelKind&) const = default;
  // `kind` with a tile: {"block_m":..,"block_n":..,"warps":..} as AttentionConfig::tuning_json
  // writes it. Throws std::invalid_argument for JSON without those three integers.
  AttentionConfig with_tile(std::string_view tuning_json) const;
};

// A tuning problem of sparse_attention: the kernel kind and the buckets.
struct AttentionProblemKey {
  AttentionKernelKind kind;
  AttentionBuckets buckets;
  auto operator<=>(const AttentionProblemKey&) const = default;

  std::string to_string() const;  // the database's problem key (see the top of this file)
  // The inverse of to_string; none for any other text (another family's key, say).
  static std::optional<AttentionProblemKey> parse(std::string_view key);
  // How far the buckets of `other` are from these, compared in this order: density, then
  // sequence length, then batch x heads; each as |log ratio| of the representatives.
  std::array<double, 3> bucket_distance(const AttentionProblemKey& other) const;
};

// The problems `sparsejit tune` measures by default: bf16, head dims 64 and 128, square
// blocks of 64 and 128, every density bucket, fine bits off and 16, every sequence-length
// bucket, the wide batch x heads bucket. 192 problems.
std::vector<AttentionProblemKey> default_attention_tuning_grid();

class SparseAttentionTuningProblem final : public TuningProblem {
 public:
  // Throws std::invalid_argument for a kind the family does not support.
  explicit SparseAttentionTuningProblem(AttentionProblemKey key);

  std::string family() const override { return "sparse_attention"; }
  std::string key() const override { return key_.to_string(); }
  std::string description() const override;
  // Every tile of the family's space valid for this kind on `target`.
  std::vector<AttentionConfig> valid_tiles(const jit::Target& target) const;
  // valid_tiles, rendered.
  std::vector<TuningCandidate> candidates(const jit::Target& target) const override;
  std::string default_config_json() const override;
  std::optional<int> head_dim() const override { return key_.kind.head_dim; }
  std::optional<double> density() const override;
  double relative_cost() const override;
  // Random Q/K/V of the representative shape ([1, H, N, D] contiguous), a random mask of the
  // bucket's density (diagonal kept; fine bits at half density), copies of the whole set
  // until the timed inputs span kMinTimedBytes, and the float64 reference of a few sampled
  // query blocks (computed in parallel).
  void prepare() override;
  // The relative L2 error of the sampled query blocks' output against the reference.
  double check(const jit::Kernel& kernel, const TuningCandidate& candidate, CUstream stream) override;
  double error_bound() const override { return key_.kind.dtype == HalfDtype::bf16 ? 1e-2 : 5e-3; }
  // Runs on the next copy of the inputs in turn.
  void run(const jit::Kernel& kernel, const TuningCandidate& candidate, CUstream stream) override;

  const AttentionProblemKey& problem_key() const { return key_; }

  // Timed inputs are copied until they span this much, so that no run finds its inputs in
  // L2 from the run before: twice the L2 of the largest GPUs sparsejit targets (126 MB on
  // B200; 50 MB on H100).
  static constexpr std::size_t kMinTimedBytes = std::size_t{256} << 20;

 private:
  struct InputSet {
    jit::DeviceBuffer q, k, v, o;
    SparseAttentionParams params{};
  };
  // A query block whose output the gate compares: (head, query block) of batch 0.
  struct SampledBlock {
    int head, q_block;
  };

  AttentionConfig config_of(const TuningCandidate& candidate) const;
  int heads() const;
  int tokens() const;

  AttentionProblemKey key_;
  std::vector<std::uint16_t> host_q_, host_k_, host_v_;  // [1, H, N, D]
  BlockMask mask_;
  jit::DeviceBuffer count_, index_, fine_bits_;
  std::vector<InputSet> inputs_;  // inputs_[0] is also the gate's
  std::size_t next_input_ = 0;
  std::vector<SampledBlock> sampled_;
  std::vector<double> expected_;  // the sampled blocks' reference O, [sample, row, D]
};

}  // namespace sparsejit::templates
