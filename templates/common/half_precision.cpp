#include "templates/common/half_precision.h"

#include <bit>
#include <cmath>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>

namespace sparsejit::templates {
namespace {

float bf16_to_float(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

std::uint16_t float_to_bf16(float value) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  // NaN: keep the sign and the top of the payload, and force it quiet (a truncated
  // signalling NaN could otherwise turn into infinity).
  if (std::isnan(value)) return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
  // Round to nearest even on the 16 dropped bits; a carry into the exponent is right, and
  // values at or past the top round to infinity.
  const std::uint32_t rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

// fp16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
float fp16_to_float(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1Fu;
  const std::uint32_t mantissa = bits & 0x3FFu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exponent == 0x1F)  // infinity (mantissa 0) or NaN (payload kept)
    return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13));
}

std::uint16_t float_to_fp16(float value) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u)  // NaN: quiet, top of the payload kept
    return static_cast<std::uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
  // 65520 (0x477FF000) is halfway between 65504, the largest fp16, and 65536; the tie goes
  // to the even neighbour, which is infinity. Infinity itself lands here too.
  if (magnitude >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);
  if (magnitude < 0x38800000u) {
    // Below 2^-14, the smallest normal: a subnormal m * 2^-24. Scaling by 2^24 is exact and
    // nearbyint rounds to nearest even (the default rounding mode); m == 1024 is the
    // encoding of 2^-14, so rounding up into the normals needs no special case.
    const float scaled = std::bit_cast<float>(magnitude) * 16777216.0f;
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(std::nearbyint(scaled)));
  }
  // Normal: rebias the exponent (127 -> 15), round the 13 dropped mantissa bits to nearest
  // even; a carry into the exponent is right and cannot reach infinity (checked above).
  const std::uint32_t rebiased = magnitude - ((127u - 15u) << 23);
  const std::uint32_t rounded = rebiased + 0x0FFFu + ((rebiased >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | (rounded >> 13));
}

}  // namespace

std::string_view to_string(HalfDtype dtype) {
  return dtype == HalfDtype::bf16 ? "bf16" : "fp16";
}

std::ostream& operator<<(std::ostream& out, HalfDtype dtype) { return out << to_string(dtype); }

float half_bits_to_float(std::uint16_t bits, HalfDtype dtype) {
  return dtype == HalfDtype::bf16 ? bf16_to_float(bits) : fp16_to_float(bits);
}

std::uint16_t float_to_half_bits(float value, HalfDtype dtype) {
  return dtype == HalfDtype::bf16 ? float_to_bf16(value) : float_to_fp16(value);
}

std::vector<std::uint16_t> random_half(std::size_t count, HalfDtype dtype,
                                       std::mt19937_64& generator, float scale) {
  if (!std::isfinite(scale) || !(scale > 0.0f))
    throw std::invalid_argument("random_half: scale " + std::to_string(scale) +
                                " must be finite and positive");
  // Draws that round to zero or overflow are drawn again; after this many in a row the
  // scale is hopeless for the dtype (a normal draw is within 6 sigma almost always).
  constexpr int kMaxRedraws = 1000;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::uint16_t> values(count);
  for (std::uint16_t& value : values) {
    for (int attempt = 0;; ++attempt) {
      if (attempt == kMaxRedraws)
        throw std::invalid_argument("random_half: scale " + std::to_string(scale) +
                                    " gives only zeros or infinities in " +
                                    std::string(to_string(dtype)));
      value = float_to_half_bits(normal(generator) * scale, dtype);
      const float decoded = half_bits_to_float(value, dtype);
      if (decoded != 0.0f && std::isfinite(decoded)) break;
    }
  }
  return values;
}

double relative_l2_error(std::span<const double> actual, std::span<const double> reference) {
  if (actual.size() != reference.size())
    throw std::invalid_argument("relative_l2_error: actual has " + std::to_string(actual.size()) +
                                " elements, reference " + std::to_string(reference.size()));
  double difference_squares = 0.0, reference_squares = 0.0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    if (std::isnan(actual[i]) || std::isnan(reference[i]))
      return std::numeric_limits<double>::quiet_NaN();
    if (actual[i] == reference[i] && std::isinf(reference[i])) continue;
    if (std::isinf(reference[i])) return std::numeric_limits<double>::infinity();
    const double difference = actual[i] - reference[i];
    difference_squares += difference * difference;
    reference_squares += reference[i] * reference[i];
  }
  if (reference_squares == 0.0)
    return difference_squares == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(difference_squares / reference_squares);
}

}  // namespace sparsejit::templates
