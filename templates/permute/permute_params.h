#pragma once
// Parameters of the permute_tokens kernel. Shared by the host (g++) and the device (NVRTC):
// plain fixed-size fields, no includes, so both compilers see the same layout.
//
// Logical tensors are [batch, heads, tokens, head_dim] of 16-bit elements (bf16 or fp16: a
// permutation copies bits, so the two are one case). The last dim is contiguous; the other
// strides are free, in elements, so [B,H,N,D] and [B,N,H,D] storage both work, and a gather
// from one layout into the other changes the layout in the same pass.

namespace sparsejit {

constexpr int kMaxPermuteTensors = 3;  // Q, K and V in one launch

struct PermuteTensor {
  const void* source;
  void* destination;
  long long source_batch_stride, source_head_stride, source_token_stride;  // elements
  long long destination_batch_stride, destination_head_stride, destination_token_stride;
};

struct PermuteParams {
  PermuteTensor tensors[kMaxPermuteTensors];
  // [tokens] int32, a permutation of 0..tokens-1, in device memory.
  // Gather:  destination row i  <- source row permutation[i]   (into the new order)
  // Scatter: destination row permutation[i] <- source row i     (back to the original order)
  const int* permutation;
  int tensor_count;  // 1..kMaxPermuteTensors
  int batch;
  int heads;
  int tokens;
};

}  // namespace sparsejit
