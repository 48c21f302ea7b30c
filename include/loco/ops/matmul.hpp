// Linear layer without bias, weights in Hugging Face layout (out_features, in_features).
#pragma once
#include "loco/ops/gemm.hpp"

namespace loco::ops {

// out(N,OC) = in(N,IC) · weight(OC,IC)ᵀ
template <typename Real>
void matmul_forward(Real* out, const Real* in, const Real* weight, int N, int IC, int OC) {
  gemm<Real>(false, true, N, OC, IC, Real(1), in, weight, Real(0), out);
}

// din(N,IC) = dout(N,OC) · weight(OC,IC), or += when accumulate_din (a residual branch);
// dweight(OC,IC) += doutᵀ · in (parameter gradients always accumulate).
template <typename Real>
void matmul_backward(Real* din, Real* dweight, const Real* dout, const Real* in, const Real* weight,
                     int N, int IC, int OC, bool accumulate_din) {
  gemm<Real>(false, false, N, IC, OC, Real(1), dout, weight, accumulate_din ? Real(1) : Real(0),
             din);
  gemm<Real>(true, false, OC, IC, N, Real(1), dout, in, Real(1), dweight);
}

}  // namespace loco::ops
