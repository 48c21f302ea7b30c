// Rotary position embedding, Hugging Face "rotate half" convention: channel i is paired with
// channel i + hd/2 (not with its neighbour, as in the original paper / Meta's checkpoints).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "loco/ops/cpu_isa.hpp"

namespace loco::ops {

namespace detail {

// cos/sin of a = t * theta^(-2i/hd) for t < T, i < hd/2, as (T, hd/2) tables. Computed in
// double: for long contexts t*f is large and float rounding of the angle alone would cost
// several ulps in the result.
struct RopeTables {
  std::vector<double> cos;
  std::vector<double> sin;
};

inline RopeTables rope_tables(int T, int hd, double theta) {
  const int half = hd / 2;
  RopeTables tables{std::vector<double>(static_cast<size_t>(T) * half),
                    std::vector<double>(static_cast<size_t>(T) * half)};
#pragma omp parallel for if (static_cast <size_t>(T) * half > 4096)
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < half; ++i) {
      const double angle = t * std::pow(theta, -2.0 * i / hd);
      tables.cos[static_cast<size_t>(t) * half + i] = std::cos(angle);
      tables.sin[static_cast<size_t>(t) * half + i] = std::sin(angle);
    }
  }
  return tables;
}

// The tables rounded to Real, cached per thread for the last (T, hd, theta) asked for: every
// layer's forward and backward use the same ones, so they are computed once, not 4·L times a
// step.
template <typename Real>
struct RopeCache {
  int T = -1, hd = -1;
  double theta = 0;
  std::vector<Real> cos, sin;
};

template <typename Real>
const RopeCache<Real>& rope_cache(int T, int hd, double theta) {
  thread_local RopeCache<Real> cache;
  if (cache.T != T || cache.hd != hd || cache.theta != theta) {
    const RopeTables tables = rope_tables(T, hd, theta);
    cache.cos.assign(tables.cos.begin(), tables.cos.end());  // rounded once, as before
    cache.sin.assign(tables.sin.begin(), tables.sin.end());
    cache.T = T;
    cache.hd = hd;
    cache.theta = theta;
  }
  return cache;
}

// Rows [row_begin, row_end) of the (B·T) positions; each row holds H heads of hd. With
// out == x the rotation is in place (the restrict-qualified variant below would be wrong).
template <typename Real>
void rope_rows(Real* out, const Real* x, const Real* cos, const Real* sin, int T, int H, int hd,
               Real direction, size_t row_begin, size_t row_end) {
  const int half = hd / 2;
  for (size_t row = row_begin; row < row_end; ++row) {
    const size_t t = row % static_cast<size_t>(T);
    const Real* __restrict cos_t = cos + t * half;
    const Real* __restrict sin_t = sin + t * half;
    for (int h = 0; h < H; ++h) {
      const size_t head = (row * H + h) * hd;
      if (out == x) {
        Real* __restrict p1 = out + head;
        Real* __restrict p2 = out + head + half;  // the two halves never overlap
        for (int i = 0; i < half; ++i) {
          const Real c = cos_t[i], s = direction * sin_t[i];
          const Real a = p1[i], b = p2[i];
          p1[i] = a * c - b * s;
          p2[i] = b * c + a * s;
        }
      } else {
        const Real* __restrict x1 = x + head;
        const Real* __restrict x2 = x + head + half;
        Real* __restrict o1 = out + head;
        Real* __restrict o2 = out + head + half;
        for (int i = 0; i < half; ++i) {
          const Real c = cos_t[i], s = direction * sin_t[i];
          const Real a = x1[i], b = x2[i];
          o1[i] = a * c - b * s;
          o2[i] = b * c + a * s;
        }
      }
    }
  }
}

LOCO_ISA_CLONES(rope_rows)

// Rotates every (x[i], x[i+hd/2]) pair by +a (direction = 1) or -a (direction = -1).
// Both inputs of a pair are read before either output is written, so out may alias x.
template <typename Real>
void rope_rotate(Real* out, const Real* x, int B, int T, int H, int hd, double theta,
                 int direction) {
  if (B <= 0 || T <= 0 || H <= 0 || hd <= 0) return;
  const RopeCache<Real>& tables = rope_cache<Real>(T, hd, theta);
  const Real* cos = tables.cos.data();
  const Real* sin = tables.sin.data();
  const size_t row_elems = static_cast<size_t>(H) * hd;
  const size_t rows = std::max<size_t>(1, kElementwiseChunk / row_elems);
  for_chunks(static_cast<size_t>(B) * T, rows, [&](size_t begin, size_t end) {
    LOCO_ISA_CALL(rope_rows, out, x, cos, sin, T, H, hd, static_cast<Real>(direction), begin, end);
  });
}

}  // namespace detail

// x, out: (B,T,H,hd), hd even, positions 0..T-1. For i < hd/2, a = t * theta^(-2i/hd):
//   out[i] = x[i]*cos(a) - x[i+hd/2]*sin(a);  out[i+hd/2] = x[i+hd/2]*cos(a) + x[i]*sin(a)
// out may alias x.
template <typename Real>
void rope_forward(Real* out, const Real* x, int B, int T, int H, int hd, double theta) {
  detail::rope_rotate(out, x, B, T, H, hd, theta, +1);
}

// The rotation is orthogonal, so its gradient is the inverse rotation (angle -a).
// dx may alias dout.
template <typename Real>
void rope_backward(Real* dx, const Real* dout, int B, int T, int H, int hd, double theta) {
  detail::rope_rotate(dx, dout, B, T, H, hd, theta, -1);
}

}  // namespace loco::ops
