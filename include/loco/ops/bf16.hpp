// bfloat16 <-> float conversion on the host. bf16 is the upper half of an IEEE float, so
// widening is a shift; narrowing rounds to nearest, ties to even, exactly as the GPU does
// (__float2bfloat16_rn), so data produced on the CPU matches data produced on the device.
#pragma once
#include <bit>
#include <cstddef>
#include <cstdint>

namespace loco::ops {

inline uint16_t float_to_bf16_bits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const bool is_nan = (bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0;
  if (is_nan) {
    // Truncation could clear every remaining mantissa bit and turn NaN into Inf: force the
    // quiet bit instead (the sign is kept).
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  // Adding 0x7FFF rounds the dropped half up when it is above one half; adding the kept
  // LSB on top breaks exact ties towards an even result. Overflow carries into the exponent
  // and correctly produces Inf for values beyond the largest bf16.
  const uint32_t lsb_of_kept_half = (bits >> 16) & 1u;
  return static_cast<uint16_t>((bits + 0x7FFFu + lsb_of_kept_half) >> 16);
}

inline float bf16_bits_to_float(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

inline void convert_f32_to_bf16(uint16_t* dst, const float* src, size_t n) {
#pragma omp parallel for if (n > (size_t{1} << 15))
  for (size_t i = 0; i < n; ++i) dst[i] = float_to_bf16_bits(src[i]);
}

inline void convert_bf16_to_f32(float* dst, const uint16_t* src, size_t n) {
#pragma omp parallel for if (n > (size_t{1} << 15))
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_float(src[i]);
}

}  // namespace loco::ops
