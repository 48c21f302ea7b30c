// AdamW (decoupled weight decay, Loshchilov & Hutter) on one flat tensor.
#pragma once
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "loco/ops/cpu_isa.hpp"

#if LOCO_HAVE_ISA_CLONES
#include <immintrin.h>
#endif

namespace loco::ops {

// The bias corrections bc1 = 1 - beta1^t and bc2 = 1 - beta2^t are passed in (computed once
// per step by the caller, in double if it likes) rather than the step number, so one kernel
// serves every step. grad_scale folds loss scaling / clipping into the same pass.
struct AdamWHyperparams {
  float lr = 0;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0;
  float bc1 = 1;
  float bc2 = 1;
  float grad_scale = 1;
};

namespace detail {

template <typename Real>
void adamw_range(Real* param, const Real* grad, Real* m, Real* v, const AdamWHyperparams* hpp,
                 size_t begin, size_t end) {
  const AdamWHyperparams& hp = *hpp;
  const Real b1 = hp.beta1, b2 = hp.beta2, gs = hp.grad_scale, bc1 = hp.bc1, bc2 = hp.bc2,
             eps = hp.eps, wd = hp.weight_decay, lr = hp.lr;
  size_t i = begin;
#if LOCO_HAVE_ISA_CLONES
  // std::sqrt may set errno, so GCC never vectorises the scalar loop below; the same
  // arithmetic four lanes at a time, with SSE's sqrtps (correctly rounded, like sqrtf).
  if constexpr (std::is_same_v<Real, float>) {
    typedef float V4 __attribute__((vector_size(16)));
    typedef float U4 __attribute__((vector_size(16), aligned(4), may_alias));
    for (; i + 4 <= end; i += 4) {
      const V4 g = *reinterpret_cast<const U4*>(grad + i) * gs;
      const V4 mi = b1 * *reinterpret_cast<const U4*>(m + i) + (1.0f - b1) * g;
      const V4 vi = b2 * *reinterpret_cast<const U4*>(v + i) + (1.0f - b2) * g * g;
      *reinterpret_cast<U4*>(m + i) = mi;
      *reinterpret_cast<U4*>(v + i) = vi;
      const V4 m_hat = mi / bc1;
      const V4 v_hat = vi / bc2;
      const V4 root = reinterpret_cast<V4>(_mm_sqrt_ps(reinterpret_cast<__m128>(v_hat)));
      const V4 p = *reinterpret_cast<const U4*>(param + i);
      const V4 update = m_hat / (root + eps) + wd * p;
      *reinterpret_cast<U4*>(param + i) = p - lr * update;
    }
  }
#endif
  for (; i < end; ++i) {
    const Real g = grad[i] * gs;
    m[i] = b1 * m[i] + (Real(1) - b1) * g;
    v[i] = b2 * v[i] + (Real(1) - b2) * g * g;
    const Real m_hat = m[i] / bc1;
    const Real v_hat = v[i] / bc2;
    const Real update = m_hat / (std::sqrt(v_hat) + eps) + wd * param[i];
    param[i] -= lr * update;
  }
}

LOCO_ISA_CLONES(adamw_range)

}  // namespace detail

// g = grad * grad_scale
// m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g²
// p -= lr * ( (m/bc1) / (sqrt(v/bc2) + eps) + wd * p )     (p on the right: before update)
template <typename Real>
void adamw_update(Real* param, const Real* grad, Real* m, Real* v, size_t n,
                  const AdamWHyperparams& hp) {
  const AdamWHyperparams* hpp = &hp;
  for_chunks(n, kElementwiseChunk, [&](size_t begin, size_t end) {
    LOCO_ISA_CALL(detail::adamw_range, param, grad, m, v, hpp, begin, end);
  });
}

}  // namespace loco::ops
