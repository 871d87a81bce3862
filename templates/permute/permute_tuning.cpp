#include "templates/permute/permute_tuning.h"

#include <cmath>
#include <numeric>
#include <random>

#include "jit/driver_api.h"
#include "templates/permute/permute_reference.h"
#include "templates/common/half_precision.h"

namespace sparsejit::templates {
namespace {

TokenLayout source_layout(PermuteDirection direction) {
  return direction == PermuteDirection::gather ? TokenLayout::bnhd : TokenLayout::bhnd;
}
TokenLayout destination_layout(PermuteDirection direction) {
  return direction == PermuteDirection::gather ? TokenLayout::bhnd : TokenLayout::bnhd;
}

}  // namespace

PermuteTuningProblem::PermuteTuningProblem(int head_dim, PermuteDirection direction,
                                           PermuteShape timed)
    : head_dim_(head_dim), direction_(direction), timed_shape_(timed) {}

std::string PermuteTuningProblem::description() const {
  return std::string(direction_ == PermuteDirection::gather ? "gather [B,N,H,D]->[B,H,N,D]"
                                                            : "scatter [B,H,N,D]->[B,N,H,D]") +
         " B=" + std::to_string(timed_shape_.batch) + " H=" + std::to_string(timed_shape_.heads) +
         " N=" + std::to_string(timed_shape_.tokens) + " D=" + std::to_string(head_dim_) + " x" +
         std::to_string(timed_shape_.tensors);
}

std::vector<TuningCandidate> PermuteTuningProblem::candidates(const jit::Target& target) const {
  std::vector<TuningCandidate> candidates;
  for (int vector_bytes : kPermuteVectorBytes)
    for (int threads : kPermuteThreads)
      for (int unroll : kPermuteUnroll) {
        const PermuteConfig config{head_dim_, vector_bytes, threads, unroll, direction_};
        candidates.push_back({config.tuning_json(), PermuteFamily::render(config, target)});
      }
  return candidates;
}

std::string PermuteTuningProblem::default_config_json() const {
  return default_permute_config(head_dim_, direction_).tuning_json();
}

PermuteConfig PermuteTuningProblem::config_of(const TuningCandidate& candidate) const {
  return PermuteConfig::from_tuning_json(head_dim_, direction_, candidate.config_json);
}

PermuteTuningProblem::DeviceInputs PermuteTuningProblem::make_inputs(
    const PermuteShape& shape, const std::vector<int>& permutation,
    const std::vector<std::vector<std::uint16_t>>* source_data) const {
  const std::size_t elements = static_cast<std::size_t>(shape.batch) * shape.heads * shape.tokens *
                               static_cast<std::size_t>(head_dim_);
  DeviceInputs inputs;
  inputs.permutation = jit::DeviceBuffer::from_host(permutation);
  for (int t = 0; t < shape.tensors; ++t) {
    inputs.sources.emplace_back(elements * 2);
    inputs.destinations.emplace_back(elements * 2);
    if (source_data != nullptr) {
      inputs.sources.back().upload({reinterpret_cast<const std::uint8_t*>((*source_data)[t].data()),
                                    elements * 2});
    } else {
      inputs.sources.back().fill(static_cast<std::uint8_t>(0x3c + t));  // timing: any finite bits
    }
  }
  inputs.params.tensor_count = shape.tensors;
  inputs.params.batch = shape.batch;
  inputs.params.heads = shape.heads;
  inputs.params.tokens = shape.tokens;
  inputs.params.permutation = static_cast<const int*>(inputs.permutation.pointer());
  for (int t = 0; t < shape.tensors; ++t)
    inputs.params.tensors[t] = dense_permute_tensor(
        inputs.sources[t].pointer(), source_layout(direction_), inputs.destinations[t].pointer(),
        destination_layout(direction_), shape.heads, shape.tokens, head_dim_);
  return inputs;
}

void PermuteTuningProblem::prepare() {
  std::mt19937_64 generator(std::random_device{}());
  const auto shuffled = [&](int tokens) {
    std::vector<int> permutation(static_cast<std::size_t>(tokens));
    std::iota(permutation.begin(), permutation.end(), 0);
    std::shuffle(permutation.begin(), permutation.end(), generator);
    return permutation;
  };
  const std::size_t gate_elements = static_cast<std::size_t>(gate_shape_.batch) * gate_shape_.heads *
                                    gate_shape_.tokens * static_cast<std::size_t>(head_dim_);
  std::vector<std::vector<std::uint16_t>> gate_sources;
  for (int t = 0; t < gate_shape_.tensors; ++t)
    gate_sources.push_back(random_half(gate_elements, HalfDtype::bf16, generator));
  const std::vector<int> gate_permutation = shuffled(gate_shape_.tokens);
  gate_ = make_inputs(gate_shape_, gate_permutation, &gate_sources);

  // The reference sees the same data through host pointers; its output starts poisoned too.
  expected_.assign(static_cast<std::size_t>(gate_shape_.tensors),
                   std::vector<std::uint16_t>(gate_elements, 0xffff));
  PermuteParams host = gate_.params;
  host.permutation = gate_permutation.data();
  for (int t = 0; t < gate_shape_.tensors; ++t)
    host.tensors[t] = dense_permute_tensor(gate_sources[t].data(), source_layout(direction_),
                                           expected_[t].data(), destination_layout(direction_),
                                           gate_shape_.heads, gate_shape_.tokens, head_dim_);
  permute_tokens_reference(host, head_dim_, direction_);

  timed_ = make_inputs(timed_shape_, shuffled(timed_shape_.tokens), nullptr);
}

double PermuteTuningProblem::check(const jit::Kernel& kernel, const TuningCandidate& candidate,
                                   CUstream stream) {
  for (jit::DeviceBuffer& destination : gate_.destinations) destination.fill(0xff);  // poison: NaN
  PermuteFamily::launch(kernel, config_of(candidate), gate_.params, stream);
  SJ_CU(cuStreamSynchronize(stream));
  double error = 0, norm = 0;
  for (std::size_t t = 0; t < expected_.size(); ++t) {
    const std::vector<std::uint16_t> actual = gate_.destinations[t].download_as<std::uint16_t>();
    for (std::size_t i = 0; i < actual.size(); ++i) {
      const double reference = half_bits_to_float(expected_[t][i], HalfDtype::bf16);
      const double difference = half_bits_to_float(actual[i], HalfDtype::bf16) - reference;
      error += difference * difference;
      norm += reference * reference;
    }
  }
  return std::sqrt(error / norm);  // NaN (fails every bound) where an element was not written
}

void PermuteTuningProblem::run(const jit::Kernel& kernel, const TuningCandidate& candidate,
                               CUstream stream) {
  PermuteFamily::launch(kernel, config_of(candidate), timed_.params, stream);
}

}  // namespace sparsejit::templates
