// Causal grouped-query attention (Llama 2/3): NH query heads share NKV key/value heads,
// query head h reading kv head h / (NH/NKV). Scores are scaled by 1/sqrt(hd).
//
// The forward keeps only out and lse (the log-sum-exp of each row's scaled scores); the
// backward recomputes every probability as exp(score - lse). Memory is O(B·NH·T) instead of
// the O(B·NH·T²) of a stored attention matrix, and it is exactly what FlashAttention keeps,
// so the CUDA backend can be checked against these two outputs.
//
// How it is fast on a CPU without giving up determinism:
//  - each task copies its kv head's K (and V) transposed into a contiguous, zero-padded
//    (hd, Tp) scratch, so the scores of RB query rows against W keys are a register
//    tile acc[r] += q[r][d]·Kᵀ[d][j..j+W), summed over d in order;
//  - output rows (out, dq) are register tiles over W channels, summed over keys in order;
//  - exp is the vectorisable fast_exp; softmax sums and maxima use a fixed association;
//  - the tasks exist compiled for AVX2 and AVX-512 too (loco/ops/cpu_isa.hpp), with W = two
//    registers' worth of lanes.
// Every sum's order depends only on the shapes, never on the thread count.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "loco/ops/cpu_isa.hpp"
#include "loco/ops/fast_math.hpp"

namespace loco::ops {

namespace detail {

// Element offsets of one head-row in the (B,T,heads,hd) layouts.
inline size_t head_row_offset(int b, int t, int head, int T, int heads, int hd) {
  return ((static_cast<size_t>(b) * T + t) * heads + head) * hd;
}

struct AttentionShape {
  int B, T, NH, NKV, hd;
  int group() const { return NH / NKV; }  // query heads per kv head
  size_t q_row(int b, int t, int h) const { return head_row_offset(b, t, h, T, NH, hd); }
  size_t kv_row(int b, int t, int kvh) const { return head_row_offset(b, t, kvh, T, NKV, hd); }
  size_t lse_index(int b, int h, int t) const { return (static_cast<size_t>(b) * NH + h) * T + t; }
};

constexpr int kMaxRowBlock = 8;  // query rows handled together (they share every K/V load)
constexpr int kMaxTile = 32;     // widest key tile; rows of the K/V/score scratch are padded to it

inline int padded_keys(int T) { return (T + kMaxTile - 1) / kMaxTile * kMaxTile; }

// L lanes of Real as one GCC/Clang vector, L being the target's register width, so each
// value is one SIMD register (a tile of W = 2L lanes is two of them). Lanes never interact,
// so results do not depend on the width. Loads and stores go through an unaligned, may_alias
// twin type (never through the accumulators' addresses), so accumulators stay in registers.
template <typename Real, int L>
struct SimdOf {
  typedef Real V __attribute__((vector_size(L * sizeof(Real))));
  typedef Real U __attribute__((vector_size(L * sizeof(Real)), aligned(alignof(Real)), may_alias));
};
#define LOCO_SIMD_LOAD(Simd, p) (*reinterpret_cast<const typename Simd::U*>(p))
#define LOCO_SIMD_STORE(Simd, p, v) (*reinterpret_cast<typename Simd::U*>(p) = (v))

// Per-thread scratch. kt/vt: (hd, Tp) transposed K/V, zero in the padding columns;
// s1/s2: kMaxRowBlock score rows of Tp; dk/dv: (T, hd) accumulators of one kv head.
template <typename Real>
struct AttentionScratch {
  int Tp;
  std::vector<Real> kt, vt, s1, s2, dk, dv;
  explicit AttentionScratch(const AttentionShape& s) : Tp(padded_keys(s.T)) {
    const size_t hd = static_cast<size_t>(s.hd), T = static_cast<size_t>(s.T);
    kt.assign(hd * Tp, Real(0));
    vt.assign(hd * Tp, Real(0));
    s1.assign(static_cast<size_t>(kMaxRowBlock) * Tp, Real(0));
    s2.assign(static_cast<size_t>(kMaxRowBlock) * Tp, Real(0));
    dk.assign(T * hd, Real(0));
    dv.assign(T * hd, Real(0));
  }
};

// xt(hd, Tp) = the rows x(b, 0..T-1, kvh, :) transposed (padding columns untouched).
template <typename Real>
void gather_transposed(Real* xt, int Tp, const Real* x, const AttentionShape& s, int b, int kvh) {
  for (int j = 0; j < s.T; ++j) {
    const Real* row = x + s.kv_row(b, j, kvh);
    for (int d = 0; d < s.hd; ++d) xt[static_cast<size_t>(d) * Tp + j] = row[d];
  }
}

// S[r][j] = Σ_d rows[r][d] · xt[d][j] (d ascending) for r < R and every j < n rounded up to
// W = 2L (<= Tp; the extra columns are meaningless).
template <int W, int R, typename Real>
void block_scores(Real* S, const Real* const* rows, const Real* xt, int n, int Tp, int hd) {
  constexpr int L = W / 2;
  using Simd = SimdOf<Real, L>;
  using V = typename Simd::V;
  for (int j0 = 0; j0 < n; j0 += W) {
    V lo[R], hi[R];
    for (int r = 0; r < R; ++r) lo[r] = hi[r] = V{};
    for (int d = 0; d < hd; ++d) {
      const Real* x = xt + static_cast<size_t>(d) * Tp + j0;
      const V x_lo = LOCO_SIMD_LOAD(Simd, x), x_hi = LOCO_SIMD_LOAD(Simd, x + L);
      for (int r = 0; r < R; ++r) {
        const Real a = rows[r][d];
        lo[r] += a * x_lo;
        hi[r] += a * x_hi;
      }
    }
    for (int r = 0; r < R; ++r) {
      Real* out = S + static_cast<size_t>(r) * Tp + j0;
      LOCO_SIMD_STORE(Simd, out, lo[r]);
      LOCO_SIMD_STORE(Simd, out + L, hi[r]);
    }
  }
}

// dst[r][d] = Σ_{j<n} P[r][j] · x_j[d] (j ascending) for the rows x_j = row(j), each hd long.
template <int W, int R, typename Real, typename RowOf>
void block_weighted_rows(Real* const* dst, const Real* P, int Tp, int n, int hd, RowOf row) {
  constexpr int L = W / 2;
  using Simd = SimdOf<Real, L>;
  using V = typename Simd::V;
  int d0 = 0;
  for (; d0 + W <= hd; d0 += W) {
    V lo[R], hi[R];
    for (int r = 0; r < R; ++r) lo[r] = hi[r] = V{};
    for (int j = 0; j < n; ++j) {
      const Real* x = row(j) + d0;
      const V x_lo = LOCO_SIMD_LOAD(Simd, x), x_hi = LOCO_SIMD_LOAD(Simd, x + L);
      for (int r = 0; r < R; ++r) {
        const Real p = P[static_cast<size_t>(r) * Tp + j];
        lo[r] += p * x_lo;
        hi[r] += p * x_hi;
      }
    }
    for (int r = 0; r < R; ++r) {
      LOCO_SIMD_STORE(Simd, dst[r] + d0, lo[r]);
      LOCO_SIMD_STORE(Simd, dst[r] + d0 + L, hi[r]);
    }
  }
  for (; d0 < hd; ++d0) {
    for (int r = 0; r < R; ++r) {
      Real acc = 0;
      for (int j = 0; j < n; ++j) acc += P[static_cast<size_t>(r) * Tp + j] * row(j)[d0];
      dst[r][d0] = acc;
    }
  }
}

// Forward for query rows t0..t0+R-1 of head h; w.kt holds K of its kv head transposed.
template <int W, int R, typename Real>
void attention_rows_forward(Real* out, Real* lse, const Real* q, const Real* v,
                            const AttentionShape& s, int b, int h, int t0,
                            AttentionScratch<Real>& w) {
  const Real scale = Real(1) / std::sqrt(Real(s.hd));
  const int kvh = h / s.group();
  const int Tp = w.Tp;
  const int n = t0 + R;  // keys 0..n-1 cover every row of the block
  const Real* rows[R];
  Real* dst[R];
  for (int r = 0; r < R; ++r) {
    rows[r] = q + s.q_row(b, t0 + r, h);
    dst[r] = out + s.q_row(b, t0 + r, h);
  }
  Real* S = w.s1.data();
  block_scores<W, R>(S, rows, w.kt.data(), n, Tp, s.hd);

  // Row r sees keys 0..t0+r; later keys get probability exactly 0.
  for (int r = 0; r < R; ++r) {
    Real* sr = S + static_cast<size_t>(r) * Tp;
    const int len = t0 + r + 1;
    for (int j = 0; j < len; ++j) sr[j] *= scale;
    const Real max_score = max_fixed(sr, len);
    for (int j = 0; j < len; ++j) sr[j] = fast_exp(sr[j] - max_score);  // unnormalised
    const Real sum_exp = sum_fixed(sr, len);
    const Real inv_sum = Real(1) / sum_exp;
    for (int j = 0; j < len; ++j) sr[j] *= inv_sum;
    for (int j = len; j < n; ++j) sr[j] = 0;
    lse[s.lse_index(b, h, t0 + r)] = max_score + std::log(sum_exp);
  }
  block_weighted_rows<W, R>(dst, S, Tp, n, s.hd, [&](int j) { return v + s.kv_row(b, j, kvh); });
}

// Gradients from query rows t0..t0+R-1 of head h into dq (rows written) and the kv head's
// dk/dv accumulators (w.dk, w.dv: (T, hd), +=).
template <int W, int R, typename Real>
void attention_rows_backward(Real* dq, const Real* dout, const Real* q, const Real* k,
                             const Real* out, const Real* lse, const AttentionShape& s, int b,
                             int h, int t0, AttentionScratch<Real>& w) {
  const Real scale = Real(1) / std::sqrt(Real(s.hd));
  const int kvh = h / s.group();
  const int hd = s.hd, Tp = w.Tp;
  const int n = t0 + R;
  const Real* q_rows[R];
  const Real* dout_rows[R];
  Real* dq_rows[R];
  for (int r = 0; r < R; ++r) {
    q_rows[r] = q + s.q_row(b, t0 + r, h);
    dout_rows[r] = dout + s.q_row(b, t0 + r, h);
    dq_rows[r] = dq + s.q_row(b, t0 + r, h);
  }
  Real* P = w.s1.data();
  Real* C = w.s2.data();
  block_scores<W, R>(P, q_rows, w.kt.data(), n, Tp, hd);     // q·k_j
  block_scores<W, R>(C, dout_rows, w.vt.data(), n, Tp, hd);  // dp_j = dout·v_j
  // With D = dout·out: p_j = exp(scale·q·k_j - lse), C_j = scale·p_j·(dp_j - D); both are
  // exactly 0 beyond the causal limit.
  for (int r = 0; r < R; ++r) {
    Real* pr = P + static_cast<size_t>(r) * Tp;
    Real* cr = C + static_cast<size_t>(r) * Tp;
    const int len = t0 + r + 1;
    const Real row_lse = lse[s.lse_index(b, h, t0 + r)];
    const Real D = dot_fixed(dout_rows[r], out + s.q_row(b, t0 + r, h), hd);
    for (int j = 0; j < len; ++j) {
      const Real p = fast_exp(pr[j] * scale - row_lse);
      pr[j] = p;
      cr[j] = scale * (p * (cr[j] - D));
    }
    for (int j = len; j < n; ++j) pr[j] = cr[j] = 0;
  }
  // dv_j += Σ_r p_rj dout_r;  dk_j += Σ_r C_rj q_r  (rows added in order, each dv_j/dk_j
  // chunk loaded and stored once per block)
  constexpr int L = W / 2;
  using Simd = SimdOf<Real, L>;
  using V = typename Simd::V;
  for (int j = 0; j < n; ++j) {
    Real* dv_row = w.dv.data() + static_cast<size_t>(j) * hd;
    Real* dk_row = w.dk.data() + static_cast<size_t>(j) * hd;
    Real p[R], c[R];
    for (int r = 0; r < R; ++r) {
      p[r] = P[static_cast<size_t>(r) * Tp + j];
      c[r] = C[static_cast<size_t>(r) * Tp + j];
    }
    int d = 0;
    for (; d + L <= hd; d += L) {
      V dv_acc = LOCO_SIMD_LOAD(Simd, dv_row + d), dk_acc = LOCO_SIMD_LOAD(Simd, dk_row + d);
      for (int r = 0; r < R; ++r) {
        dv_acc += p[r] * LOCO_SIMD_LOAD(Simd, dout_rows[r] + d);
        dk_acc += c[r] * LOCO_SIMD_LOAD(Simd, q_rows[r] + d);
      }
      LOCO_SIMD_STORE(Simd, dv_row + d, dv_acc);
      LOCO_SIMD_STORE(Simd, dk_row + d, dk_acc);
    }
    for (; d < hd; ++d)
      for (int r = 0; r < R; ++r) {
        dv_row[d] += p[r] * dout_rows[r][d];
        dk_row[d] += c[r] * q_rows[r][d];
      }
  }
  // dq_r = Σ_j C_rj k_j
  block_weighted_rows<W, R>(dq_rows, C, Tp, n, hd, [&](int j) { return k + s.kv_row(b, j, kvh); });
}

// Forward of one (batch, query head) pair, RB query rows at a time. `kt_of` remembers which
// K is in w.kt.
template <int W, int RB, typename Real>
void attention_head_forward(Real* out, Real* lse, const Real* q, const Real* k, const Real* v,
                            const AttentionShape& s, int b, int h, AttentionScratch<Real>& w,
                            int& kt_of) {
  const int kvh = h / s.group();
  const int key = b * s.NKV + kvh;
  if (kt_of != key) {
    gather_transposed(w.kt.data(), w.Tp, k, s, b, kvh);
    kt_of = key;
  }
  int t0 = 0;
  for (; t0 + RB <= s.T; t0 += RB) attention_rows_forward<W, RB>(out, lse, q, v, s, b, h, t0, w);
  for (; t0 < s.T; ++t0) attention_rows_forward<W, 1>(out, lse, q, v, s, b, h, t0, w);
}

// All gradients of one (batch, kv head) pair: its dk/dv rows and the dq rows of the query
// heads in its group. Every output element is owned by exactly one pair, so pairs run in
// parallel without atomics and each sum has a fixed order (deterministic).
//
// With p_j = softmax(scale·q·k_j) and D = Σ_d dout·out (= Σ_j p_j dp_j):
//   dv_j += p_j dout;  dp_j = dout·v_j;  ds_j = p_j (dp_j - D);
//   dq += scale Σ_j ds_j k_j;  dk_j += scale ds_j q.
template <int W, int RB, typename Real>
void attention_kv_head_backward(Real* dq, Real* dk, Real* dv, const Real* dout, const Real* q,
                                const Real* k, const Real* v, const Real* out, const Real* lse,
                                const AttentionShape& s, int b, int kvh,
                                AttentionScratch<Real>& w) {
  const size_t hd = static_cast<size_t>(s.hd);
  gather_transposed(w.kt.data(), w.Tp, k, s, b, kvh);
  gather_transposed(w.vt.data(), w.Tp, v, s, b, kvh);
  std::fill(w.dk.begin(), w.dk.end(), Real(0));
  std::fill(w.dv.begin(), w.dv.end(), Real(0));
  for (int h = kvh * s.group(); h < (kvh + 1) * s.group(); ++h) {
    int t0 = 0;
    for (; t0 + RB <= s.T; t0 += RB)
      attention_rows_backward<W, RB>(dq, dout, q, k, out, lse, s, b, h, t0, w);
    for (; t0 < s.T; ++t0) attention_rows_backward<W, 1>(dq, dout, q, k, out, lse, s, b, h, t0, w);
  }
  for (int t = 0; t < s.T; ++t) {
    std::copy_n(w.dk.data() + t * hd, hd, dk + s.kv_row(b, t, kvh));
    std::copy_n(w.dv.data() + t * hd, hd, dv + s.kv_row(b, t, kvh));
  }
}

// The tasks per instruction set: W = two registers of Real lanes; RB = 8 rows with 32 vector
// registers (AVX-512), else 4.
template <typename Real>
using HeadForwardFn = void (*)(Real*, Real*, const Real*, const Real*, const Real*,
                               const AttentionShape&, int, int, AttentionScratch<Real>&, int&);
template <typename Real>
using KvHeadBackwardFn = void (*)(Real*, Real*, Real*, const Real*, const Real*, const Real*,
                                  const Real*, const Real*, const Real*, const AttentionShape&, int,
                                  int, AttentionScratch<Real>&);

#if LOCO_HAVE_ISA_CLONES
template <typename Real>
LOCO_TARGET_AVX2 void attention_head_forward_avx2(Real* out, Real* lse, const Real* q,
                                                  const Real* k, const Real* v,
                                                  const AttentionShape& s, int b, int h,
                                                  AttentionScratch<Real>& w, int& kt_of) {
  attention_head_forward<64 / sizeof(Real), 4>(out, lse, q, k, v, s, b, h, w, kt_of);
}
template <typename Real>
LOCO_TARGET_AVX512 void attention_head_forward_avx512(Real* out, Real* lse, const Real* q,
                                                      const Real* k, const Real* v,
                                                      const AttentionShape& s, int b, int h,
                                                      AttentionScratch<Real>& w, int& kt_of) {
  attention_head_forward<128 / sizeof(Real), 8>(out, lse, q, k, v, s, b, h, w, kt_of);
}
template <typename Real>
LOCO_TARGET_AVX2 void attention_kv_head_backward_avx2(Real* dq, Real* dk, Real* dv,
                                                      const Real* dout, const Real* q,
                                                      const Real* k, const Real* v, const Real* out,
                                                      const Real* lse, const AttentionShape& s,
                                                      int b, int kvh, AttentionScratch<Real>& w) {
  attention_kv_head_backward<64 / sizeof(Real), 4>(dq, dk, dv, dout, q, k, v, out, lse, s, b, kvh,
                                                   w);
}
template <typename Real>
LOCO_TARGET_AVX512 void attention_kv_head_backward_avx512(Real* dq, Real* dk, Real* dv,
                                                          const Real* dout, const Real* q,
                                                          const Real* k, const Real* v,
                                                          const Real* out, const Real* lse,
                                                          const AttentionShape& s, int b, int kvh,
                                                          AttentionScratch<Real>& w) {
  attention_kv_head_backward<128 / sizeof(Real), 8>(dq, dk, dv, dout, q, k, v, out, lse, s, b, kvh,
                                                    w);
}
#endif

template <typename Real>
HeadForwardFn<Real> pick_head_forward() {
#if LOCO_HAVE_ISA_CLONES
  if (cpu_isa() == CpuIsa::Avx512) return &attention_head_forward_avx512<Real>;
  if (cpu_isa() == CpuIsa::Avx2) return &attention_head_forward_avx2<Real>;
#endif
  return &attention_head_forward<32 / sizeof(Real), 4, Real>;
}

template <typename Real>
KvHeadBackwardFn<Real> pick_kv_head_backward() {
#if LOCO_HAVE_ISA_CLONES
  if (cpu_isa() == CpuIsa::Avx512) return &attention_kv_head_backward_avx512<Real>;
  if (cpu_isa() == CpuIsa::Avx2) return &attention_kv_head_backward_avx2<Real>;
#endif
  return &attention_kv_head_backward<32 / sizeof(Real), 4, Real>;
}

}  // namespace detail

// q, out: (B,T,NH,hd); k, v: (B,T,NKV,hd); lse: (B,NH,T). NH must be a multiple of NKV.
template <typename Real>
void attention_forward(Real* out, Real* lse, const Real* q, const Real* k, const Real* v, int B,
                       int T, int NH, int NKV, int hd) {
  const detail::AttentionShape shape{B, T, NH, NKV, hd};
  const auto task = detail::pick_head_forward<Real>();
  const size_t work = static_cast<size_t>(B) * NH * T * T * hd;
#pragma omp parallel if (B * NH > 1 && work > (size_t{1} << 18))
  {
    detail::AttentionScratch<Real> w(shape);  // per thread
    int kt_of = -1;
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < NH; ++h) task(out, lse, q, k, v, shape, b, h, w, kt_of);
  }
}

// dq: (B,T,NH,hd); dk, dv: (B,T,NKV,hd); all three overwritten.
template <typename Real>
void attention_backward(Real* dq, Real* dk, Real* dv, const Real* dout, const Real* q,
                        const Real* k, const Real* v, const Real* out, const Real* lse, int B,
                        int T, int NH, int NKV, int hd) {
  const detail::AttentionShape shape{B, T, NH, NKV, hd};
  const auto task = detail::pick_kv_head_backward<Real>();
  const size_t work = static_cast<size_t>(B) * NH * T * T * hd;
#pragma omp parallel if (B * NKV > 1 && work > (size_t{1} << 18))
  {
    detail::AttentionScratch<Real> w(shape);  // per thread
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int kvh = 0; kvh < NKV; ++kvh)
        task(dq, dk, dv, dout, q, k, v, out, lse, shape, b, kvh, w);
  }
}

}  // namespace loco::ops
