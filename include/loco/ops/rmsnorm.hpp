// RMSNorm (Llama): out = in / rms(in) * weight, no mean subtraction and no bias.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "loco/ops/cpu_isa.hpp"
#include "loco/ops/fast_math.hpp"

namespace loco::ops {

namespace detail {

// Rows per parallel piece: about kElementwiseChunk elements.
inline size_t rows_per_chunk(int C) {
  return std::max<size_t>(1, kElementwiseChunk / static_cast<size_t>(std::max(C, 1)));
}

template <typename Real>
void rmsnorm_forward_rows(Real* out, Real* rstd, const Real* in, const Real* weight, int C,
                          Real eps, size_t row_begin, size_t row_end) {
  for (size_t n = row_begin; n < row_end; ++n) {
    const Real* __restrict x = in + n * C;
    Real* __restrict y = out + n * C;
    const Real sum_sq = dot_fixed(x, x, C);
    const Real r = Real(1) / std::sqrt(sum_sq / Real(C) + eps);
    for (int c = 0; c < C; ++c) y[c] = x[c] * r * weight[c];
    rstd[n] = r;
  }
}

template <typename Real>
void rmsnorm_backward_rows(Real* din, const Real* dout, const Real* in, const Real* weight,
                           const Real* rstd, int C, size_t row_begin, size_t row_end) {
  for (size_t n = row_begin; n < row_end; ++n) {
    const size_t row = n * C;
    const Real* __restrict g = dout + row;
    const Real* __restrict x = in + row;
    Real* __restrict dx = din + row;
    const Real r = rstd[n];
    // Σ_c dout*weight*in, eight interleaved partial sums in a fixed tree
    Real acc[8] = {};
    int c = 0;
    for (; c + 8 <= C; c += 8)
      for (int u = 0; u < 8; ++u) acc[u] += g[c + u] * weight[c + u] * x[c + u];
    Real dot = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; c < C; ++c) dot += g[c] * weight[c] * x[c];
    const Real through_rstd = dot * r * r * r / Real(C);
    for (c = 0; c < C; ++c) dx[c] += g[c] * weight[c] * r - x[c] * through_rstd;
  }
}

// dweight[c] += Σ_n dout*in*rstd over channels [c_begin, c_end), rows in order.
template <typename Real>
void rmsnorm_dweight_block(Real* dweight, const Real* dout, const Real* in, const Real* rstd, int N,
                           int C, size_t c_begin, size_t c_end) {
  Real* __restrict dw = dweight + c_begin;
  const int width = static_cast<int>(c_end - c_begin);
  for (int n = 0; n < N; ++n) {
    const size_t row = static_cast<size_t>(n) * C + c_begin;
    const Real* __restrict g = dout + row;
    const Real* __restrict x = in + row;
    const Real r = rstd[n];
    for (int c = 0; c < width; ++c) dw[c] += g[c] * x[c] * r;
  }
}

LOCO_ISA_CLONES(rmsnorm_forward_rows)
LOCO_ISA_CLONES(rmsnorm_backward_rows)
LOCO_ISA_CLONES(rmsnorm_dweight_block)

}  // namespace detail

// out(N,C) = in * rstd * weight;  rstd(N) = 1/sqrt(mean(in²) + eps), kept for the backward.
template <typename Real>
void rmsnorm_forward(Real* out, Real* rstd, const Real* in, const Real* weight, int N, int C,
                     std::type_identity_t<Real> eps) {
  for_chunks(static_cast<size_t>(std::max(N, 0)), detail::rows_per_chunk(C),
             [&](size_t begin, size_t end) {
               LOCO_ISA_CALL(detail::rmsnorm_forward_rows, out, rstd, in, weight, C, Real(eps),
                             begin, end);
             });
}

// din(N,C) += dL/din (din is the residual-stream gradient, so it accumulates);
// dweight(C) += dL/dweight. With g = dout*weight and r = rstd:
//   dL/din = r*g - in * r³/C * Σ_c(g*in)   (the second term is the path through rstd).
template <typename Real>
void rmsnorm_backward(Real* din, Real* dweight, const Real* dout, const Real* in,
                      const Real* weight, const Real* rstd, int N, int C) {
  for_chunks(static_cast<size_t>(std::max(N, 0)), detail::rows_per_chunk(C),
             [&](size_t begin, size_t end) {
               LOCO_ISA_CALL(detail::rmsnorm_backward_rows, din, dout, in, weight, rstd, C, begin,
                             end);
             });
  // dweight sums over rows: split channels across threads (no races, fixed order).
  constexpr size_t kChannelBlock = 64;
  if (N <= 0) return;
  for_chunks(static_cast<size_t>(std::max(C, 0)), kChannelBlock, [&](size_t begin, size_t end) {
    LOCO_ISA_CALL(detail::rmsnorm_dweight_block, dweight, dout, in, rstd, N, C, begin, end);
  });
}

}  // namespace loco::ops
