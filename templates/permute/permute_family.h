#pragma once
// Descriptor of the permute_tokens family (device code: permute_tokens.cuh).
//
// Space: head dim x vector width x threads per CTA x unroll depth x direction. Every point
// is valid for every head dim (rows are split into whole vectors of 4, 8 or 16 bytes), so
// the only run-time constraint is alignment: the widest vector that the pointers and strides
// allow (max_vector_bytes) bounds which specializations may run on a given call.
#include <array>
#include <span>
#include <string>

#include "jit/module.h"
#include "templates/kernel_family.h"
#include "templates/permute/permute_params.h"

namespace sparsejit::templates {

enum class PermuteDirection { gather, scatter };

// Storage orders of a [batch, heads, tokens, head_dim] tensor: the models' [B,N,H,D] and the
// attention kernels' [B,H,N,D], both dense.
enum class TokenLayout { bnhd, bhnd };

// One tensor of PermuteParams for dense storage in the given layouts.
PermuteTensor dense_permute_tensor(const void* source, TokenLayout source_layout, void* destination,
                                   TokenLayout destination_layout, int heads, int tokens,
                                   int head_dim);

// Why these values: head dims are the ones the models use (DESIGN.md); vectors of 16 bytes
// are the widest global access, 8 and 4 serve misaligned strides; 128-256 threads with
// 1-4 vectors each keep 2-16 KB in flight per CTA, about what one SM needs to cover HBM
// latency at H100 bandwidth (3 TB/s x ~1 us / 132 SMs = ~23 KB per SM, i.e. a few CTAs).
inline constexpr std::array<int, 3> kPermuteHeadDims = {64, 96, 128};
inline constexpr std::array<int, 3> kPermuteVectorBytes = {16, 8, 4};
inline constexpr std::array<int, 2> kPermuteThreads = {128, 256};
inline constexpr std::array<int, 3> kPermuteUnroll = {1, 2, 4};

struct PermuteConfig {
  int head_dim = 128;
  int vector_bytes = 16;
  int threads = 256;
  int unroll = 2;
  PermuteDirection direction = PermuteDirection::gather;

  std::string name_expression() const;  // "sparsejit::permute_tokens<128, 16, 256, 2, false>"
  std::string label() const;            // "permute_tokens<D=128 vec=16 threads=256 unroll=2 gather>"
  // The tunable part, as stored in the database: {"threads":256,"unroll":2,"vector_bytes":16}.
  std::string tuning_json() const;
  // A config for (head_dim, direction) with the tunable part read from tuning_json();
  // throws std::invalid_argument for malformed or out-of-space JSON.
  static PermuteConfig from_tuning_json(int head_dim, PermuteDirection direction,
                                        const std::string& json);
  friend bool operator==(const PermuteConfig&, const PermuteConfig&) = default;
};

// The built-in default: the widest vector the call allows, 256 threads, 2 vectors each
// (8 KB in flight per CTA at 16-byte vectors).
PermuteConfig default_permute_config(int head_dim, PermuteDirection direction,
                                     int max_vector_bytes = 16);

// The problem key a permute config is tuned and looked up under: "permute_tokens|d128|gather".
// The timed shape is not part of it: a copy's best config hardly depends on the length.
std::string permute_problem_key(int head_dim, PermuteDirection direction);

class PermuteFamily final : public KernelFamily {
 public:
  std::string_view name() const override { return "permute_tokens"; }
  std::string_view summary() const override {
    return "gather token rows of Q/K/V into a new order (or scatter O back), any strides";
  }
  std::vector<jit::KernelSpec> enumerate(const jit::Target& target) const override;
  // Every head dim x direction, timed on Wan2.1-1.3B 480p Q/K/V (12 heads, 32,760 tokens).
  std::vector<std::unique_ptr<TuningProblem>> tuning_problems() const override;

  static jit::KernelSpec render(const PermuteConfig& config, const jit::Target& target);
  // The widest vector (16, 8, 4 bytes; 2 means none fits) that every pointer and stride of
  // `params` is aligned to.
  static int max_vector_bytes(const PermuteParams& params);
  // Throws std::invalid_argument with the reason for: a head dim outside the space, null
  // pointers, counts out of range, or a vector width the alignment does not allow.
  static void validate(const PermuteConfig& config, const PermuteParams& params);
  static jit::LaunchConfig geometry(const PermuteConfig& config, const PermuteParams& params,
                                    CUstream stream);
  // validate, then launch `kernel` (compiled from render(config, ...)) on `stream`.
  static void launch(const jit::Kernel& kernel, const PermuteConfig& config,
                     const PermuteParams& params, CUstream stream);
};

// Throws std::invalid_argument naming the first entry that makes `permutation` not a
// permutation of 0..size-1 (out of range, or repeated).
void validate_permutation(std::span<const int> permutation);

}  // namespace sparsejit::templates
