// What the permute_tokens tests share (test_templates and test_runtime): storage layouts
// written out independently of the library, random host cases with poisoned destinations,
// their device copies, and a bit-exact comparison that names the first differing element.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "jit/device_memory.h"
#include "jit/driver_api.h"
#include "templates/permute/permute_family.h"
#include "templates/permute/permute_params.h"
#include "templates/permute/permute_reference.h"
#include "templates/common/half_precision.h"
#include "tests/support/gpu_test.h"

namespace sparsejit::testing {

// Every destination element starts as this bit pattern (a NaN in bf16, never a random value),
// so an element a kernel forgot to write, or padding it wrongly wrote, cannot match.
inline constexpr std::uint16_t kPoison = 0xFFFF;

// How a logical [B, H, N, D] tensor is stored.
enum class Layout { bnhd, bhnd };

inline const char* layout_name(Layout layout) { return layout == Layout::bnhd ? "BNHD" : "BHND"; }
inline const char* direction_name(templates::PermuteDirection direction) {
  return direction == templates::PermuteDirection::gather ? "gather" : "scatter";
}

// The three storage pairs the runtime must handle: a layout change either way, and none.
struct StoragePair {
  Layout source;
  Layout destination;
};
inline constexpr StoragePair kStoragePairs[] = {
    {Layout::bnhd, Layout::bhnd}, {Layout::bhnd, Layout::bnhd}, {Layout::bhnd, Layout::bhnd}};
inline std::string pair_name(StoragePair pair) {
  return std::string(layout_name(pair.source)) + "_to_" + layout_name(pair.destination);
}

// How GoogleTest prints these in parameterized test names and failures.
inline void PrintTo(StoragePair pair, std::ostream* out) { *out << pair_name(pair); }

// Every point of the permute space, from the descriptor's constants (test_templates checks
// that PermuteFamily::enumerate yields exactly these).
inline std::vector<templates::PermuteConfig> all_permute_configs() {
  std::vector<templates::PermuteConfig> configs;
  for (int head_dim : templates::kPermuteHeadDims)
    for (int vector_bytes : templates::kPermuteVectorBytes)
      for (int threads : templates::kPermuteThreads)
        for (int unroll : templates::kPermuteUnroll)
          for (auto direction : {templates::PermuteDirection::gather, templates::PermuteDirection::scatter})
            configs.push_back({head_dim, vector_bytes, threads, unroll, direction});
  return configs;
}

struct PermuteShape {
  int batch = 1;
  int heads = 1;
  int tokens = 1;
  int head_dim = 128;
  int tensor_count = 1;
};

inline std::string shape_name(const PermuteShape& s) {
  return "B" + std::to_string(s.batch) + " H" + std::to_string(s.heads) + " N" +
         std::to_string(s.tokens) + " D" + std::to_string(s.head_dim) + " x" +
         std::to_string(s.tensor_count) + " tensor(s)";
}

// Strides (elements) and the extent of one stored tensor. `padding` elements follow every
// token row: after the H*D elements of a token in BNHD, after the D elements of a row in BHND.
struct Storage {
  Layout layout = Layout::bhnd;
  long long batch_stride = 0, head_stride = 0, token_stride = 0;
  std::size_t elements = 0;  // the buffer spans batch * batch_stride elements
};

inline Storage make_storage(Layout layout, const PermuteShape& s, int padding = 0) {
  Storage storage;
  storage.layout = layout;
  if (layout == Layout::bnhd) {
    storage.token_stride = static_cast<long long>(s.heads) * s.head_dim + padding;
    storage.head_stride = s.head_dim;
    storage.batch_stride = storage.token_stride * s.tokens;
  } else {
    storage.token_stride = s.head_dim + padding;
    storage.head_stride = storage.token_stride * s.tokens;
    storage.batch_stride = storage.head_stride * s.heads;
  }
  storage.elements = static_cast<std::size_t>(storage.batch_stride) * s.batch;
  return storage;
}

// Index of logical element (b, h, n, d) in an unpadded tensor of `layout`, from the textbook
// formula, not from Storage: the independent side of the reference test.
inline std::size_t dense_index(Layout layout, const PermuteShape& s, std::size_t b, std::size_t h,
                               std::size_t n, std::size_t d) {
  const std::size_t H = s.heads, N = s.tokens, D = s.head_dim;
  return layout == Layout::bhnd ? ((b * H + h) * N + n) * D + d : ((b * N + n) * H + h) * D + d;
}

// Which elements of a stored tensor belong to the logical tensor (the rest is padding).
inline std::vector<bool> logical_elements(const Storage& storage, const PermuteShape& s) {
  std::vector<bool> logical(storage.elements, false);
  for (long long b = 0; b < s.batch; ++b)
    for (long long h = 0; h < s.heads; ++h)
      for (long long n = 0; n < s.tokens; ++n)
        for (long long d = 0; d < s.head_dim; ++d)
          logical[static_cast<std::size_t>(b * storage.batch_stride + h * storage.head_stride +
                                           n * storage.token_stride + d)] = true;
  return logical;
}

inline std::vector<int> random_permutation(int tokens, std::mt19937_64& generator) {
  std::vector<int> permutation(static_cast<std::size_t>(tokens));
  std::iota(permutation.begin(), permutation.end(), 0);
  std::shuffle(permutation.begin(), permutation.end(), generator);
  return permutation;
}

// One permute_tokens problem on the host: random bf16 sources (padding included, so a copy
// of padding would show), poisoned destinations, a random permutation.
struct HostPermuteCase {
  PermuteShape shape;
  templates::PermuteDirection direction = templates::PermuteDirection::gather;
  Storage source, destination;
  std::vector<int> permutation;
  std::vector<std::vector<std::uint16_t>> sources;
  std::vector<std::vector<std::uint16_t>> destinations;

  std::string name() const {
    return shape_name(shape) + " " + direction_name(direction) + " " + layout_name(source.layout) +
           "->" + layout_name(destination.layout);
  }

  // Params over the given buffers (host or device), with this case's shape and strides.
  PermuteParams params_for(const std::vector<const void*>& source_pointers,
                           const std::vector<void*>& destination_pointers,
                           const int* permutation_pointer) const {
    PermuteParams params{};
    for (int t = 0; t < shape.tensor_count; ++t)
      params.tensors[t] = {source_pointers[t],       destination_pointers[t],
                           source.batch_stride,      source.head_stride,
                           source.token_stride,      destination.batch_stride,
                           destination.head_stride,  destination.token_stride};
    params.permutation = permutation_pointer;
    params.tensor_count = shape.tensor_count;
    params.batch = shape.batch;
    params.heads = shape.heads;
    params.tokens = shape.tokens;
    return params;
  }
};

inline HostPermuteCase make_case(const PermuteShape& shape, templates::PermuteDirection direction,
                                 StoragePair pair, std::mt19937_64& generator,
                                 int padding = 0) {
  HostPermuteCase c;
  c.shape = shape;
  c.direction = direction;
  c.source = make_storage(pair.source, shape, padding);
  c.destination = make_storage(pair.destination, shape, padding);
  c.permutation = random_permutation(shape.tokens, generator);
  for (int t = 0; t < shape.tensor_count; ++t) {
    c.sources.push_back(templates::random_half(c.source.elements, templates::HalfDtype::bf16, generator));
    c.destinations.emplace_back(c.destination.elements, kPoison);
  }
  return c;
}

// The CPU reference's result: copies of the case's (poisoned) destinations after
// permute_tokens_reference ran over them.
inline std::vector<std::vector<std::uint16_t>> reference_result(const HostPermuteCase& c) {
  std::vector<std::vector<std::uint16_t>> result = c.destinations;
  std::vector<const void*> source_pointers;
  std::vector<void*> destination_pointers;
  for (int t = 0; t < c.shape.tensor_count; ++t) {
    source_pointers.push_back(c.sources[t].data());
    destination_pointers.push_back(result[t].data());
  }
  templates::permute_tokens_reference(
      c.params_for(source_pointers, destination_pointers, c.permutation.data()), c.shape.head_dim,
      c.direction);
  return result;
}

// "" when equal; otherwise where the first difference is and how many elements differ.
inline std::string first_difference(const std::vector<std::uint16_t>& expected,
                                    const std::vector<std::uint16_t>& actual) {
  if (expected.size() != actual.size())
    return "size " + std::to_string(actual.size()) + ", expected " + std::to_string(expected.size());
  if (expected == actual) return "";
  std::size_t first = expected.size(), count = 0;
  for (std::size_t i = 0; i < expected.size(); ++i)
    if (expected[i] != actual[i]) {
      first = std::min(first, i);
      ++count;
    }
  char text[160];
  std::snprintf(text, sizeof text, "%zu element(s) differ; first at element %zu: 0x%04x, expected 0x%04x",
                count, first, actual[first], expected[first]);
  return text;
}

// Device copies of a HostPermuteCase. Every tensor pointer lies `offset_bytes` past the start
// of its allocation (to test misaligned calls); destinations are poisoned with 0xFF in full,
// the slack before and after included. Needs a current context (GpuTest).
class DevicePermuteCase {
 public:
  static constexpr std::size_t kTailSlackBytes = 64;

  DevicePermuteCase(const HostPermuteCase& host, std::size_t offset_bytes = 0)
      : offset_bytes_(offset_bytes), permutation_(jit::DeviceBuffer::from_host(host.permutation)) {
    std::vector<const void*> source_pointers;
    std::vector<void*> destination_pointers;
    for (int t = 0; t < host.shape.tensor_count; ++t) {
      const std::vector<std::uint16_t>& values = host.sources[t];
      std::vector<std::uint8_t> bytes(offset_bytes + values.size() * 2 + kTailSlackBytes, 0x5a);
      std::memcpy(bytes.data() + offset_bytes, values.data(), values.size() * 2);
      sources_.push_back(jit::DeviceBuffer::from_host(bytes));
      destinations_.emplace_back(offset_bytes + host.destinations[t].size() * 2 + kTailSlackBytes);
      destinations_.back().fill(0xFF);
      source_pointers.push_back(static_cast<const char*>(sources_.back().pointer()) + offset_bytes);
      destination_pointers.push_back(static_cast<char*>(destinations_.back().pointer()) + offset_bytes);
    }
    params_ = host.params_for(source_pointers, destination_pointers,
                              static_cast<const int*>(permutation_.pointer()));
    // The uploads and fills ran on the legacy default stream and may still be in flight
    // (cuMemsetD8 and pageable cuMemcpyHtoD can return early); the kernels under test run on
    // non-blocking streams, which do not wait for the legacy stream. (Not cuCtxSynchronize:
    // with CUDA 13 headers jit's driver table holds cuCtxSynchronize_v2(CUcontext) behind a
    // (void) signature, and calling it crashes.)
    SJ_CU(cuStreamSynchronize(CU_STREAM_LEGACY));
  }

  const PermuteParams& params() const { return params_; }

  // Destination t as the kernel left it, without the slack.
  std::vector<std::uint16_t> destination(int t) const {
    const std::vector<std::uint8_t> bytes = destinations_[t].download();
    std::vector<std::uint16_t> values((bytes.size() - offset_bytes_ - kTailSlackBytes) / 2);
    std::memcpy(values.data(), bytes.data() + offset_bytes_, values.size() * 2);
    return values;
  }

  // Whether the slack around destination t still holds its poison.
  bool slack_untouched(int t) const {
    const std::vector<std::uint8_t> bytes = destinations_[t].download();
    const auto poisoned = [](std::uint8_t byte) { return byte == 0xFF; };
    return std::all_of(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(offset_bytes_),
                       poisoned) &&
           std::all_of(bytes.end() - kTailSlackBytes, bytes.end(), poisoned);
  }

 private:
  std::size_t offset_bytes_;
  jit::DeviceBuffer permutation_;
  std::vector<jit::DeviceBuffer> sources_;
  std::vector<jit::DeviceBuffer> destinations_;
  PermuteParams params_{};
};

// Checks every destination of `device` bit for bit against the CPU reference of `host`, and
// that the slack around each destination kept its poison.
inline void expect_matches_reference(const HostPermuteCase& host, const DevicePermuteCase& device) {
  const std::vector<std::vector<std::uint16_t>> expected = reference_result(host);
  for (int t = 0; t < host.shape.tensor_count; ++t) {
    EXPECT_EQ(first_difference(expected[t], device.destination(t)), "")
        << "tensor " << t << " of " << host.name();
    EXPECT_TRUE(device.slack_untouched(t)) << "tensor " << t << " of " << host.name()
                                           << " was written outside its buffer";
  }
}

}  // namespace sparsejit::testing

namespace sparsejit::templates {
// Found by argument-dependent lookup: GoogleTest prints "gather"/"scatter", not bytes.
inline void PrintTo(PermuteDirection direction, std::ostream* out) {
  *out << testing::direction_name(direction);
}
}  // namespace sparsejit::templates
