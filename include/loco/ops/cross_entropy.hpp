// Fused softmax + cross-entropy over the vocabulary, the last op of the model.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "loco/ops/cpu_isa.hpp"
#include "loco/ops/fast_math.hpp"

namespace loco::ops {

namespace detail {

// Rows [row_begin, row_end); e: scratch of V.
template <typename Real>
void cross_entropy_rows(Real* losses, Real* logits, const int32_t* targets, int V, Real grad_scale,
                        bool compute_grad, Real* e, size_t row_begin, size_t row_end) {
  for (size_t n = row_begin; n < row_end; ++n) {
    Real* row = logits + n * V;
    const Real max_logit = max_fixed(row, V);
    for (int i = 0; i < V; ++i) e[i] = fast_exp(row[i] - max_logit);
    const Real sum_exp = sum_fixed(e, V);
    const Real lse = max_logit + std::log(sum_exp);
    const int target = targets[n];
    losses[n] = lse - row[target];
    if (!compute_grad) continue;
    // softmax = e / sum_exp = exp(row - lse)
    const Real scale = grad_scale / sum_exp;
    for (int i = 0; i < V; ++i) row[i] = e[i] * scale;
    row[target] -= grad_scale;
  }
}

LOCO_ISA_CLONES(cross_entropy_rows)

}  // namespace detail

// logits: (N,V); targets: (N), each in [0, V); losses: (N) = -log softmax(logits)[target].
// The row max is subtracted before exponentiating, so large logits cannot overflow.
// When compute_grad, logits is overwritten in place with
//   dlogits = (softmax - onehot(target)) * grad_scale
// (grad_scale is typically 1/(number of tokens in the step)), saving a (N,V) buffer.
template <typename Real>
void cross_entropy(Real* losses, Real* logits, const int32_t* targets, int N, int V,
                   std::type_identity_t<Real> grad_scale, bool compute_grad) {
  if (N <= 0 || V <= 0) return;
  const size_t rows = std::max<size_t>(1, kElementwiseChunk / static_cast<size_t>(V));
  for_chunks(static_cast<size_t>(N), rows, [&](size_t begin, size_t end) {
    std::vector<Real> e(static_cast<size_t>(V));
    Real* scratch = e.data();
    LOCO_ISA_CALL(detail::cross_entropy_rows, losses, logits, targets, V, Real(grad_scale),
                  compute_grad, scratch, begin, end);
  });
}

}  // namespace loco::ops
