// The CPU reference of permute_tokens (the oracle of every GPU test) against the textbook
// formula, and validate_permutation.
#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "templates/permute/permute_family.h"
#include "templates/permute/permute_reference.h"
#include "tests/templates/permute_case.h"

namespace sparsejit::templates {
namespace {

using testing::StoragePair;

// The expected destinations of `c`, element by element from dense_index (no strides, no
// memcpy of rows): gather reads dst[b,h,i,:] = src[b,h,perm[i],:]; scatter is written as a
// pull through the inverse permutation, dst[b,h,j,:] = src[b,h,inverse[j],:].
std::vector<std::vector<std::uint16_t>> naive_permute(const testing::HostPermuteCase& c) {
  const testing::PermuteShape& s = c.shape;
  std::vector<int> inverse(c.permutation.size());
  for (std::size_t i = 0; i < c.permutation.size(); ++i)
    inverse[static_cast<std::size_t>(c.permutation[i])] = static_cast<int>(i);
  std::vector<std::vector<std::uint16_t>> expected = c.destinations;
  for (int t = 0; t < s.tensor_count; ++t)
    for (int b = 0; b < s.batch; ++b)
      for (int h = 0; h < s.heads; ++h)
        for (int n = 0; n < s.tokens; ++n) {
          const int from = c.direction == PermuteDirection::gather ? c.permutation[n] : inverse[n];
          for (int d = 0; d < s.head_dim; ++d)
            expected[t][testing::dense_index(c.destination.layout, s, b, h, n, d)] =
                c.sources[t][testing::dense_index(c.source.layout, s, b, h, from, d)];
        }
  return expected;
}

class PermuteReference
    : public ::testing::TestWithParam<std::tuple<int, PermuteDirection, StoragePair>> {};

// For odd token counts (1 included) and 1..3 tensors, the reference writes every destination
// element exactly as the formula says (destinations start poisoned, so a skipped row fails).
TEST_P(PermuteReference, MatchesTheNaiveFormula) {
  const auto [head_dim, direction, pair] = GetParam();
  std::mt19937_64 generator = testing::fresh_generator();
  for (int tokens : {1, 7, 37, 129})
    for (int tensor_count = 1; tensor_count <= kMaxPermuteTensors; ++tensor_count) {
      const testing::PermuteShape shape{2, 3, tokens, head_dim, tensor_count};
      const testing::HostPermuteCase c = testing::make_case(shape, direction, pair, generator);
      SCOPED_TRACE(c.name());
      const auto expected = naive_permute(c);
      const auto actual = testing::reference_result(c);
      for (int t = 0; t < tensor_count; ++t) {
        EXPECT_EQ(testing::first_difference(expected[t], actual[t]), "") << "tensor " << t;
        EXPECT_EQ(std::count(expected[t].begin(), expected[t].end(), testing::kPoison), 0)
            << "an unpadded destination is fully written (random bf16 is never 0xFFFF)";
      }
    }
}

INSTANTIATE_TEST_SUITE_P(
    AllCases, PermuteReference,
    ::testing::Combine(::testing::Values(64, 96, 128),
                       ::testing::Values(PermuteDirection::gather, PermuteDirection::scatter),
                       ::testing::ValuesIn(testing::kStoragePairs)),
    [](const auto& info) {
      return "D" + std::to_string(std::get<0>(info.param)) + "_" +
             testing::direction_name(std::get<1>(info.param)) + "_" +
             testing::pair_name(std::get<2>(info.param));
    });

// Gathering into the new order (changing the layout on the way) and scattering back with the
// same permutation restores the source bit for bit.
TEST(PermuteReferenceRoundTrip, GatherThenScatterRestoresTheInput) {
  std::mt19937_64 generator = testing::fresh_generator();
  for (int head_dim : kPermuteHeadDims)
    for (StoragePair pair : testing::kStoragePairs)
      for (int tokens : {1, 37, 129}) {
        const testing::PermuteShape shape{2, 3, tokens, head_dim, 3};
        const testing::HostPermuteCase gather =
            testing::make_case(shape, PermuteDirection::gather, pair, generator);
        SCOPED_TRACE(gather.name());
        // The scatter reads what the gather wrote and writes back into the source's layout.
        testing::HostPermuteCase scatter = testing::make_case(
            shape, PermuteDirection::scatter, {pair.destination, pair.source}, generator);
        scatter.permutation = gather.permutation;
        scatter.sources = testing::reference_result(gather);
        const auto restored = testing::reference_result(scatter);
        for (int t = 0; t < shape.tensor_count; ++t)
          EXPECT_EQ(testing::first_difference(gather.sources[t], restored[t]), "") << "tensor " << t;
      }
}

// With strides wider than the rows, the reference copies rows only: the padding of the
// destination keeps its poison, and nothing from the source's padding is copied.
TEST(PermuteReferencePadding, LeavesPaddingUntouched) {
  std::mt19937_64 generator = testing::fresh_generator();
  const testing::PermuteShape shape{2, 3, 37, 96, 2};
  for (StoragePair pair : testing::kStoragePairs) {
    const testing::HostPermuteCase c =
        testing::make_case(shape, PermuteDirection::gather, pair, generator, /*padding=*/8);
    SCOPED_TRACE(c.name());
    const auto actual = testing::reference_result(c);
    const std::vector<bool> logical = testing::logical_elements(c.destination, shape);
    for (int t = 0; t < shape.tensor_count; ++t) {
      std::size_t padding = 0, written_padding = 0, poisoned_logical = 0;
      for (std::size_t i = 0; i < logical.size(); ++i) {
        if (!logical[i]) {
          ++padding;
          written_padding += actual[t][i] != testing::kPoison;
        } else {
          poisoned_logical += actual[t][i] == testing::kPoison;
        }
      }
      EXPECT_GT(padding, 0u);
      EXPECT_EQ(written_padding, 0u) << "tensor " << t;
      EXPECT_EQ(poisoned_logical, 0u) << "tensor " << t;
    }
  }
}

// Permutations of any size pass, including the empty and the one-element one.
TEST(ValidatePermutation, AcceptsPermutations) {
  std::mt19937_64 generator = testing::fresh_generator();
  EXPECT_NO_THROW(validate_permutation(std::vector<int>{}));
  EXPECT_NO_THROW(validate_permutation(std::vector<int>{0}));
  EXPECT_NO_THROW(validate_permutation(std::vector<int>{2, 0, 1}));
  for (int size : {2, 37, 32760}) EXPECT_NO_THROW(validate_permutation(testing::random_permutation(size, generator)));
}

// The error names the offending index, its value and why.
void expect_rejected(const std::vector<int>& permutation, const std::string& expected_message) {
  try {
    validate_permutation(permutation);
    ADD_FAILURE() << "accepted a non-permutation; expected: " << expected_message;
  } catch (const std::invalid_argument& error) {
    EXPECT_EQ(std::string(error.what()), expected_message);
  }
}

// Out-of-range entries (negative, == size, far above) and repeats are refused with the index.
TEST(ValidatePermutation, RejectsOutOfRangeAndRepeatedEntriesNamingTheIndex) {
  expect_rejected({0, 3, 1}, "permutation[1] = 3 is outside 0..2");
  expect_rejected({0, 1, -1}, "permutation[2] = -1 is outside 0..2");
  expect_rejected({1}, "permutation[0] = 1 is outside 0..0");
  expect_rejected({4, 0, 1, 2, 1000}, "permutation[4] = 1000 is outside 0..4");
  expect_rejected({0, 1, 1}, "permutation[2] = 1 repeats an earlier entry");
  expect_rejected({2, 0, 2, 1}, "permutation[2] = 2 repeats an earlier entry");
  // A large random permutation with one entry duplicated is caught at the second copy.
  std::mt19937_64 generator = testing::fresh_generator();
  std::vector<int> permutation = testing::random_permutation(1000, generator);
  permutation[700] = permutation[300];
  expect_rejected(permutation,
                  "permutation[700] = " + std::to_string(permutation[300]) + " repeats an earlier entry");
}

}  // namespace
}  // namespace sparsejit::templates
