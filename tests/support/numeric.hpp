// Random test inputs and the relative-error measure the numeric tests compare with.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "loco/backend/backend.hpp"
#include "support/catch.hpp"

namespace loco::testing {

// Seeded uniform values and token ids; Real is float or double (the draws differ).
template <typename Real>
class Random {
 public:
  explicit Random(uint64_t seed) : engine_(seed) {}
  std::vector<Real> uniform(size_t n, Real lo = Real(-1), Real hi = Real(1)) {
    std::uniform_real_distribution<Real> dist(lo, hi);
    std::vector<Real> v(n);
    for (Real& x : v) x = dist(engine_);
    return v;
  }
  std::vector<int32_t> ids(size_t n, int limit) {
    std::uniform_int_distribution<int32_t> dist(0, limit - 1);
    std::vector<int32_t> v(n);
    for (int32_t& x : v) x = dist(engine_);
    return v;
  }

 private:
  std::mt19937_64 engine_;
};

// max_i |actual_i − expected_i| / max_i |expected_i|, infinite if actual has a NaN or Inf:
// scale-free and sensitive to any single wrong element of non-negligible size.
template <typename A, typename E>
double max_relative_error(const std::vector<A>& actual, const std::vector<E>& expected) {
  REQUIRE(actual.size() == expected.size());
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    // std::max would silently skip a NaN (every comparison with it is false).
    if (!std::isfinite(double(actual[i]))) return std::numeric_limits<double>::infinity();
    max_diff = std::max(max_diff, std::abs(double(actual[i]) - double(expected[i])));
    max_ref = std::max(max_ref, std::abs(double(expected[i])));
  }
  return max_diff / std::max(max_ref, std::numeric_limits<double>::min());
}

// Identical bit patterns (so NaNs of the same payload compare equal and -0 differs from 0).
inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// An F32 buffer's contents on the host.
inline std::vector<float> download_floats(Backend& backend, Buf buf) {
  std::vector<float> host(buf.numel);
  backend.download(host.data(), buf);
  return host;
}

}  // namespace loco::testing
