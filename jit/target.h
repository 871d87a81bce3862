#pragma once
// A compilation target: the SASS architecture a CUBIN is built for ("sm_90a").
#include <string>
#include <string_view>

namespace sparsejit::jit {

class Target {
 public:
  // Parses "sm_80", "sm_86", "sm_89", "sm_90", "sm_90a", ... Throws JitError naming the
  // architectures this NVRTC supports when the name is malformed or unsupported. Opens NVRTC
  // (for that list; NvrtcUnavailableError when it cannot): the runtime, which must not,
  // uses for_compute_capability.
  static Target parse(std::string_view arch);
  // The plain (not arch-specific) target of a device of compute capability major.minor.
  static Target for_compute_capability(int major, int minor);

  int major() const { return major_; }
  int minor() const { return minor_; }
  // Arch-specific targets ("sm_90a") unlock wgmma and setmaxnreg but run on that exact chip only.
  bool arch_specific() const { return arch_specific_; }
  std::string name() const;                // "sm_90a"
  std::string nvrtc_option() const;        // "--gpu-architecture=sm_90a"
  // Whether a CUBIN for this target runs on a device of compute capability major.minor.
  // SASS runs on the same major version with an equal or newer minor; an arch-specific
  // CUBIN only on its exact chip.
  bool runs_on(int major, int minor) const;

  Target with_arch_specific(bool on) const;
  friend bool operator==(const Target&, const Target&) = default;

 private:
  Target(int major, int minor, bool arch_specific)
      : major_(major), minor_(minor), arch_specific_(arch_specific) {}
  int major_;
  int minor_;
  bool arch_specific_;
};

}  // namespace sparsejit::jit
