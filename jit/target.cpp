#include "jit/target.h"

#include <algorithm>
#include <charconv>
#include <vector>

#include "jit/error.h"
#include "jit/nvrtc_api.h"

namespace sparsejit::jit {
namespace {

// Opens NVRTC (NvrtcUnavailableError when it cannot be; `arch` names what was checked).
std::vector<int> nvrtc_supported_architectures(std::string_view arch) {
  const NvrtcApi& api = nvrtc("checking the target '" + std::string(arch) + "' against the architectures NVRTC supports");
  int count = 0;
  if (api.nvrtcGetNumSupportedArchs(&count) != NVRTC_SUCCESS) return {};
  std::vector<int> archs(static_cast<std::size_t>(count));
  if (api.nvrtcGetSupportedArchs(archs.data()) != NVRTC_SUCCESS) return {};
  return archs;
}

std::string supported_list(std::string_view arch) {
  std::string list;
  for (int supported : nvrtc_supported_architectures(arch)) {
    if (!list.empty()) list += ", ";
    list += "sm_" + std::to_string(supported);
  }
  return list;
}

}  // namespace

Target Target::parse(std::string_view arch) {
  const auto fail = [&](const std::string& why) -> Target {
    throw JitError("invalid target '" + std::string(arch) + "': " + why +
                   " (this NVRTC supports " + supported_list(arch) +
                   "; append 'a' for the arch-specific variant of sm_90 and newer)");
  };
  if (!arch.starts_with("sm_") || arch.size() < 5) return fail("expected sm_<major><minor>[a]");
  std::string_view digits = arch.substr(3);
  const bool specific = digits.ends_with('a');
  if (specific) digits.remove_suffix(1);
  int number = 0;
  auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), number);
  if (error != std::errc() || end != digits.data() + digits.size() || number < 10)
    return fail("expected sm_<major><minor>[a]");
  const std::vector<int> supported = nvrtc_supported_architectures(arch);
  if (std::find(supported.begin(), supported.end(), number) == supported.end())
    return fail("not supported by this NVRTC");
  if (specific && number < 90) return fail("arch-specific targets start at sm_90a");
  return Target(number / 10, number % 10, specific);
}

Target Target::for_compute_capability(int major, int minor) { return Target(major, minor, false); }

std::string Target::name() const {
  return "sm_" + std::to_string(major_) + std::to_string(minor_) + (arch_specific_ ? "a" : "");
}

std::string Target::nvrtc_option() const { return "--gpu-architecture=" + name(); }

bool Target::runs_on(int major, int minor) const {
  if (arch_specific_) return major == major_ && minor == minor_;
  return major == major_ && minor >= minor_;
}

Target Target::with_arch_specific(bool on) const { return Target(major_, minor_, on); }

}  // namespace sparsejit::jit
