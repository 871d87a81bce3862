#pragma once
// CPU reference of permute_tokens: the same PermuteParams, but every pointer (tensors and
// permutation) addresses host memory. Copies 16-bit elements exactly, so a correct kernel
// matches it bit for bit.
#include "templates/permute/permute_family.h"

namespace sparsejit::templates {

void permute_tokens_reference(const PermuteParams& host_params, int head_dim,
                              PermuteDirection direction);

}  // namespace sparsejit::templates
