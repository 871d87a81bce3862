#pragma once
// Descriptor of the mask_convert family (device code: csr_to_bitmask.cuh): the block-CSR
// mask of block_select turned into the block bitmask that masks cached across steps are kept
// in. A memory-bound pass over a few MB (a bitmask row is 80 bytes at 591 key blocks): one
// specialization, nothing to tune. Its CPU reference is to_bitmask (block_mask.h): integer
// bit operations only, so the GPU output must equal it bit for bit.
#include <string>

#include "jit/module.h"
#include "templates/kernel_family.h"
#include "templates/mask_convert/mask_convert_params.h"

namespace sparsejit::templates {

inline constexpr int kCsrToBitmaskThreads = 256;

class MaskConvertFamily final : public KernelFamily {
 public:
  std::string_view name() const override { return "mask_convert"; }
  std::string_view summary() const override { return "block-CSR mask -> block bitmask, on the device"; }
  std::vector<jit::KernelSpec> enumerate(const jit::Target& target) const override;
  std::vector<std::unique_ptr<TuningProblem>> tuning_problems() const override { return {}; }

  static std::string name_expression();  // "sparsejit::csr_to_bitmask<256>"
  static jit::KernelSpec render(const jit::Target& target);
  // Throws std::invalid_argument for: null pointers (kv_block_index may be null only when
  // max_kv_blocks is 0), rows or kv_blocks < 1, max_kv_blocks outside 0..kv_blocks,
  // kv_block_words other than ceil(kv_blocks / 64), or more words than one launch covers.
  // Does not read device memory.
  static void validate(const CsrToBitmaskParams& params);
  static jit::LaunchConfig geometry(const CsrToBitmaskParams& params, CUstream stream);
  // validate, then launch on `stream`.
  static void launch(const jit::Kernel& kernel, const CsrToBitmaskParams& params, CUstream stream);
};

}  // namespace sparsejit::templates
