#pragma once
// csr_to_bitmask: block-CSR -> block bitmask (mask_convert_params.h has the formats). One
// thread per output word (row, w): a binary search finds the first kept block >= 64 w in the
// row's ascending list, then the thread ORs in the entries below 64 (w + 1). A row of count
// kept blocks and W words costs count + W log2(count) reads; no atomics, deterministic.
// Grid: x = ceil(rows * kv_block_words / Threads). Block: Threads.
#include "mask_convert/mask_convert_params.h"

namespace sparsejit {

template <int Threads>
__global__ void __launch_bounds__(Threads) csr_to_bitmask(const CsrToBitmaskParams p) {
  const long long item = static_cast<long long>(blockIdx.x) * Threads + threadIdx.x;
  if (item >= p.rows * p.kv_block_words) return;
  const long long row = item / p.kv_block_words;
  const int word = static_cast<int>(item - row * p.kv_block_words);
  const int* list = p.kv_block_index + row * p.max_kv_blocks;
  int count = p.kv_block_count[row];
  count = count < 0 ? 0 : (count > p.max_kv_blocks ? p.max_kv_blocks : count);

  const int first_block = word * 64;
  const int end_block = first_block + 64 < p.kv_blocks ? first_block + 64 : p.kv_blocks;
  int low = 0, high = count;  // first position whose block is >= first_block
  while (low < high) {
    const int middle = (low + high) / 2;
    if (list[middle] < first_block) low = middle + 1;
    else high = middle;
  }
  unsigned long long bits = 0;
  for (int i = low; i < count; ++i) {
    const int block = list[i];
    if (block >= end_block) break;
    if (block >= first_block) bits |= 1ull << (block - first_block);
  }
  p.kv_block_bits[item] = bits;
}

}  // namespace sparsejit
