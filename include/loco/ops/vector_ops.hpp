// Elementwise and reduction ops on flat vectors: the residual add on activations, and the
// ops that optimizers, gradient clipping and the outer sync run on F32 master buffers.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace loco::ops {

// out = a + b; out may alias a or b.
template <typename Real>
void add(Real* out, const Real* a, const Real* b, size_t n) {
#pragma omp parallel for
  for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

// x *= s
template <typename Real>
void scale(Real* x, Real s, size_t n) {
#pragma omp parallel for
  for (size_t i = 0; i < n; ++i) x[i] *= s;
}

// y = a*x + b*y
template <typename Real>
void axpby(Real* y, Real a, const Real* x, Real b, size_t n) {
#pragma omp parallel for
  for (size_t i = 0; i < n; ++i) y[i] = a * x[i] + b * y[i];
}

// Σ x², accumulated in double. The vector is cut into fixed-size chunks (independent of the
// thread count) whose partial sums are added in order, so the result is bit-identical for
// any OMP_NUM_THREADS: gradient-norm clipping must not depend on the machine.
template <typename Real>
double sum_squares(const Real* x, size_t n) {
  constexpr size_t kChunk = size_t{1} << 16;
  const size_t num_chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(num_chunks, 0.0);
#pragma omp parallel for
  for (size_t chunk = 0; chunk < num_chunks; ++chunk) {
    const size_t end = std::min(n, (chunk + 1) * kChunk);
    double sum = 0;
    for (size_t i = chunk * kChunk; i < end; ++i) sum += static_cast<double>(x[i]) * x[i];
    partial[chunk] = sum;
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

// True when no element is NaN or ±Inf.
template <typename Real>
bool all_finite(const Real* x, size_t n) {
  bool finite = true;
#pragma omp parallel for reduction(&& : finite)
  for (size_t i = 0; i < n; ++i) finite = finite && std::isfinite(x[i]);
  return finite;
}

}  // namespace loco::ops
