#include "templates/registry.h"

#include <array>
#include <stdexcept>
#include <string>

#include "templates/attention_quality/attention_quality_family.h"
#include "templates/block_score/block_score_family.h"
#include "templates/block_select/block_select_family.h"
#include "templates/mask_convert/mask_convert_family.h"
#include "templates/permute/permute_family.h"
#include "templates/sparse_attention/attention_family.h"

namespace sparsejit::templates {

std::span<const KernelFamily* const> registered_families() {
  // One line per family.
  static const PermuteFamily permute;
  static const SparseAttentionFamily sparse_attention;
  static const BlockScoreFamily block_score;
  static const BlockSelectFamily block_select;
  static const MaskConvertFamily mask_convert;
  static const AttentionQualityFamily attention_quality;
  static const std::array<const KernelFamily*, 6> families = {&permute,      &sparse_attention, &block_score,
                                                              &block_select, &mask_convert,     &attention_quality};
  return families;
}

const KernelFamily& find_family(std::string_view name) {
  std::string known;
  for (const KernelFamily* family : registered_families()) {
    if (family->name() == name) return *family;
    known += (known.empty() ? "" : ", ") + std::string(family->name());
  }
  throw std::invalid_argument("no kernel family '" + std::string(name) + "' (registered: " +
                              known + ")");
}

}  // namespace sparsejit::templates
