#pragma once
// The registered kernel families.
#include <span>
#include <string_view>

#include "templates/kernel_family.h"

namespace sparsejit::templates {

std::span<const KernelFamily* const> registered_families();
// Throws std::invalid_argument listing the registered names when `name` is unknown.
const KernelFamily& find_family(std::string_view name);

}  // namespace sparsejit::templates
