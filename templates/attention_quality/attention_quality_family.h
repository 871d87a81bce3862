#pragma once
// Descriptor of the attention_quality family (device code: attention_quality.cuh): block_mass
// (the exact softmax mass of every block pair, the oracle of a mask) and output_error (a
// sparse output against the dense one: squared errors and attention recall).
//
// Measurement kernels, run a few times per bench, not in a model's step: one specialization
// per problem (dtype, head dim, block sizes), nothing to tune.
#include <array>
#include <string>

#include "jit/module.h"
#include "templates/attention_quality/attention_quality_params.h"
#include "templates/common/half_precision.h"
#include "templates/kernel_family.h"

namespace sparsejit::templates {

inline constexpr std::array<int, 3> kQualityHeadDims = {64, 96, 128};
// Sparse block sizes, as in sparse_attention; key blocks are whole steps of 64 keys.
inline constexpr std::array<int, 2> kQualityBlockSizes = {64, 128};

struct BlockMassConfig {
  HalfDtype dtype = HalfDtype::bf16;
  int head_dim = 128;
  int block_q = 128;
  int block_kv = 128;

  std::string name_expression() const;  // "sparsejit::block_mass<0, 128, 128, 128>"
  std::string label() const;            // "block_mass<bf16 D=128 blocks 128x128>"
  int threads() const { return block_q * 2; }  // block_q / 16 warps
  int shared_bytes() const;             // dynamic shared memory of a CTA
  friend bool operator==(const BlockMassConfig&, const BlockMassConfig&) = default;
};

struct OutputErrorConfig {
  HalfDtype dtype = HalfDtype::bf16;
  int head_dim = 128;

  std::string name_expression() const;  // "sparsejit::output_error<0, 128>"
  std::string label() const;            // "output_error<bf16 D=128>"
};

// Empty when `config` is valid for a device with `max_shared_bytes`; else why not.
std::string block_mass_config_problem(const BlockMassConfig& config, int max_shared_bytes);
std::string output_error_config_problem(const OutputErrorConfig& config);

// The number of output_error chunks (and partial sums per (batch, head)) for `tokens` rows.
int output_error_chunks(int tokens);

class AttentionQualityFamily final : public KernelFamily {
 public:
  std::string_view name() const override { return "attention_quality"; }
  std::string_view summary() const override {
    return "exact softmax mass per block pair and sparse-vs-dense output error, for mask quality";
  }
  // Every valid block_mass point, then every output_error point.
  std::vector<jit::KernelSpec> enumerate(const jit::Target& target) const override;
  std::vector<std::unique_ptr<TuningProblem>> tuning_problems() const override { return {}; }

  static jit::KernelSpec render_block_mass(const BlockMassConfig& config, const jit::Target& target);
  static jit::KernelSpec render_output_error(const OutputErrorConfig& config, const jit::Target& target);

  // Throw std::invalid_argument for: an invalid config, null pointers, Q/K/O pointers or token
  // strides not multiples of 16 bytes, non-positive sizes, more than 65535 heads or batches,
  // (block_mass) a softmax_scale that is not positive and finite. Read no device memory.
  static void validate(const BlockMassConfig& config, const BlockMassParams& params, int max_shared_bytes);
  static void validate(const OutputErrorConfig& config, const OutputErrorParams& params);
  static jit::LaunchConfig geometry(const BlockMassConfig& config, const BlockMassParams& params, CUstream stream);
  static jit::LaunchConfig geometry(const OutputErrorConfig& config, const OutputErrorParams& params,
                                    CUstream stream);
  // validate, then launch on `stream`.
  static void launch(const jit::Kernel& kernel, const BlockMassConfig& config, const BlockMassParams& params,
                     int max_shared_bytes, CUstream stream);
  static void launch(const jit::Kernel& kernel, const OutputErrorConfig& config, const OutputErrorParams& params,
                     CUstream stream);
};

}  // namespace sparsejit::templates
