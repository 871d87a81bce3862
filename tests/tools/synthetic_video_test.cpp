// The synthetic video generator on small odd grids: determinism by seed, shapes and the
// latent features' scale, token orders as exact permutations, Wan's rotary split and its
// relative-position property, and the heads' locality: a head of high locality puts far
// more of its softmax mass on its grid neighbours than a diffuse one.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "runtime/token_order.h"
#include "tools/synthetic_video.h"

namespace sparsejit::tools {
namespace {

using templates::HalfDtype;

TEST(SyntheticVideo, IsDeterministicBySeedWithTheDocumentedShapes) {
  const runtime::VideoGrid grid{3, 5, 7};
  const std::vector<int> raster = runtime::token_order(runtime::TokenOrder::raster, grid, 0);
  const SyntheticVideo video(grid, 42), same(grid, 42), other(grid, 43);
  ASSERT_EQ(video.features().size(), 105u * 16);
  EXPECT_EQ(video.features(), same.features());
  EXPECT_NE(video.features(), other.features());
  for (int c = 0; c < video.channels(); ++c) {
    double squares = 0.0;
    for (int cell = 0; cell < 105; ++cell) squares += std::pow(video.features()[cell * 16 + c], 2);
    EXPECT_NEAR(std::sqrt(squares / 105), 1.0, 1e-4) << "channel " << c;
  }
  const SyntheticAttention a = video.attention(HeadMix::mixed, 4, 64, raster, HalfDtype::bf16);
  const SyntheticAttention b = same.attention(HeadMix::mixed, 4, 64, raster, HalfDtype::bf16);
  ASSERT_EQ(a.q.size(), 105u * 4 * 64);
  ASSERT_EQ(a.k.size(), a.q.size());
  ASSERT_EQ(a.v.size(), a.q.size());
  EXPECT_EQ(a.q, b.q);
  EXPECT_EQ(a.k, b.k);
  EXPECT_EQ(a.v, b.v);
  EXPECT_NE(a.q, other.attention(HeadMix::mixed, 4, 64, raster, HalfDtype::bf16).q);
  // The mixes share the heads' weights and differ by locality: V (no positional term) is the same.
  const SyntheticAttention local = video.attention(HeadMix::local, 4, 64, raster, HalfDtype::bf16);
  EXPECT_EQ(local.v, a.v);
  EXPECT_NE(local.q, a.q);
  EXPECT_THROW(video.attention(HeadMix::mixed, 4, 80, raster, HalfDtype::bf16), std::invalid_argument);
  EXPECT_THROW(video.attention(HeadMix::mixed, 4, 64, std::vector<int>(10), HalfDtype::bf16), std::invalid_argument);
  EXPECT_THROW(SyntheticVideo(runtime::VideoGrid{0, 5, 7}, 1), std::invalid_argument);
}

TEST(SyntheticVideo, AnOrderPermutesTheRasterTokensExactly) {
  const runtime::VideoGrid grid{5, 9, 11};
  const SyntheticVideo video(grid, 7);
  const std::vector<int> raster = runtime::token_order(runtime::TokenOrder::raster, grid, 0);
  const std::vector<int> hilbert = runtime::token_order(runtime::TokenOrder::hilbert, grid, 0);
  const int heads = 3, head_dim = 128;
  const SyntheticAttention in_raster = video.attention(HeadMix::local, heads, head_dim, raster, HalfDtype::fp16);
  const SyntheticAttention in_hilbert = video.attention(HeadMix::local, heads, head_dim, hilbert, HalfDtype::fp16);
  const std::size_t row = static_cast<std::size_t>(heads) * head_dim;
  for (std::size_t i = 0; i < hilbert.size(); ++i)
    for (const auto& [ordered, plain] : {std::pair{&in_hilbert.q, &in_raster.q}, std::pair{&in_hilbert.k, &in_raster.k},
                                         std::pair{&in_hilbert.v, &in_raster.v}})
      ASSERT_TRUE(std::equal(ordered->begin() + i * row, ordered->begin() + (i + 1) * row,
                             plain->begin() + hilbert[i] * row))
          << "token " << i;
}

TEST(SyntheticVideo, RotarySplitsAsWanAndDependsOnRelativePosition) {
  EXPECT_EQ(rotary_split(128), (std::array<int, 3>{44, 42, 42}));
  EXPECT_EQ(rotary_split(96), (std::array<int, 3>{32, 32, 32}));
  EXPECT_EQ(rotary_split(64), (std::array<int, 3>{24, 20, 20}));
  std::mt19937_64 generator(3);
  std::normal_distribution<float> normal;
  std::vector<float> a(128), b(128);
  for (float& value : a) value = normal(generator);
  for (float& value : b) value = normal(generator);
  const auto rotated = [](std::vector<float> vector, int t, int y, int x) {
    apply_rotary(vector, t, y, x);
    return vector;
  };
  const auto dot = [](const std::vector<float>& x, const std::vector<float>& y) {
    return std::inner_product(x.begin(), x.end(), y.begin(), 0.0);
  };
  // Rotations keep the norm; the product of two rotated vectors depends on the offset only.
  EXPECT_NEAR(dot(rotated(a, 3, 7, 11), rotated(a, 3, 7, 11)), dot(a, a), 1e-3);
  EXPECT_NEAR(dot(rotated(a, 2, 5, 9), rotated(b, 4, 1, 3)), dot(rotated(a, 7, 6, 40), rotated(b, 9, 2, 34)), 1e-3);
  // Each axis turns only its own part: t dims 0..43, h 44..85, w 86..127.
  const std::vector<float> base = rotated(a, 1, 1, 1);
  const auto changed_dims = [&](const std::vector<float>& other) {
    std::vector<int> dims;
    for (int d = 0; d < 128; ++d)
      if (std::abs(other[d] - base[d]) > 1e-6f) dims.push_back(d);
    return dims;
  };
  for (const auto& [moved, first, last] : {std::tuple{rotated(a, 2, 1, 1), 0, 43}, std::tuple{rotated(a, 1, 2, 1), 44, 85},
                                           std::tuple{rotated(a, 1, 1, 2), 86, 127}}) {
    const std::vector<int> dims = changed_dims(moved);
    ASSERT_FALSE(dims.empty());
    EXPECT_GE(dims.front(), first);
    EXPECT_LE(dims.back(), last);
  }
}

// The softmax mass a head puts on keys within one cell (in each axis) of the query, averaged
// over queries, in float64 from the generated 16-bit values.
double neighbour_mass(const SyntheticAttention& a, const runtime::VideoGrid& grid, int heads, int head_dim, int head) {
  const int tokens = static_cast<int>(grid.cells());
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  const auto value = [&](const std::vector<std::uint16_t>& tensor, int token, int d) {
    return static_cast<double>(templates::half_bits_to_float(
        tensor[(static_cast<std::size_t>(token) * heads + head) * head_dim + d], HalfDtype::bf16));
  };
  double total = 0.0;
  std::vector<double> logits(static_cast<std::size_t>(tokens));
  for (int i = 0; i < tokens; ++i) {
    double maximum = -1e300;
    for (int j = 0; j < tokens; ++j) {
      double dot = 0.0;
      for (int d = 0; d < head_dim; ++d) dot += value(a.q, i, d) * value(a.k, j, d);
      logits[j] = dot * scale;
      maximum = std::max(maximum, logits[j]);
    }
    double sum = 0.0, near = 0.0;
    const int ti = i / (grid.height * grid.width), yi = i / grid.width % grid.height, xi = i % grid.width;
    for (int j = 0; j < tokens; ++j) {
      const double p = std::exp(logits[j] - maximum);
      sum += p;
      const int tj = j / (grid.height * grid.width), yj = j / grid.width % grid.height, xj = j % grid.width;
      if (std::abs(ti - tj) <= 1 && std::abs(yi - yj) <= 1 && std::abs(xi - xj) <= 1) near += p;
    }
    total += near / sum;
  }
  return total / tokens;
}

TEST(SyntheticVideo, LocalHeadsAttendToTheirNeighboursFarMoreThanDiffuseOnes) {
  const runtime::VideoGrid grid{5, 10, 14};
  const int heads = 6, head_dim = 64;
  const SyntheticVideo video(grid, 11);
  const SyntheticAttention a =
      video.attention(HeadMix::mixed, heads, head_dim, runtime::token_order(runtime::TokenOrder::raster, grid, 0),
                      HalfDtype::bf16);
  EXPECT_LT(a.locality.front(), 0.1);
  EXPECT_GT(a.locality.back(), 0.9);
  const double diffuse = neighbour_mass(a, grid, heads, head_dim, 0);
  const double local = neighbour_mass(a, grid, heads, head_dim, heads - 1);
  EXPECT_GT(local, 2.0 * diffuse) << "neighbour mass: diffuse head " << diffuse << ", local head " << local;
  // The mixes: mostly diffuse < mixed < mostly local, on average.
  const auto mean = [](const std::vector<double>& values) {
    return std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
  };
  EXPECT_LT(mean(head_localities(HeadMix::diffuse, 12)), 0.3);
  EXPECT_NEAR(mean(head_localities(HeadMix::mixed, 12)), 0.5, 1e-12);
  EXPECT_GT(mean(head_localities(HeadMix::local, 12)), 0.7);
}

}  // namespace
}  // namespace sparsejit::tools
