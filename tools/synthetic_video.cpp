#include "tools/synthetic_video.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>

namespace sparsejit::tools {
namespace {

constexpr double kTwoPi = 6.283185307179586;
constexpr int kWavesPerChannel = 4;
constexpr double kKeyQueryCorrelation = 0.7;  // W_k = 0.7 W_q + sqrt(1 - 0.49) W'
constexpr double kMaxPositionalLogit = 8.0;   // the peak positional logit of a head of locality 1
constexpr double kRotaryTheta = 10000.0;
// The positional term lives on the rotary pairs that turn by at least this many radians per
// cell (wavelengths up to ~63 cells), which tell positions on the grid apart.
constexpr double kPositionalMinFrequency = 0.1;

double rotary_frequency(int part_dims, int pair) { return std::pow(kRotaryTheta, -2.0 * pair / part_dims); }

// cos and sin of every pair of one rotary part (dims / 2 pairs) at positions 0..positions-1:
// [position][pair].
struct RotaryTable {
  int pairs = 0;
  std::vector<float> cosine, sine;
  RotaryTable(int dims, int positions) : pairs(dims / 2) {
    cosine.resize(static_cast<std::size_t>(positions) * pairs);
    sine.resize(cosine.size());
    for (int position = 0; position < positions; ++position)
      for (int i = 0; i < pairs; ++i) {
        const double angle = position * rotary_frequency(dims, i);
        cosine[static_cast<std::size_t>(position) * pairs + i] = static_cast<float>(std::cos(angle));
        sine[static_cast<std::size_t>(position) * pairs + i] = static_cast<float>(std::sin(angle));
      }
  }
  // Rotates the consecutive pairs of `part` (2 * pairs values) for `position`.
  void rotate(float* part, int position) const {
    const float* c = &cosine[static_cast<std::size_t>(position) * pairs];
    const float* s = &sine[static_cast<std::size_t>(position) * pairs];
    for (int i = 0; i < pairs; ++i) {
      const float even = part[2 * i], odd = part[2 * i + 1];
      part[2 * i] = even * c[i] - odd * s[i];
      part[2 * i + 1] = even * s[i] + odd * c[i];
    }
  }
};

// The three parts' tables for positions up to the grid's sizes.
struct RotaryTables {
  std::array<int, 3> split;
  RotaryTable t, h, w;
  RotaryTables(int head_dim, int frames, int height, int width)
      : split(rotary_split(head_dim)), t(split[0], frames), h(split[1], height), w(split[2], width) {}
  void rotate(float* vector, int frame, int y, int x) const {
    t.rotate(vector, frame);
    h.rotate(vector + split[0], y);
    w.rotate(vector + split[0] + split[1], x);
  }
};

void check_head_dim(int head_dim) {
  if (head_dim != 64 && head_dim != 96 && head_dim != 128)
    throw std::invalid_argument("synthetic video: head dim " + std::to_string(head_dim) + " is not 64, 96 or 128");
}

}  // namespace

std::string_view to_string(HeadMix mix) {
  switch (mix) {
    case HeadMix::diffuse: return "mostly diffuse";
    case HeadMix::mixed: return "mixed";
    case HeadMix::local: return "mostly local";
  }
  return "?";
}

std::array<int, 3> rotary_split(int head_dim) {
  const int part = 2 * (head_dim / 6);
  return {head_dim - 2 * part, part, part};
}

void apply_rotary(std::span<float> vector, int t, int y, int x) {
  check_head_dim(static_cast<int>(vector.size()));
  const RotaryTables tables(static_cast<int>(vector.size()), t + 1, y + 1, x + 1);
  tables.rotate(vector.data(), t, y, x);
}

std::vector<double> head_localities(HeadMix mix, int heads) {
  if (heads < 1) throw std::invalid_argument("synthetic video: heads must be positive");
  std::vector<double> localities(static_cast<std::size_t>(heads));
  for (int h = 0; h < heads; ++h) {
    const double base = (h + 0.5) / heads;
    localities[static_cast<std::size_t>(h)] =
        mix == HeadMix::diffuse ? base * base * base : mix == HeadMix::local ? std::cbrt(base) : base;
  }
  return localities;
}

SyntheticVideo::SyntheticVideo(const runtime::VideoGrid& grid, std::uint64_t seed, int channels, int objects)
    : grid_(grid), seed_(seed), channels_(channels) {
  if (grid.frames < 1 || grid.height < 1 || grid.width < 1)
    throw std::invalid_argument("synthetic video: the grid " + grid.to_string() + " has a non-positive size");
  if (channels < 1 || objects < 1) throw std::invalid_argument("synthetic video: channels and objects must be positive");
  std::mt19937_64 generator(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const auto between = [&](double low, double high) { return low + (high - low) * uniform(generator); };

  struct Wave {
    double kx, ky, phase, drift;  // cycles per frame width / height, radians, radians per frame
  };
  std::vector<Wave> waves(static_cast<std::size_t>(channels) * kWavesPerChannel);
  for (Wave& wave : waves) {
    const double direction = between(0.0, kTwoPi), cycles = between(0.5, 3.0);
    wave = {cycles * std::cos(direction), cycles * std::sin(direction), between(0.0, kTwoPi), between(-0.3, 0.3)};
  }
  // Objects, in units of the frame height: centre, velocity per frame, radius, features.
  const double aspect = static_cast<double>(grid.width) / grid.height;
  struct Object {
    double x, y, vx, vy, radius;
    std::vector<double> feature;
  };
  std::vector<Object> blobs(static_cast<std::size_t>(objects));
  for (Object& blob : blobs) {
    const double direction = between(0.0, kTwoPi), speed = between(0.0, 0.02);
    blob = {between(0.15, 0.85) * aspect, between(0.15, 0.85), speed * std::cos(direction),
            speed * std::sin(direction), between(0.08, 0.2), std::vector<double>(static_cast<std::size_t>(channels))};
    for (double& value : blob.feature) value = 1.5 * normal(generator);
  }

  const auto cells = static_cast<std::size_t>(grid.cells());
  const auto C = static_cast<std::size_t>(channels);
  features_.resize(cells * C);
  std::vector<double> squares(C, 0.0);
  for (int t = 0; t < grid.frames; ++t)
    for (int y = 0; y < grid.height; ++y)
      for (int x = 0; x < grid.width; ++x) {
        const double u = (x + 0.5) / grid.width, v = (y + 0.5) / grid.height;
        const double px = (x + 0.5) / grid.height, py = v;  // in frame heights
        std::vector<double> weights(blobs.size());
        for (std::size_t o = 0; o < blobs.size(); ++o) {
          const Object& blob = blobs[o];
          const double dx = px - (blob.x + blob.vx * t), dy = py - (blob.y + blob.vy * t);
          weights[o] = std::exp(-(dx * dx + dy * dy) / (2 * blob.radius * blob.radius));
        }
        float* cell = &features_[((static_cast<std::size_t>(t) * grid.height + y) * grid.width + x) * C];
        for (std::size_t c = 0; c < C; ++c) {
          double value = 0.0;
          for (int m = 0; m < kWavesPerChannel; ++m) {
            const Wave& wave = waves[c * kWavesPerChannel + m];
            value += std::sin(kTwoPi * (wave.kx * u + wave.ky * v) + wave.phase + wave.drift * t) / std::sqrt(2.0);
          }
          for (std::size_t o = 0; o < blobs.size(); ++o) value += weights[o] * blobs[o].feature[c];
          value += 0.3 * normal(generator);
          cell[c] = static_cast<float>(value);
          squares[c] += value * value;
        }
      }
  for (std::size_t c = 0; c < C; ++c) {
    const auto scale = static_cast<float>(1.0 / std::sqrt(squares[c] / static_cast<double>(cells)));
    for (std::size_t cell = 0; cell < cells; ++cell) features_[cell * C + c] *= scale;
  }
}

SyntheticAttention SyntheticVideo::attention(HeadMix mix, int heads, int head_dim, std::span<const int> order,
                                             templates::HalfDtype dtype) const {
  check_head_dim(head_dim);
  const auto cells = static_cast<std::size_t>(grid_.cells());
  if (order.size() != cells)
    throw std::invalid_argument("synthetic video: an order of " + std::to_string(order.size()) + " tokens for " +
                                std::to_string(cells) + " cells");
  SyntheticAttention result;
  result.locality = head_localities(mix, heads);
  const auto D = static_cast<std::size_t>(head_dim), C = static_cast<std::size_t>(channels_);
  const auto H = static_cast<std::size_t>(heads);
  result.q.resize(cells * H * D);
  result.k.resize(result.q.size());
  result.v.resize(result.q.size());
  const RotaryTables rotary(head_dim, grid_.frames, grid_.height, grid_.width);

  const auto generate_head = [&](std::size_t h) {
    // The head's weights depend on the seed and the head only: the mixes differ by locality.
    std::mt19937_64 generator(seed_ ^ (0x9E3779B97F4A7C15ull * (h + 1)));
    std::normal_distribution<float> normal(0.f, 1.f);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    std::vector<float> w_q(D * C), w_k(D * C), w_v(D * C), position(D);
    for (float& value : w_q) value = normal(generator);
    for (std::size_t i = 0; i < w_k.size(); ++i)
      w_k[i] = static_cast<float>(kKeyQueryCorrelation * w_q[i] +
                                  std::sqrt(1 - kKeyQueryCorrelation * kKeyQueryCorrelation) * normal(generator));
    for (float& value : w_v) value = normal(generator);
    for (float& value : position) value = normal(generator);
    // Only the fast pairs of each axis' part keep it, rescaled so that |u|^2 stays about D.
    {
      std::size_t first = 0, kept = 0;
      for (int part : rotary.split) {
        for (int pair = 0; pair < part / 2; ++pair) {
          const bool fast = rotary_frequency(part, pair) >= kPositionalMinFrequency;
          kept += fast ? 2 : 0;
          if (!fast) position[first + 2 * pair] = position[first + 2 * pair + 1] = 0.f;
        }
        first += static_cast<std::size_t>(part);
      }
      const auto rescale = static_cast<float>(std::sqrt(static_cast<double>(D) / static_cast<double>(kept)));
      for (float& value : position) value *= rescale;
    }
    const double content_logit = 1.5 + 1.5 * uniform(generator);
    const double sqrt_d = std::sqrt(static_cast<double>(head_dim));
    const auto content_scale =
        static_cast<float>(std::sqrt(content_logit / (kKeyQueryCorrelation * sqrt_d)) / std::sqrt(double(C)));
    const auto positional_scale = static_cast<float>(std::sqrt(kMaxPositionalLogit * result.locality[h] / sqrt_d));
    const auto value_scale = static_cast<float>(1.0 / std::sqrt(double(C)));

    std::vector<float> q(D), k(D);
    for (std::size_t i = 0; i < cells; ++i) {
      const int cell = order[i];
      const int t = cell / (grid_.height * grid_.width), y = cell / grid_.width % grid_.height,
                x = cell % grid_.width;
      const float* f = &features_[static_cast<std::size_t>(cell) * C];
      const std::size_t out = (i * H + h) * D;
      for (std::size_t d = 0; d < D; ++d) {
        float dot_q = 0.f, dot_k = 0.f, dot_v = 0.f;
        for (std::size_t c = 0; c < C; ++c) {
          dot_q += w_q[d * C + c] * f[c];
          dot_k += w_k[d * C + c] * f[c];
          dot_v += w_v[d * C + c] * f[c];
        }
        q[d] = content_scale * dot_q + positional_scale * position[d];
        k[d] = content_scale * dot_k + positional_scale * position[d];
        result.v[out + d] = templates::float_to_half_bits(value_scale * dot_v, dtype);
      }
      rotary.rotate(q.data(), t, y, x);
      rotary.rotate(k.data(), t, y, x);
      for (std::size_t d = 0; d < D; ++d) {
        result.q[out + d] = templates::float_to_half_bits(q[d], dtype);
        result.k[out + d] = templates::float_to_half_bits(k[d], dtype);
      }
    }
  };
  std::atomic<std::size_t> next{0};
  const unsigned workers = std::max(1u, std::min(std::thread::hardware_concurrency(), static_cast<unsigned>(heads)));
  std::vector<std::thread> threads;
  for (unsigned w = 0; w < workers; ++w)
    threads.emplace_back([&] {
      for (std::size_t h = next++; h < H; h = next++) generate_head(h);
    });
  for (std::thread& thread : threads) thread.join();
  return result;
}

}  // namespace sparsejit::tools
