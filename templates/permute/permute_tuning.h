#pragma once
// permute_tokens as a tuning problem: one head dim and direction, the Q/K/V of one layer.
// Gather reads the models' [B,N,H,D] and writes the kernels' [B,H,N,D]; scatter the reverse.
#include <cstdint>
#include <vector>

#include "jit/device_memory.h"
#include "templates/permute/permute_family.h"
#include "templates/tuning.h"

namespace sparsejit::templates {

struct PermuteShape {
  int batch = 1;
  int heads = 12;
  int tokens = 32760;  // Wan2.1 480p: 21 x 30 x 52 latent tokens
  int tensors = 3;     // Q, K, V in one launch
};

class PermuteTuningProblem final : public TuningProblem {
 public:
  PermuteTuningProblem(int head_dim, PermuteDirection direction, PermuteShape timed = {});

  std::string family() const override { return "permute_tokens"; }
  std::string key() const override { return permute_problem_key(head_dim_, direction_); }
  std::string description() const override;
  std::vector<TuningCandidate> candidates(const jit::Target& target) const override;
  std::string default_config_json() const override;
  std::optional<int> head_dim() const override { return head_dim_; }
  void prepare() override;
  double check(const jit::Kernel& kernel, const TuningCandidate& candidate, CUstream stream) override;
  // A permutation copies bits: anything but an exact result is wrong.
  double error_bound() const override { return 0.0; }
  void run(const jit::Kernel& kernel, const TuningCandidate& candidate, CUstream stream) override;

 private:
  struct DeviceInputs {
    std::vector<jit::DeviceBuffer> sources, destinations;
    jit::DeviceBuffer permutation;
    PermuteParams params{};
  };
  DeviceInputs make_inputs(const PermuteShape& shape, const std::vector<int>& permutation,
                           const std::vector<std::vector<std::uint16_t>>* source_data) const;
  PermuteConfig config_of(const TuningCandidate& candidate) const;

  int head_dim_;
  PermuteDirection direction_;
  PermuteShape gate_shape_{2, 3, 777, 3};  // ragged, small: checked against the CPU reference
  PermuteShape timed_shape_;
  DeviceInputs gate_, timed_;
  std::vector<std::vector<std::uint16_t>> expected_;  // the gate's reference output per tensor
};

}  // namespace sparsejit::templates
