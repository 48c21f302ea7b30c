// AdamW (decoupled weight decay, Loshchilov & Hutter) on one flat tensor.
#pragma once
#include <cmath>
#include <cstddef>

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

// g = grad * grad_scale
// m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g²
// p -= lr * ( (m/bc1) / (sqrt(v/bc2) + eps) + wd * p )     (p on the right: before update)
template <typename Real>
void adamw_update(Real* param, const Real* grad, Real* m, Real* v, size_t n,
                  const AdamWHyperparams& hp) {
  const Real b1 = hp.beta1, b2 = hp.beta2;
#pragma omp parallel for
  for (size_t i = 0; i < n; ++i) {
    const Real g = grad[i] * Real(hp.grad_scale);
    m[i] = b1 * m[i] + (Real(1) - b1) * g;
    v[i] = b2 * v[i] + (Real(1) - b2) * g * g;
    const Real m_hat = m[i] / Real(hp.bc1);
    const Real v_hat = v[i] / Real(hp.bc2);
    const Real update =
        m_hat / (std::sqrt(v_hat) + Real(hp.eps)) + Real(hp.weight_decay) * param[i];
    param[i] -= Real(hp.lr) * update;
  }
}

}  // namespace loco::ops
