// Causal grouped-query attention (Llama 2/3): NH query heads share NKV key/value heads,
// query head h reading kv head h / (NH/NKV). Scores are scaled by 1/sqrt(hd).
//
// The forward keeps only out and lse (the log-sum-exp of each row's scaled scores); the
// backward recomputes every probability as exp(score - lse). Memory is O(B·NH·T) instead of
// the O(B·NH·T²) of a stored attention matrix, and it is exactly what FlashAttention keeps,
// so the CUDA backend can be checked against these two outputs.
//
// Layout for speed: each task first copies its kv head's K (and V) transposed into a
// contiguous (hd, T) scratch, so a score row q·k_j for all keys j is hd passes of
// s[j] += q[d]·Kᵀ[d][j], contiguous over j: a loop the compiler vectorises without
// reassociating anything. Query rows are processed kRowBlock at a time so every load of K/V
// serves several rows. Every sum keeps the order of the plain loops (over d for a score,
// over keys for an output row, over (head, query) for dk/dv), so results do not depend on
// the blocking or on the thread count.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

namespace loco::ops {

namespace detail {

template <typename Real>
Real dot(const Real* a, const Real* b, int n) {
  Real sum = 0;
  for (int i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

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

// Query rows handled together (they share every load of a key or value row).
constexpr int kRowBlock = 4;

// xt(hd, T) = the rows x(b, 0..T-1, kvh, :) transposed.
template <typename Real>
void gather_transposed(Real* xt, const Real* x, const AttentionShape& s, int b, int kvh) {
  for (int j = 0; j < s.T; ++j) {
    const Real* row = x + s.kv_row(b, j, kvh);
    for (int d = 0; d < s.hd; ++d) xt[static_cast<size_t>(d) * s.T + j] = row[d];
  }
}

// scores[r*T + j] = Σ_d rows[r][d] · xt[d][j] for r < R, j < n (d ascending, like dot()).
template <int R, typename Real>
void block_scores(Real* scores, const Real* const* rows, const Real* xt, int n, int T, int hd) {
  for (int r = 0; r < R; ++r) std::fill_n(scores + static_cast<size_t>(r) * T, n, Real(0));
  for (int d = 0; d < hd; ++d) {
    const Real* x = xt + static_cast<size_t>(d) * T;
    if constexpr (R == kRowBlock) {
      const Real a0 = rows[0][d], a1 = rows[1][d], a2 = rows[2][d], a3 = rows[3][d];
      Real* __restrict s0 = scores;
      Real* __restrict s1 = scores + T;
      Real* __restrict s2 = scores + 2 * static_cast<size_t>(T);
      Real* __restrict s3 = scores + 3 * static_cast<size_t>(T);
      for (int j = 0; j < n; ++j) {
        const Real xj = x[j];
        s0[j] += a0 * xj;
        s1[j] += a1 * xj;
        s2[j] += a2 * xj;
        s3[j] += a3 * xj;
      }
    } else {
      for (int r = 0; r < R; ++r) {
        const Real a = rows[r][d];
        Real* __restrict sr = scores + static_cast<size_t>(r) * T;
        for (int j = 0; j < n; ++j) sr[j] += a * x[j];
      }
    }
  }
}

// Forward for query rows t0..t0+R-1 of head h. kt: K of the kv head transposed (hd, T).
template <int R, typename Real>
void attention_rows_forward(Real* out, Real* lse, const Real* q, const Real* v, const Real* kt,
                            const AttentionShape& s, int b, int h, int t0, Real* scores,
                            Real* acc) {
  const Real scale = Real(1) / std::sqrt(Real(s.hd));
  const int kvh = h / s.group();
  const int T = s.T, hd = s.hd;
  const int n = t0 + R;  // keys 0..n-1 cover every row of the block
  const Real* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = q + s.q_row(b, t0 + r, h);
  block_scores<R>(scores, rows, kt, n, T, hd);

  // Row r sees keys 0..t0+r; the probabilities of later keys are set to exactly 0, so the
  // blocked accumulation below adds +0 for them.
  Real inv_sum[R];
  for (int r = 0; r < R; ++r) {
    Real* sr = scores + static_cast<size_t>(r) * T;
    const int len = t0 + r + 1;
    Real max_score = -std::numeric_limits<Real>::infinity();
    for (int j = 0; j < len; ++j) {
      sr[j] *= scale;
      max_score = std::max(max_score, sr[j]);
    }
    Real sum_exp = 0;
    for (int j = 0; j < len; ++j) {
      sr[j] = std::exp(sr[j] - max_score);  // unnormalised probability
      sum_exp += sr[j];
    }
    for (int j = len; j < n; ++j) sr[j] = 0;
    inv_sum[r] = Real(1) / sum_exp;
    lse[s.lse_index(b, h, t0 + r)] = max_score + std::log(sum_exp);
  }

  std::fill_n(acc, static_cast<size_t>(R) * hd, Real(0));
  for (int j = 0; j < n; ++j) {
    const Real* __restrict v_row = v + s.kv_row(b, j, kvh);
    if constexpr (R == kRowBlock) {
      const Real p0 = scores[j] * inv_sum[0], p1 = scores[T + j] * inv_sum[1],
                 p2 = scores[2 * T + j] * inv_sum[2], p3 = scores[3 * T + j] * inv_sum[3];
      Real* __restrict a0 = acc;
      Real* __restrict a1 = acc + hd;
      Real* __restrict a2 = acc + 2 * hd;
      Real* __restrict a3 = acc + 3 * hd;
      for (int d = 0; d < hd; ++d) {
        const Real vd = v_row[d];
        a0[d] += p0 * vd;
        a1[d] += p1 * vd;
        a2[d] += p2 * vd;
        a3[d] += p3 * vd;
      }
    } else {
      for (int r = 0; r < R; ++r) {
        const Real p = scores[static_cast<size_t>(r) * T + j] * inv_sum[r];
        Real* __restrict a = acc + static_cast<size_t>(r) * hd;
        for (int d = 0; d < hd; ++d) a[d] += p * v_row[d];
      }
    }
  }
  for (int r = 0; r < R; ++r)
    std::copy_n(acc + static_cast<size_t>(r) * hd, hd, out + s.q_row(b, t0 + r, h));
}

// Gradients from query rows t0..t0+R-1 of head h (see attention_kv_head_backward).
// dk_acc, dv_acc: (T, hd) accumulators of the kv head; kt, vt: K and V transposed (hd, T).
template <int R, typename Real>
void attention_rows_backward(Real* dq, Real* dk_acc, Real* dv_acc, const Real* dout,
                             const Real* q, const Real* k, const Real* out, const Real* lse,
                             const Real* kt, const Real* vt, const AttentionShape& s, int b,
                             int h, int t0, Real* p_buf, Real* dp_buf, Real* dq_acc) {
  const Real scale = Real(1) / std::sqrt(Real(s.hd));
  const int kvh = h / s.group();
  const int T = s.T, hd = s.hd;
  const int n = t0 + R;
  const Real* q_rows[R];
  const Real* dout_rows[R];
  for (int r = 0; r < R; ++r) {
    q_rows[r] = q + s.q_row(b, t0 + r, h);
    dout_rows[r] = dout + s.q_row(b, t0 + r, h);
  }
  block_scores<R>(p_buf, q_rows, kt, n, T, hd);      // q·k_j
  block_scores<R>(dp_buf, dout_rows, vt, n, T, hd);  // dp_j = dout·v_j
  // p_buf becomes p_j, dp_buf becomes scale·ds_j; both exactly 0 beyond the causal limit.
  for (int r = 0; r < R; ++r) {
    Real* pr = p_buf + static_cast<size_t>(r) * T;
    Real* dsr = dp_buf + static_cast<size_t>(r) * T;
    const int len = t0 + r + 1;
    const Real row_lse = lse[s.lse_index(b, h, t0 + r)];
    const Real D = dot(dout_rows[r], out + s.q_row(b, t0 + r, h), hd);
    for (int j = 0; j < len; ++j) {
      const Real p = std::exp(pr[j] * scale - row_lse);
      const Real ds = p * (dsr[j] - D);
      pr[j] = p;
      dsr[j] = scale * ds;
    }
    for (int j = len; j < n; ++j) pr[j] = dsr[j] = 0;
  }
  std::fill_n(dq_acc, static_cast<size_t>(R) * hd, Real(0));
  for (int j = 0; j < n; ++j) {
    const Real* __restrict k_row = k + s.kv_row(b, j, kvh);
    Real* __restrict dk_row = dk_acc + static_cast<size_t>(j) * hd;
    Real* __restrict dv_row = dv_acc + static_cast<size_t>(j) * hd;
    if constexpr (R == kRowBlock) {
      // The four rows' updates of dv_j and dk_j are added in row order, as in the loop below.
      const Real p0 = p_buf[j], p1 = p_buf[T + j], p2 = p_buf[2 * T + j], p3 = p_buf[3 * T + j];
      const Real c0 = dp_buf[j], c1 = dp_buf[T + j], c2 = dp_buf[2 * T + j],
                 c3 = dp_buf[3 * T + j];
      const Real* __restrict o0 = dout_rows[0];
      const Real* __restrict o1 = dout_rows[1];
      const Real* __restrict o2 = dout_rows[2];
      const Real* __restrict o3 = dout_rows[3];
      const Real* __restrict q0 = q_rows[0];
      const Real* __restrict q1 = q_rows[1];
      const Real* __restrict q2 = q_rows[2];
      const Real* __restrict q3 = q_rows[3];
      Real* __restrict dq0 = dq_acc;
      Real* __restrict dq1 = dq_acc + hd;
      Real* __restrict dq2 = dq_acc + 2 * hd;
      Real* __restrict dq3 = dq_acc + 3 * hd;
      for (int d = 0; d < hd; ++d)
        dv_row[d] = dv_row[d] + p0 * o0[d] + p1 * o1[d] + p2 * o2[d] + p3 * o3[d];
      for (int d = 0; d < hd; ++d)
        dk_row[d] = dk_row[d] + c0 * q0[d] + c1 * q1[d] + c2 * q2[d] + c3 * q3[d];
      for (int d = 0; d < hd; ++d) {
        const Real kd = k_row[d];
        dq0[d] += c0 * kd;
        dq1[d] += c1 * kd;
        dq2[d] += c2 * kd;
        dq3[d] += c3 * kd;
      }
    } else {
      for (int r = 0; r < R; ++r) {
        const Real p = p_buf[static_cast<size_t>(r) * T + j];
        const Real c = dp_buf[static_cast<size_t>(r) * T + j];
        const Real* __restrict dout_row = dout_rows[r];
        const Real* __restrict q_row = q_rows[r];
        Real* __restrict dq_row = dq_acc + static_cast<size_t>(r) * hd;
        for (int d = 0; d < hd; ++d) {
          dv_row[d] += p * dout_row[d];
          dq_row[d] += c * k_row[d];
          dk_row[d] += c * q_row[d];
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    std::copy_n(dq_acc + static_cast<size_t>(r) * hd, hd, dq + s.q_row(b, t0 + r, h));
}

// Per-thread scratch of the attention kernels.
template <typename Real>
struct AttentionScratch {
  std::vector<Real> kt, vt, a, b, acc, dk, dv;
  explicit AttentionScratch(const AttentionShape& s) {
    const size_t T = static_cast<size_t>(s.T), hd = static_cast<size_t>(s.hd);
    kt.resize(hd * T);
    vt.resize(hd * T);
    a.resize(kRowBlock * T);
    b.resize(kRowBlock * T);
    acc.resize(kRowBlock * hd);
    dk.resize(T * hd);
    dv.resize(T * hd);
  }
};

// All gradients of one (batch, kv head) pair: its dk/dv rows and the dq rows of the query
// heads in its group. Every output element is owned by exactly one pair, so pairs run in
// parallel without atomics and each sum has a fixed order (deterministic).
//
// With p_j = softmax(scale·q·k_j) and D = Σ_d dout·out (= Σ_j p_j dp_j):
//   dv_j += p_j dout;  dp_j = dout·v_j;  ds_j = p_j (dp_j - D);
//   dq += scale Σ_j ds_j k_j;  dk_j += scale ds_j q.
template <typename Real>
void attention_kv_head_backward(Real* dq, Real* dk, Real* dv, const Real* dout, const Real* q,
                                const Real* k, const Real* v, const Real* out, const Real* lse,
                                const AttentionShape& s, int b, int kvh,
                                AttentionScratch<Real>& w) {
  const size_t hd = static_cast<size_t>(s.hd);
  gather_transposed(w.kt.data(), k, s, b, kvh);
  gather_transposed(w.vt.data(), v, s, b, kvh);
  std::fill(w.dk.begin(), w.dk.end(), Real(0));
  std::fill(w.dv.begin(), w.dv.end(), Real(0));
  for (int h = kvh * s.group(); h < (kvh + 1) * s.group(); ++h) {
    int t0 = 0;
    for (; t0 + kRowBlock <= s.T; t0 += kRowBlock)
      attention_rows_backward<kRowBlock>(dq, w.dk.data(), w.dv.data(), dout, q, k, out, lse,
                                         w.kt.data(), w.vt.data(), s, b, h, t0, w.a.data(),
                                         w.b.data(), w.acc.data());
    for (; t0 < s.T; ++t0)
      attention_rows_backward<1>(dq, w.dk.data(), w.dv.data(), dout, q, k, out, lse,
                                 w.kt.data(), w.vt.data(), s, b, h, t0, w.a.data(), w.b.data(),
                                 w.acc.data());
  }
  for (int t = 0; t < s.T; ++t) {
    std::copy_n(w.dk.data() + t * hd, hd, dk + s.kv_row(b, t, kvh));
    std::copy_n(w.dv.data() + t * hd, hd, dv + s.kv_row(b, t, kvh));
  }
}

}  // namespace detail

// q, out: (B,T,NH,hd); k, v: (B,T,NKV,hd); lse: (B,NH,T). NH must be a multiple of NKV.
template <typename Real>
void attention_forward(Real* out, Real* lse, const Real* q, const Real* k, const Real* v, int B,
                       int T, int NH, int NKV, int hd) {
  const detail::AttentionShape shape{B, T, NH, NKV, hd};
#pragma omp parallel
  {
    detail::AttentionScratch<Real> w(shape);  // per-thread
    int cached_b = -1, cached_kvh = -1;      // kt holds K of this (b, kv head)
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < NH; ++h) {
        const int kvh = h / shape.group();
        if (b != cached_b || kvh != cached_kvh) {
          detail::gather_transposed(w.kt.data(), k, shape, b, kvh);
          cached_b = b;
          cached_kvh = kvh;
        }
        int t0 = 0;
        for (; t0 + detail::kRowBlock <= T; t0 += detail::kRowBlock)
          detail::attention_rows_forward<detail::kRowBlock>(out, lse, q, v, w.kt.data(), shape,
                                                            b, h, t0, w.a.data(), w.acc.data());
        for (; t0 < T; ++t0)
          detail::attention_rows_forward<1>(out, lse, q, v, w.kt.data(), shape, b, h, t0,
                                            w.a.data(), w.acc.data());
      }
  }
}

// dq: (B,T,NH,hd); dk, dv: (B,T,NKV,hd); all three overwritten.
template <typename Real>
void attention_backward(Real* dq, Real* dk, Real* dv, const Real* dout, const Real* q,
                        const Real* k, const Real* v, const Real* out, const Real* lse, int B,
                        int T, int NH, int NKV, int hd) {
  const detail::AttentionShape shape{B, T, NH, NKV, hd};
#pragma omp parallel
  {
    detail::AttentionScratch<Real> w(shape);  // per-thread
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int kvh = 0; kvh < NKV; ++kvh)
        detail::attention_kv_head_backward(dq, dk, dv, dout, q, k, v, out, lse, shape, b, kvh, w);
  }
}

}  // namespace loco::ops
