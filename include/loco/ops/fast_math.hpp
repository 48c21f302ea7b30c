// Small building blocks that let the hot loops of the CPU ops vectorise without
// -ffast-math, while keeping every result independent of the thread count:
//  - exp of a float as straight-line arithmetic (no library call), so loops over it become
//    SIMD code; doubles (the gradient-check instantiations) keep std::exp;
//  - sums and maxima with a fixed association (eight interleaved partial results combined in
//    a fixed tree), which the compiler can map onto vector registers of any width with the
//    same bits.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace loco::ops::detail {

// e^x for float with a relative error of about 1.5 ulp (Cephes expf: Cody–Waite reduction by
// ln 2, degree-5 polynomial, exponent built in the bits). Below x = -86.6 the result is 0
// (e^x < 2.5e-38, where std::exp returns a denormal); above ln(FLT_MAX) it is +inf; NaN
// propagates.
//
// Every step is branch-free: the final select only picks between the computed value and
// constants. (A clamp of x feeding the float arithmetic makes GCC's if-conversion refuse with
// "could trap", and the loop using it stays scalar.)
inline float exp_approx(float x) {
  constexpr float kLo = -86.6f, kHi = 88.72283f;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5·2^23: adding and subtracting it rounds
  // t = kRound + n with n the nearest integer to x/ln 2; n also sits in t's low bits.
  const float t = x * kLog2e + kRound;
  const float n = t - kRound;
  const int32_t n_int = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kRound);
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;  // |r| <= ln2/2
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  // y · 2^n as (2y) · 2^(n-1): n reaches 128 just below ln(FLT_MAX), n - 1 >= -126 in range.
  const float value = (y + y) * std::bit_cast<float>((n_int + 126) << 23);
  // Out of range: 0 below, +inf above, as bit masks (NaN compares false and passes through).
  const uint32_t below = 0u - static_cast<uint32_t>(x < kLo);
  const uint32_t above = 0u - static_cast<uint32_t>(x > kHi);
  const uint32_t bits = std::bit_cast<uint32_t>(value) & ~below & ~above;
  return std::bit_cast<float>(bits | (above & 0x7F800000u));
}

template <typename Real>
inline Real fast_exp(Real x) {
  if constexpr (std::is_same_v<Real, float>)
    return exp_approx(x);
  else
    return std::exp(x);
}

// Σ x[0..n), as eight interleaved partial sums added in a fixed tree, then the tail.
template <typename Real>
inline Real sum_fixed(const Real* x, int n) {
  Real acc[8] = {};
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int u = 0; u < 8; ++u) acc[u] += x[j + u];
  Real total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; j < n; ++j) total += x[j];
  return total;
}

// max x[0..n) (n >= 1), any NaN-free order gives the same value.
template <typename Real>
inline Real max_fixed(const Real* x, int n) {
  Real acc[8];
  for (int u = 0; u < 8; ++u) acc[u] = x[0];
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int u = 0; u < 8; ++u) acc[u] = acc[u] < x[j + u] ? x[j + u] : acc[u];
  Real m = acc[0];
  for (int u = 1; u < 8; ++u) m = m < acc[u] ? acc[u] : m;
  for (; j < n; ++j) m = m < x[j] ? x[j] : m;
  return m;
}

// Σ a[i]·b[i] with the association of sum_fixed.
template <typename Real>
inline Real dot_fixed(const Real* a, const Real* b, int n) {
  Real acc[8] = {};
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[j + u] * b[j + u];
  Real total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; j < n; ++j) total += a[j] * b[j];
  return total;
}

}  // namespace loco::ops::detail
