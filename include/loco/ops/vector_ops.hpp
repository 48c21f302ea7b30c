// Elementwise and reduction ops on flat vectors: the residual add on activations, and the
// ops that optimizers, gradient clipping and the outer sync run on F32 master buffers.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "loco/ops/cpu_isa.hpp"

namespace loco::ops {

namespace detail {

template <typename Real>
void add_range(Real* out, const Real* a, const Real* b, size_t begin, size_t end) {
  for (size_t i = begin; i < end; ++i) out[i] = a[i] + b[i];
}

// Σ x² over [begin, end) in double, eight interleaved partial sums in a fixed tree.
template <typename Real>
void sum_squares_range(double* result, const Real* x, size_t begin, size_t end) {
  double acc[8] = {};
  size_t i = begin;
  for (; i + 8 <= end; i += 8)
    for (int u = 0; u < 8; ++u) acc[u] += static_cast<double>(x[i + u]) * x[i + u];
  double sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < end; ++i) sum += static_cast<double>(x[i]) * x[i];
  *result = sum;
}

LOCO_ISA_CLONES(add_range)
LOCO_ISA_CLONES(sum_squares_range)

}  // namespace detail

// out = a + b; out may alias a or b.
template <typename Real>
void add(Real* out, const Real* a, const Real* b, size_t n) {
  for_chunks(n, kElementwiseChunk, [&](size_t begin, size_t end) {
    LOCO_ISA_CALL(detail::add_range, out, a, b, begin, end);
  });
}

// x *= s
template <typename Real>
void scale(Real* x, Real s, size_t n) {
  for_chunks(n, kElementwiseChunk, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) x[i] *= s;
  });
}

// y = a*x + b*y
template <typename Real>
void axpby(Real* y, Real a, const Real* x, Real b, size_t n) {
  for_chunks(n, kElementwiseChunk, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) y[i] = a * x[i] + b * y[i];
  });
}

// Σ x², accumulated in double. The vector is cut into fixed-size chunks (independent of the
// thread count) whose partial sums are added in order, so the result is bit-identical for
// any OMP_NUM_THREADS: gradient-norm clipping must not depend on the machine.
template <typename Real>
double sum_squares(const Real* x, size_t n) {
  constexpr size_t kChunk = size_t{1} << 16;
  const size_t num_chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(num_chunks, 0.0);
  for_chunks(n, kChunk, [&](size_t begin, size_t end) {
    LOCO_ISA_CALL(detail::sum_squares_range, &partial[begin / kChunk], x, begin, end);
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

// True when no element is NaN or ±Inf.
template <typename Real>
bool all_finite(const Real* x, size_t n) {
  bool finite = true;
#pragma omp parallel for reduction(&& : finite) if (n > kElementwiseChunk)
  for (size_t i = 0; i < n; ++i) finite = finite && std::isfinite(x[i]);
  return finite;
}

}  // namespace loco::ops
