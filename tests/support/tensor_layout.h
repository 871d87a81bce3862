#pragma once
// Test helpers shared by the GPU suites: dense [B, H, N, D] strides in either token layout, and
// the error bounds of the project's standards.
#include <array>

#include "templates/common/half_precision.h"
#include "templates/permute/permute_family.h"

namespace sparsejit::testing {

// {batch, head, token} strides, in elements, of a dense [B, H, N, D] tensor stored in `layout`.
inline std::array<long long, 3> dense_strides(templates::TokenLayout layout, int heads, int tokens,
                                              int head_dim) {
  const long long h = heads, n = tokens, d = head_dim;
  return layout == templates::TokenLayout::bhnd ? std::array<long long, 3>{h * n * d, n * d, d}
                                                : std::array<long long, 3>{n * h * d, d, h * d};
}

// ||out - ref|| / ||ref|| bound for a kernel's output in `dtype`: bf16 1e-2, fp16 5e-3.
inline double relative_error_bound(templates::HalfDtype dtype) {
  return dtype == templates::HalfDtype::bf16 ? 1e-2 : 5e-3;
}

}  // namespace sparsejit::testing
