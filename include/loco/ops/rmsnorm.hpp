// RMSNorm (Llama): out = in / rms(in) * weight, no mean subtraction and no bias.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>

namespace loco::ops {

// out(N,C) = in * rstd * weight;  rstd(N) = 1/sqrt(mean(in²) + eps), kept for the backward.
template <typename Real>
void rmsnorm_forward(Real* out, Real* rstd, const Real* in, const Real* weight, int N, int C,
                     std::type_identity_t<Real> eps) {
#pragma omp parallel for
  for (int n = 0; n < N; ++n) {
    const Real* x = in + static_cast<size_t>(n) * C;
    Real* y = out + static_cast<size_t>(n) * C;
    Real sum_sq = 0;
    for (int c = 0; c < C; ++c) sum_sq += x[c] * x[c];
    const Real r = Real(1) / std::sqrt(sum_sq / Real(C) + eps);
    for (int c = 0; c < C; ++c) y[c] = x[c] * r * weight[c];
    rstd[n] = r;
  }
}

// din(N,C) += dL/din (din is the residual-stream gradient, so it accumulates);
// dweight(C) += dL/dweight. With g = dout*weight and r = rstd:
//   dL/din = r*g - in * r³/C * Σ_c(g*in)   (the second term is the path through rstd).
template <typename Real>
void rmsnorm_backward(Real* din, Real* dweight, const Real* dout, const Real* in,
                      const Real* weight, const Real* rstd, int N, int C) {
#pragma omp parallel for
  for (int n = 0; n < N; ++n) {
    const size_t row = static_cast<size_t>(n) * C;
    const Real r = rstd[n];
    Real dot = 0;  // Σ_c dout*weight*in
    for (int c = 0; c < C; ++c) dot += dout[row + c] * weight[c] * in[row + c];
    const Real through_rstd = dot * r * r * r / Real(C);
    for (int c = 0; c < C; ++c)
      din[row + c] += dout[row + c] * weight[c] * r - in[row + c] * through_rstd;
  }

  // dweight sums over rows: split channels across threads (no races, fixed order).
  constexpr int kChannelBlock = 64;
  const int num_blocks = (C + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for
  for (int block = 0; block < num_blocks; ++block) {
    const int c_begin = block * kChannelBlock;
    const int c_end = std::min(C, c_begin + kChannelBlock);
    for (int n = 0; n < N; ++n) {
      const size_t row = static_cast<size_t>(n) * C;
      for (int c = c_begin; c < c_end; ++c) dweight[c] += dout[row + c] * in[row + c] * rstd[n];
    }
  }
}

}  // namespace loco::ops
