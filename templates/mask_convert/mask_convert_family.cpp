#include "templates/mask_convert/mask_convert_family.h"

#include <limits>
#include <stdexcept>

#include "templates/sparse_attention/block_mask.h"

namespace sparsejit::templates {

std::string MaskConvertFamily::name_expression() {
  return "sparsejit::csr_to_bitmask<" + std::to_string(kCsrToBitmaskThreads) + ">";
}

jit::KernelSpec MaskConvertFamily::render(const jit::Target& target) {
  jit::KernelSpec spec;
  spec.family = "mask_convert";
  spec.name_expression = name_expression();
  spec.label = "csr_to_bitmask<threads=" + std::to_string(kCsrToBitmaskThreads) + ">";
  spec.request = render_program("csr_to_bitmask.cu", "mask_convert/csr_to_bitmask.cuh",
                                {"mask_convert/csr_to_bitmask.cuh", "mask_convert/mask_convert_params.h"},
                                spec.name_expression, target);
  return spec;
}

std::vector<jit::KernelSpec> MaskConvertFamily::enumerate(const jit::Target& target) const {
  return {render(target)};
}

void MaskConvertFamily::validate(const CsrToBitmaskParams& p) {
  const auto fail = [](const std::string& why) { throw std::invalid_argument("csr_to_bitmask: " + why); };
  if (p.rows < 1 || p.kv_blocks < 1)
    fail("rows and kv_blocks must be positive (got " + std::to_string(p.rows) + ", " + std::to_string(p.kv_blocks) +
         ")");
  if (p.max_kv_blocks < 0 || p.max_kv_blocks > p.kv_blocks)
    fail("max_kv_blocks = " + std::to_string(p.max_kv_blocks) + " is outside 0.." + std::to_string(p.kv_blocks));
  if (p.kv_block_words != bitmask_words(p.kv_blocks))
    fail("kv_block_words = " + std::to_string(p.kv_block_words) + " for " + std::to_string(p.kv_blocks) +
         " key blocks (must be " + std::to_string(bitmask_words(p.kv_blocks)) + ")");
  if (p.kv_block_count == nullptr || p.kv_block_bits == nullptr || (p.kv_block_index == nullptr && p.max_kv_blocks > 0))
    fail("kv_block_count, kv_block_index and kv_block_bits must not be null");
  const long long words = p.rows * p.kv_block_words;
  if (words / kCsrToBitmaskThreads >= std::numeric_limits<int>::max())
    fail(std::to_string(words) + " bitmask words are more than one launch covers");
}

jit::LaunchConfig MaskConvertFamily::geometry(const CsrToBitmaskParams& p, CUstream stream) {
  const long long words = p.rows * p.kv_block_words;
  jit::LaunchConfig launch;
  launch.grid = {static_cast<unsigned>((words + kCsrToBitmaskThreads - 1) / kCsrToBitmaskThreads), 1, 1};
  launch.block = {static_cast<unsigned>(kCsrToBitmaskThreads), 1, 1};
  launch.stream = stream;
  return launch;
}

void MaskConvertFamily::launch(const jit::Kernel& kernel, const CsrToBitmaskParams& params, CUstream stream) {
  validate(params);
  CsrToBitmaskParams copy = params;
  void* args[] = {&copy};
  kernel.launch(geometry(params, stream), args);
}

}  // namespace sparsejit::templates
