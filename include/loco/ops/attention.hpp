// Causal grouped-query attention (Llama 2/3): NH query heads share NKV key/value heads,
// query head h reading kv head h / (NH/NKV). Scores are scaled by 1/sqrt(hd).
//
// The forward keeps only out and lse (the log-sum-exp of each row's scaled scores); the
// backward recomputes every probability as exp(score - lse). Memory is O(B·NH·T) instead of
// the O(B·NH·T²) of a stored attention matrix, and it is exactly what FlashAttention keeps,
// so the CUDA backend can be checked against these two outputs.
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

// One query row (b, h, t): softmax over keys 0..t, out = Σ p_j v_j. scores: scratch of >= T.
template <typename Real>
void attention_row_forward(Real* out, Real* lse, const Real* q, const Real* k, const Real* v,
                           const AttentionShape& s, int b, int h, int t, Real* scores) {
  const Real scale = Real(1) / std::sqrt(Real(s.hd));
  const int kvh = h / s.group();
  const Real* q_row = q + s.q_row(b, t, h);

  Real max_score = -std::numeric_limits<Real>::infinity();
  for (int j = 0; j <= t; ++j) {
    scores[j] = dot(q_row, k + s.kv_row(b, j, kvh), s.hd) * scale;
    max_score = std::max(max_score, scores[j]);
  }
  Real sum_exp = 0;
  for (int j = 0; j <= t; ++j) {
    scores[j] = std::exp(scores[j] - max_score);  // unnormalised probability
    sum_exp += scores[j];
  }

  Real* out_row = out + s.q_row(b, t, h);
  std::fill(out_row, out_row + s.hd, Real(0));
  const Real inv_sum = Real(1) / sum_exp;
  for (int j = 0; j <= t; ++j) {
    const Real p = scores[j] * inv_sum;
    const Real* v_row = v + s.kv_row(b, j, kvh);
    for (int d = 0; d < s.hd; ++d) out_row[d] += p * v_row[d];
  }
  lse[s.lse_index(b, h, t)] = max_score + std::log(sum_exp);
}

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
                                const AttentionShape& s, int b, int kvh) {
  const Real scale = Real(1) / std::sqrt(Real(s.hd));
  for (int t = 0; t < s.T; ++t) {
    std::fill_n(dk + s.kv_row(b, t, kvh), s.hd, Real(0));
    std::fill_n(dv + s.kv_row(b, t, kvh), s.hd, Real(0));
  }
  for (int h = kvh * s.group(); h < (kvh + 1) * s.group(); ++h) {
    for (int t = 0; t < s.T; ++t) {
      const Real* q_row = q + s.q_row(b, t, h);
      const Real* dout_row = dout + s.q_row(b, t, h);
      Real* dq_row = dq + s.q_row(b, t, h);
      std::fill_n(dq_row, s.hd, Real(0));
      const Real row_lse = lse[s.lse_index(b, h, t)];
      const Real D = dot(dout_row, out + s.q_row(b, t, h), s.hd);
      for (int j = 0; j <= t; ++j) {
        const Real* k_row = k + s.kv_row(b, j, kvh);
        const Real* v_row = v + s.kv_row(b, j, kvh);
        Real* dk_row = dk + s.kv_row(b, j, kvh);
        Real* dv_row = dv + s.kv_row(b, j, kvh);
        const Real p = std::exp(dot(q_row, k_row, s.hd) * scale - row_lse);
        const Real ds = p * (dot(dout_row, v_row, s.hd) - D);
        for (int d = 0; d < s.hd; ++d) {
          dv_row[d] += p * dout_row[d];
          dq_row[d] += scale * ds * k_row[d];
          dk_row[d] += scale * ds * q_row[d];
        }
      }
    }
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
    std::vector<Real> scores(static_cast<size_t>(T));  // per-thread row scratch
#pragma omp for collapse(3)
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < NH; ++h)
        for (int t = 0; t < T; ++t)
          detail::attention_row_forward(out, lse, q, k, v, shape, b, h, t, scores.data());
  }
}

// dq: (B,T,NH,hd); dk, dv: (B,T,NKV,hd); all three overwritten.
template <typename Real>
void attention_backward(Real* dq, Real* dk, Real* dv, const Real* dout, const Real* q,
                        const Real* k, const Real* v, const Real* out, const Real* lse, int B,
                        int T, int NH, int NKV, int hd) {
  const detail::AttentionShape shape{B, T, NH, NKV, hd};
#pragma omp parallel for collapse(2)
  for (int b = 0; b < B; ++b)
    for (int kvh = 0; kvh < NKV; ++kvh)
      detail::attention_kv_head_backward(dq, dk, dv, dout, q, k, v, out, lse, shape, b, kvh);
}

}  // namespace loco::ops
