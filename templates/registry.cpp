#include "templates/registry.h"

#include <array>
#include <stdexcept>
#include <string>

#include "templates/permute/permute_family.h"

namespace sparsejit::templates {

std::span<const KernelFamily* const> registered_families() {
  // One line per family.
  static const PermuteFamily permute;
  static const std::array<const KernelFamily*, 1> families = {&permute};
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
