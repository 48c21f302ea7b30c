// Residual add fused with the RMSNorm that follows it (each pre-norm block's "x + branch →
// norm"): one pass over the rows instead of an add pass and a norm pass that re-reads the
// sum. CPU reference of Backend::add_rmsnorm_forward (kernels/add_rmsnorm.cu on CUDA).
//
//   sum(N,C) = a + b                       (rounded to the element type, as add() stores it)
//   out(N,C) = sum * rstd * weight(C)       rstd(N) = 1/sqrt(mean(sum²) + eps)
//
// exactly ops::add followed by ops::rmsnorm_forward on the stored sum: the same bits.
// Backward: the sum feeds the residual stream and the norm; the residual stream's gradient
// buffer already accumulates the norm's input gradient (rmsnorm_backward: din +=), so the
// add's backward (the identity into both inputs) is that same buffer and the fused op's
// backward is rmsnorm_backward unchanged: there is no separate add to fuse there.
#pragma once
#include <cstddef>
#include <type_traits>

#include "loco/ops/cpu_isa.hpp"
#include "loco/ops/rmsnorm.hpp"
#include "loco/ops/vector_ops.hpp"

namespace loco::ops {

// sum may alias a or b.
template <typename Real>
void add_rmsnorm_forward(Real* sum, Real* out, Real* rstd, const Real* a, const Real* b,
                         const Real* weight, int N, int C, std::type_identity_t<Real> eps) {
  const size_t width = static_cast<size_t>(std::max(C, 0));
  for_chunks(static_cast<size_t>(std::max(N, 0)), detail::rows_per_chunk(C),
             [&](size_t begin, size_t end) {
               LOCO_ISA_CALL(detail::add_range, sum, a, b, begin * width, end * width);
               LOCO_ISA_CALL(detail::rmsnorm_forward_rows, out, rstd, sum, weight, C, Real(eps),
                             begin, end);
             });
}

}  // namespace loco::ops
