// Fused softmax + cross-entropy over the vocabulary, the last op of the model.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace loco::ops {

// logits: (N,V); targets: (N), each in [0, V); losses: (N) = -log softmax(logits)[target].
// The row max is subtracted before exponentiating, so large logits cannot overflow.
// When compute_grad, logits is overwritten in place with
//   dlogits = (softmax - onehot(target)) * grad_scale
// (grad_scale is typically 1/(number of tokens in the step)), saving a (N,V) buffer.
template <typename Real>
void cross_entropy(Real* losses, Real* logits, const int32_t* targets, int N, int V,
                   std::type_identity_t<Real> grad_scale, bool compute_grad) {
#pragma omp parallel for
  for (int n = 0; n < N; ++n) {
    Real* row = logits + static_cast<size_t>(n) * V;
    const Real max_logit = *std::max_element(row, row + V);
    Real sum_exp = 0;
    for (int i = 0; i < V; ++i) sum_exp += std::exp(row[i] - max_logit);
    const Real lse = max_logit + std::log(sum_exp);
    const int target = targets[n];
    losses[n] = lse - row[target];
    if (!compute_grad) continue;
    for (int i = 0; i < V; ++i) row[i] = std::exp(row[i] - lse) * grad_scale;
    row[target] -= grad_scale;
  }
}

}  // namespace loco::ops
