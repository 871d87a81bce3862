#pragma once
// The 16-bit element types (bf16, fp16) on the host, for every family: exact conversions
// to and from float (round to nearest even), random inputs, and the error measure of the
// correctness gates.
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <random>
#include <span>
#include <string_view>
#include <vector>

namespace sparsejit::templates {

// A 16-bit floating-point element type (of Q, K, V and O in sparse_attention).
enum class HalfDtype { bf16, fp16 };

std::string_view to_string(HalfDtype dtype);  // "bf16", "fp16"
std::ostream& operator<<(std::ostream& out, HalfDtype dtype);  // to_string (GoogleTest prints it)

// The value of a 16-bit pattern, exactly (every bf16 and fp16 value is a float): signed
// zeros, fp16 subnormals, infinities and NaN (payload kept) included.
float half_bits_to_float(std::uint16_t bits, HalfDtype dtype);

// `value` rounded to the nearest bf16 / fp16, ties to even, as the GPU's __float2bfloat16 /
// __float2half do: overflow gives +-inf (fp16: |value| >= 65520), tiny values give fp16
// subnormals or a signed zero, NaN stays a (quiet) NaN.
std::uint16_t float_to_half_bits(float value, HalfDtype dtype);

// `count` values normal(0, 1) * scale rounded to `dtype`, none of them zero or infinite
// (such draws are drawn again). Throws std::invalid_argument if scale is not finite and
// positive, or so small or large that `dtype` cannot hold its draws.
std::vector<std::uint16_t> random_half(std::size_t count, HalfDtype dtype,
                                       std::mt19937_64& generator, float scale = 1.0f);

// ||actual - reference||_2 / ||reference||_2 over equal-length spans. NaN if any element of
// either span is NaN, so an unwritten (NaN-poisoned) output fails every `error <= bound`.
// Pairs that are equal (matching infinities included, e.g. the -inf LSE of empty rows)
// contribute nothing; an infinite reference paired with anything else gives +inf. With a
// zero reference norm: 0 if the difference is 0 too, else +inf. Throws
// std::invalid_argument if the lengths differ.
double relative_l2_error(std::span<const double> actual, std::span<const double> reference);

}  // namespace sparsejit::templates
