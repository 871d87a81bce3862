#pragma once
// Video-like synthetic Q, K, V for measuring mask quality (`sparsejit bench mask --quality`):
// a stand-in for the attention inputs of a video diffusion transformer (Wan2.1) on an
// F x H x W latent grid, deterministic by seed. It exists to resemble real models; it is not
// tuned toward any quality figure.
//
// Latent features, per cell (t, y, x) of the grid, `channels` of them (Wan's VAE has 16):
//  - a spatially smooth background: per channel 4 plane waves of 0.5..3 cycles per frame
//    across the frame (random directions and phases), whose phase drifts by up to 0.3
//    radians per frame (slow global motion);
//  - moving content regions: `objects` Gaussian blobs, each with a centre that starts in the
//    middle 70% of the frame and moves linearly by up to 2% of the frame height per frame, a
//    radius of 8..20% of the frame height and its own feature vector N(0, 1.5^2) per
//    channel, added with weight exp(-d^2 / 2r^2);
//  - texture: N(0, 0.3^2) per cell and channel;
// then scaled so that every channel has unit RMS over the grid.
//
// Heads, for head dim D (64, 96 or 128), each with a locality lambda in [0, 1]:
//  - content term: q_c = a W_q f / sqrt(C), k_c = a W_k f / sqrt(C), with W_q, W_k, W_v
//    [D, C] N(0, 1) per head and W_k = 0.7 W_q + sqrt(1 - 0.7^2) W' (queries find keys of
//    similar content); a is set so that a token's own content logit, a^2 0.7 sqrt(D), is a
//    per-head draw in [1.5, 3];
//  - positional term: one vector b u per head added to both q and k, so that after the
//    rotary encoding their product depends on the relative position only and peaks at
//    distance 0. u is N(0, 1) on the rotary pairs that turn by at least 0.1 radian per cell
//    (wavelengths up to ~63 cells, 6 of each axis' 21-22 pairs at D = 128) and 0 on the
//    slower ones, rescaled to |u|^2 = D: trained RoPE models build positional heads from the
//    fast pairs and keep the slow ones for content (Barbero et al., "Round and Round We Go!
//    What makes Rotary Positional Encodings useful?", 2024). b is set so that the peak
//    logit b^2 sqrt(D) is 8 lambda;
//  - q = rope(q_c + b u), k = rope(k_c + b u) with Wan's 3D rotary encoding (rotary_split:
//    44/42/42 of D = 128 over t/h/w, theta 10000, consecutive pairs rotated); v = W_v f / sqrt(C).
// lambda = 0 gives a diffuse, content-only head; lambda = 1 a sharply local one. Head h of H
// has base locality (h + 0.5) / H, so heads run from diffuse to local; the mixes reshape it:
// mostly diffuse base^3, mixed base, mostly local base^(1/3).
#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "runtime/token_order.h"
#include "templates/common/half_precision.h"

namespace sparsejit::tools {

enum class HeadMix { diffuse, mixed, local };
inline constexpr std::array<HeadMix, 3> kHeadMixes = {HeadMix::diffuse, HeadMix::mixed, HeadMix::local};
std::string_view to_string(HeadMix mix);  // "mostly diffuse", "mixed", "mostly local"

// Wan's split of the head dim over the rotary axes (t, h, w): D - 4 floor(D / 6), then
// 2 floor(D / 6) twice: 44/42/42 for D = 128, 24/20/20 for D = 64.
std::array<int, 3> rotary_split(int head_dim);

// Rotates `vector` (head_dim values) in place by the 3D rotary encoding of position
// (t, y, x): the dims of each axis' part (in the order t, h, w) are consecutive pairs
// (2i, 2i + 1), pair i of a part of d dims turned by position * 10000^(-2i / d).
void apply_rotary(std::span<float> vector, int t, int y, int x);

// The locality lambda of each of `heads` heads in `mix`, ascending (see the top of the file).
std::vector<double> head_localities(HeadMix mix, int heads);

struct SyntheticAttention {
  // [tokens, heads, head_dim] 16-bit patterns (the models' [B, N, H, D] with B = 1), token i
  // at grid cell order[i].
  std::vector<std::uint16_t> q, k, v;
  std::vector<double> locality;  // per head
};

class SyntheticVideo {
 public:
  // Throws std::invalid_argument for a grid with a non-positive size, channels or objects < 1.
  SyntheticVideo(const runtime::VideoGrid& grid, std::uint64_t seed, int channels = 16, int objects = 6);

  const runtime::VideoGrid& grid() const { return grid_; }
  int channels() const { return channels_; }
  // [cells, channels], raster order (cell (t, y, x) at (t * H + y) * W + x).
  const std::vector<float>& features() const { return features_; }

  // Q, K, V of `heads` heads in `mix` with tokens in `order` (a permutation of the cells, as
  // runtime::token_order gives). Heads are generated on all hardware threads; the result does
  // not depend on their number. Throws std::invalid_argument for a head dim other than 64,
  // 96, 128, heads < 1, or an order that is not of the grid's size.
  SyntheticAttention attention(HeadMix mix, int heads, int head_dim, std::span<const int> order,
                               templates::HalfDtype dtype) const;

 private:
  runtime::VideoGrid grid_;
  std::uint64_t seed_;
  int channels_;
  std::vector<float> features_;
};

}  // namespace sparsejit::tools
