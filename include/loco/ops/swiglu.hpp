// SwiGLU gate of the Llama MLP: out = silu(gate) * up, silu(x) = x * sigmoid(x).
#pragma once
#include <cmath>
#include <cstddef>

#include "loco/ops/cpu_isa.hpp"
#include "loco/ops/fast_math.hpp"

namespace loco::ops {

namespace detail {
// 1/(1+e^-x): for very negative x, e^-x overflows to +inf and the result is a clean 0.
template <typename Real>
Real sigmoid(Real x) {
  return Real(1) / (Real(1) + fast_exp(-x));
}

template <typename Real>
void swiglu_forward_range(Real* out, const Real* gate, const Real* up, size_t begin, size_t end) {
  for (size_t i = begin; i < end; ++i) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

template <typename Real>
void swiglu_backward_range(Real* dgate, Real* dup, const Real* dout, const Real* gate,
                           const Real* up, size_t begin, size_t end) {
  for (size_t i = begin; i < end; ++i) {
    const Real x = gate[i];
    const Real sig = sigmoid(x);
    const Real silu = x * sig;
    const Real dsilu = sig * (Real(1) + x * (Real(1) - sig));
    const Real g = dout[i];  // read before writing: dgate/dup may alias dout
    dgate[i] = g * up[i] * dsilu;
    dup[i] = g * silu;
  }
}

LOCO_ISA_CLONES(swiglu_forward_range)
LOCO_ISA_CLONES(swiglu_backward_range)
}  // namespace detail

// out, gate, up: (N,F) flattened to n elements.
template <typename Real>
void swiglu_forward(Real* out, const Real* gate, const Real* up, size_t n) {
  for_chunks(n, kElementwiseChunk, [&](size_t begin, size_t end) {
    LOCO_ISA_CALL(detail::swiglu_forward_range, out, gate, up, begin, end);
  });
}

// dgate, dup overwritten. silu'(x) = sig(x) * (1 + x * (1 - sig(x))).
template <typename Real>
void swiglu_backward(Real* dgate, Real* dup, const Real* dout, const Real* gate, const Real* up,
                     size_t n) {
  for_chunks(n, kElementwiseChunk, [&](size_t begin, size_t end) {
    LOCO_ISA_CALL(detail::swiglu_backward_range, dgate, dup, dout, gate, up, begin, end);
  });
}

}  // namespace loco::ops
