#include "templates/permute/permute_family.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "templates/permute/permute_tuning.h"

namespace sparsejit::templates {
namespace {

constexpr int kElementBytes = 2;

const char* direction_name(PermuteDirection direction) {
  return direction == PermuteDirection::gather ? "gather" : "scatter";
}

bool aligned(long long value, int bytes) { return value % bytes == 0; }

}  // namespace

std::string PermuteConfig::name_expression() const {
  return "sparsejit::permute_tokens<" + std::to_string(head_dim) + ", " +
         std::to_string(vector_bytes) + ", " + std::to_string(threads) + ", " +
         std::to_string(unroll) + ", " + (direction == PermuteDirection::scatter ? "true" : "false") +
         ">";
}

std::string PermuteConfig::label() const {
  return "permute_tokens<D=" + std::to_string(head_dim) + " vec=" + std::to_string(vector_bytes) +
         " threads=" + std::to_string(threads) + " unroll=" + std::to_string(unroll) + " " +
         direction_name(direction) + ">";
}

std::string PermuteConfig::tuning_json() const {
  return nlohmann::json{{"vector_bytes", vector_bytes}, {"threads", threads}, {"unroll", unroll}}.dump();
}

PermuteConfig PermuteConfig::from_tuning_json(int head_dim, PermuteDirection direction,
                                              const std::string& json) {
  const nlohmann::json parsed = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  const auto member = [&](const char* name, const auto& allowed) {
    if (!parsed.is_object() || !parsed.contains(name) || !parsed[name].is_number_integer())
      throw std::invalid_argument("permute_tokens config '" + json + "' lacks the integer '" + name + "'");
    const int value = parsed[name].get<int>();
    if (std::find(allowed.begin(), allowed.end(), value) == allowed.end())
      throw std::invalid_argument("permute_tokens config '" + json + "': " + name + " = " +
                                  std::to_string(value) + " is outside the family's space");
    return value;
  };
  return PermuteConfig{head_dim, member("vector_bytes", kPermuteVectorBytes),
                       member("threads", kPermuteThreads), member("unroll", kPermuteUnroll), direction};
}

std::string permute_problem_key(int head_dim, PermuteDirection direction) {
  return "permute_tokens|d" + std::to_string(head_dim) + "|" + direction_name(direction);
}

PermuteConfig default_permute_config(int head_dim, PermuteDirection direction,
                                     int max_vector_bytes) {
  PermuteConfig config;
  config.head_dim = head_dim;
  config.direction = direction;
  config.vector_bytes = std::clamp(max_vector_bytes, 4, 16);  // below 4, validate() explains
  return config;
}

jit::KernelSpec PermuteFamily::render(const PermuteConfig& config, const jit::Target& target) {
  jit::KernelSpec specialization;
  specialization.family = "permute_tokens";
  specialization.label = config.label();
  specialization.name_expression = config.name_expression();
  specialization.request =
      render_program("permute_tokens.cu", "permute/permute_tokens.cuh",
                     {"permute/permute_tokens.cuh", "permute/permute_params.h"},
                     specialization.name_expression, target);
  return specialization;
}

std::vector<jit::KernelSpec> PermuteFamily::enumerate(const jit::Target& target) const {
  std::vector<jit::KernelSpec> space;
  for (int head_dim : kPermuteHeadDims)
    for (int vector_bytes : kPermuteVectorBytes)
      for (int threads : kPermuteThreads)
        for (int unroll : kPermuteUnroll)
          for (PermuteDirection direction : {PermuteDirection::gather, PermuteDirection::scatter})
            space.push_back(render({head_dim, vector_bytes, threads, unroll, direction}, target));
  return space;
}

PermuteTensor dense_permute_tensor(const void* source, TokenLayout source_layout, void* destination,
                                   TokenLayout destination_layout, int heads, int tokens,
                                   int head_dim) {
  const long long h = heads, n = tokens, d = head_dim;
  // {batch, head, token} strides in elements.
  const auto strides = [&](TokenLayout layout) {
    return layout == TokenLayout::bnhd ? std::array<long long, 3>{n * h * d, d, h * d}
                                       : std::array<long long, 3>{h * n * d, n * d, d};
  };
  const auto from = strides(source_layout);
  const auto to = strides(destination_layout);
  return PermuteTensor{source, destination, from[0], from[1], from[2], to[0], to[1], to[2]};
}

std::vector<std::unique_ptr<TuningProblem>> PermuteFamily::tuning_problems() const {
  std::vector<std::unique_ptr<TuningProblem>> problems;
  for (int head_dim : kPermuteHeadDims)
    for (PermuteDirection direction : {PermuteDirection::gather, PermuteDirection::scatter})
      problems.push_back(std::make_unique<PermuteTuningProblem>(head_dim, direction));
  return problems;
}

int PermuteFamily::max_vector_bytes(const PermuteParams& params) {
  for (int bytes : kPermuteVectorBytes) {
    bool fits = true;
    for (int t = 0; t < params.tensor_count && t < kMaxPermuteTensors; ++t) {
      const PermuteTensor& tensor = params.tensors[t];
      for (long long address : {static_cast<long long>(reinterpret_cast<std::uintptr_t>(tensor.source)),
                                static_cast<long long>(reinterpret_cast<std::uintptr_t>(tensor.destination))})
        fits = fits && aligned(address, bytes);
      for (long long stride :
           {tensor.source_batch_stride, tensor.source_head_stride, tensor.source_token_stride,
            tensor.destination_batch_stride, tensor.destination_head_stride,
            tensor.destination_token_stride})
        fits = fits && aligned(stride * kElementBytes, bytes);
    }
    if (fits) return bytes;
  }
  return kElementBytes;
}

void PermuteFamily::validate(const PermuteConfig& config, const PermuteParams& params) {
  const auto fail = [](const std::string& why) { throw std::invalid_argument("permute_tokens: " + why); };
  if (std::find(kPermuteHeadDims.begin(), kPermuteHeadDims.end(), config.head_dim) ==
      kPermuteHeadDims.end())
    fail("head dim " + std::to_string(config.head_dim) + " is not supported (64, 96 or 128)");
  if (std::find(kPermuteVectorBytes.begin(), kPermuteVectorBytes.end(), config.vector_bytes) ==
      kPermuteVectorBytes.end())
    fail("vector width " + std::to_string(config.vector_bytes) + " is not 4, 8 or 16 bytes");
  if (params.tensor_count < 1 || params.tensor_count > kMaxPermuteTensors)
    fail("tensor_count must be 1.." + std::to_string(kMaxPermuteTensors) + ", got " +
         std::to_string(params.tensor_count));
  if (params.batch < 1 || params.heads < 1 || params.tokens < 1)
    fail("batch, heads and tokens must be positive (got " + std::to_string(params.batch) + ", " +
         std::to_string(params.heads) + ", " + std::to_string(params.tokens) + ")");
  if (params.heads > 65535 || static_cast<long long>(params.batch) * params.tensor_count > 65535)
    fail("heads and batch*tensor_count must each be at most 65535");
  const long long vectors =
      static_cast<long long>(params.tokens) * config.head_dim * kElementBytes / config.vector_bytes;
  if (vectors + static_cast<long long>(config.threads) * config.unroll >= (1LL << 31))
    fail("too many tokens for one launch (" + std::to_string(params.tokens) + ")");
  if (params.permutation == nullptr) fail("the permutation pointer is null");
  for (int t = 0; t < params.tensor_count; ++t)
    if (params.tensors[t].source == nullptr || params.tensors[t].destination == nullptr)
      fail("tensor " + std::to_string(t) + " has a null source or destination");
  const int widest = max_vector_bytes(params);
  if (config.vector_bytes > widest)
    fail("the pointers and strides are aligned to " + std::to_string(widest) +
         " bytes, too little for " + std::to_string(config.vector_bytes) + "-byte vectors" +
         (widest < 4 ? " (every pointer and stride*2 must be a multiple of 4 bytes)" : ""));
}

jit::LaunchConfig PermuteFamily::geometry(const PermuteConfig& config, const PermuteParams& params,
                                          CUstream stream) {
  const long long vectors =
      static_cast<long long>(params.tokens) * config.head_dim * kElementBytes / config.vector_bytes;
  const long long per_block = static_cast<long long>(config.threads) * config.unroll;
  jit::LaunchConfig launch;
  launch.grid = {static_cast<unsigned>((vectors + per_block - 1) / per_block),
                 static_cast<unsigned>(params.heads),
                 static_cast<unsigned>(params.batch * params.tensor_count)};
  launch.block = {static_cast<unsigned>(config.threads), 1, 1};
  launch.stream = stream;
  return launch;
}

void PermuteFamily::launch(const jit::Kernel& kernel, const PermuteConfig& config,
                           const PermuteParams& params, CUstream stream) {
  validate(config, params);
  PermuteParams copy = params;
  void* args[] = {&copy};
  kernel.launch(geometry(config, params, stream), args);
}

void validate_permutation(std::span<const int> permutation) {
  std::vector<bool> seen(permutation.size(), false);
  for (std::size_t i = 0; i < permutation.size(); ++i) {
    const int value = permutation[i];
    if (value < 0 || static_cast<std::size_t>(value) >= permutation.size())
      throw std::invalid_argument("permutation[" + std::to_string(i) + "] = " +
                                  std::to_string(value) + " is outside 0.." +
                                  std::to_string(permutation.size() - 1));
    if (seen[static_cast<std::size_t>(value)])
      throw std::invalid_argument("permutation[" + std::to_string(i) + "] = " +
                                  std::to_string(value) + " repeats an earlier entry");
    seen[static_cast<std::size_t>(value)] = true;
  }
}

}  // namespace sparsejit::templates
