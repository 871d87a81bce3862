#pragma once
// permute_tokens: gathers token rows into a new order, or scatters them back, for up to
// three tensors at once, optionally changing the layout through the strides.
//
// Memory-bound: every element is read once and written once. Each thread moves Unroll
// vectors of VecBytes bytes; a row of HeadDim 16-bit elements is HeadDim*2/VecBytes vectors,
// so consecutive threads read consecutive vectors of a row (coalesced per row) and rows are
// spread over the flat index. All loads are issued before any store, Unroll deep, to keep
// enough bytes in flight. Requires: source, destination and every stride*2 aligned to
// VecBytes (the host checks), tokens*vectors-per-row < 2^31.
//
// Grid: x covers tokens*vectors-per-row in chunks of Threads*Unroll, y = heads,
// z = batch*tensor_count. Block: Threads.
#include "permute/permute_params.h"

namespace sparsejit {

template <int VecBytes> struct vector_of;
template <> struct vector_of<16> { using type = uint4; };
template <> struct vector_of<8> { using type = uint2; };
template <> struct vector_of<4> { using type = unsigned int; };

template <int HeadDim, int VecBytes, int Threads, int Unroll, bool Scatter>
__global__ void __launch_bounds__(Threads) permute_tokens(const PermuteParams params) {
  using Vector = typename vector_of<VecBytes>::type;
  constexpr int kElementBytes = 2;
  constexpr int kVectorsPerRow = HeadDim * kElementBytes / VecBytes;
  static_assert(HeadDim * kElementBytes % VecBytes == 0, "a row must be whole vectors");

  const int tensor_index = blockIdx.z % params.tensor_count;
  const long long batch = blockIdx.z / params.tensor_count;
  const long long head = blockIdx.y;
  const PermuteTensor& tensor = params.tensors[tensor_index];
  const char* source = static_cast<const char*>(tensor.source) +
                       (batch * tensor.source_batch_stride + head * tensor.source_head_stride) *
                           kElementBytes;
  char* destination = static_cast<char*>(tensor.destination) +
                      (batch * tensor.destination_batch_stride +
                       head * tensor.destination_head_stride) * kElementBytes;
  const int total = params.tokens * kVectorsPerRow;
  const int first = blockIdx.x * Threads * Unroll + threadIdx.x;

  Vector values[Unroll];
  long long destination_offsets[Unroll];
#pragma unroll
  for (int u = 0; u < Unroll; ++u) {
    const int flat = first + u * Threads;
    if (flat < total) {
      const int row = flat / kVectorsPerRow;
      const int column = flat - row * kVectorsPerRow;
      const int mapped = params.permutation[row];
      const long long source_token = Scatter ? row : mapped;
      const long long destination_token = Scatter ? mapped : row;
      values[u] = *reinterpret_cast<const Vector*>(
          source + source_token * tensor.source_token_stride * kElementBytes +
          column * VecBytes);
      destination_offsets[u] =
          destination_token * tensor.destination_token_stride * kElementBytes + column * VecBytes;
    }
  }
#pragma unroll
  for (int u = 0; u < Unroll; ++u) {
    if (first + u * Threads < total)
      *reinterpret_cast<Vector*>(destination + destination_offsets[u]) = values[u];
  }
}

}  // namespace sparsejit
