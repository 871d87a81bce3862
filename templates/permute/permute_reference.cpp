#include "templates/permute/permute_reference.h"

#include <cstdint>
#include <cstring>

namespace sparsejit::templates {

void permute_tokens_reference(const PermuteParams& p, int head_dim, PermuteDirection direction) {
  for (int t = 0; t < p.tensor_count; ++t) {
    const PermuteTensor& tensor = p.tensors[t];
    const auto* source = static_cast<const std::uint16_t*>(tensor.source);
    auto* destination = static_cast<std::uint16_t*>(tensor.destination);
    for (long long b = 0; b < p.batch; ++b)
      for (long long h = 0; h < p.heads; ++h)
        for (long long row = 0; row < p.tokens; ++row) {
          const long long mapped = p.permutation[row];
          const long long from = direction == PermuteDirection::gather ? mapped : row;
          const long long to = direction == PermuteDirection::gather ? row : mapped;
          std::memcpy(destination + b * tensor.destination_batch_stride +
                          h * tensor.destination_head_stride + to * tensor.destination_token_stride,
                      source + b * tensor.source_batch_stride + h * tensor.source_head_stride +
                          from * tensor.source_token_stride,
                      static_cast<std::size_t>(head_dim) * sizeof(std::uint16_t));
        }
  }
}

}  // namespace sparsejit::templates
