// SwiGLU gate of the Llama MLP: out = silu(gate) * up, silu(x) = x * sigmoid(x).
#pragma once
#include <cmath>
#include <cstddef>

namespace loco::ops {

namespace detail {
// 1/(1+e^-x): for very negative x, e^-x overflows to +inf and the result is a clean 0.
template <typename Real>
Real sigmoid(Real x) {
  return Real(1) / (Real(1) + std::exp(-x));
}
}  // namespace detail

// out, gate, up: (N,F) flattened to n elements.
template <typename Real>
void swiglu_forward(Real* out, const Real* gate, const Real* up, size_t n) {
#pragma omp parallel for
  for (size_t i = 0; i < n; ++i) out[i] = gate[i] * detail::sigmoid(gate[i]) * up[i];
}

// dgate, dup overwritten. silu'(x) = sig(x) * (1 + x * (1 - sig(x))).
template <typename Real>
void swiglu_backward(Real* dgate, Real* dup, const Real* dout, const Real* gate, const Real* up,
                     size_t n) {
#pragma omp parallel for
  for (size_t i = 0; i < n; ++i) {
    const Real x = gate[i];
    const Real sig = detail::sigmoid(x);
    const Real silu = x * sig;
    const Real dsilu = sig * (Real(1) + x * (Real(1) - sig));
    const Real g = dout[i];  // read before writing: dgate/dup may alias dout
    dgate[i] = g * up[i] * dsilu;
    dup[i] = g * silu;
  }
}

}  // namespace loco::ops
