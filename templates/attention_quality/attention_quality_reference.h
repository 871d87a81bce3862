#pragma once
// CPU references of attention_quality, in float64.
#include <vector>

#include "templates/attention_quality/attention_quality_params.h"
#include "templates/common/half_precision.h"

namespace sparsejit::templates {

struct BlockMassReference {
  std::vector<double> lse;   // [batch, heads, tokens_q], natural log, over all keys
  std::vector<double> mass;  // [batch, heads, QB, KB]
};

// block_mass of the Q and K that host_params.q/k point at (HOST pointers to 16-bit patterns
// of `dtype`; the lse and mass pointers are ignored): the exact LSE of every row over all
// keys, computed here, and the softmax mass of each (query block, key block) pair.
// Throws std::invalid_argument for null q/k, non-positive sizes, head_dim or blocks < 1.
BlockMassReference block_mass_reference(const BlockMassParams& host_params, HalfDtype dtype, int head_dim,
                                        int block_q, int block_kv);

// output_error's sums, added up per (batch, head): [batch, heads, 3] = sum of
// (o - o_reference)^2, sum of o_reference^2, sum over rows of exp(lse - lse_reference), for
// the HOST pointers of `host_params` (o and o_reference 16-bit patterns of `dtype`, lse
// float32; partials ignored). Throws std::invalid_argument for null pointers or
// non-positive sizes.
std::vector<double> output_error_reference(const OutputErrorParams& host_params, HalfDtype dtype, int head_dim);

}  // namespace sparsejit::templates
