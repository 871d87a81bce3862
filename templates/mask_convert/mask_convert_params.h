#pragma once
// Parameters of the csr_to_bitmask kernel. Shared by the host (g++) and the device (NVRTC):
// plain fixed-size fields, no includes, so both compilers see the same layout.
//
// Converts a block-CSR mask (attention_params.h, as block_select writes it) into the block
// bitmask form on the device, for the masks cached across diffusion steps. Row r of the
// `rows` = batch * heads * QB rows keeps kv_block_count[r] key blocks, listed strictly
// ascending in kv_block_index[r * max_kv_blocks + i]; the bitmask row is kv_block_words =
// ceil(kv_blocks / 64) words, bit kb % 64 of word kb / 64 set when key block kb is kept, every
// other bit 0 (bits at or above kv_blocks included). Fine bits need no conversion: with a
// bitmask they follow the kept blocks in ascending order, the order of the CSR list.
// For an invalid mask (a count outside 0..max_kv_blocks, indices outside 0..kv_blocks-1 or
// not ascending) the output is unspecified but every write stays inside kv_block_bits.

namespace sparsejit {

struct CsrToBitmaskParams {
  const int* kv_block_count;          // [rows]
  const int* kv_block_index;          // [rows, max_kv_blocks]
  unsigned long long* kv_block_bits;  // [rows, kv_block_words]; every word written
  long long rows;
  int max_kv_blocks;
  int kv_blocks;
  int kv_block_words;
};

}  // namespace sparsejit
