#pragma once
// Host-side rounding up of a division of positive counts: blocks of `b` tokens covering `a`
// (the last one ragged), words of 64 bits covering `a` blocks, and the like.

namespace sparsejit {

constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

}  // namespace sparsejit
