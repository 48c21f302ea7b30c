// Rotary position embedding, Hugging Face "rotate half" convention: channel i is paired with
// channel i + hd/2 (not with its neighbour, as in the original paper / Meta's checkpoints).
#pragma once
#include <cmath>
#include <cstddef>
#include <vector>

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
#pragma omp parallel for
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < half; ++i) {
      const double angle = t * std::pow(theta, -2.0 * i / hd);
      tables.cos[static_cast<size_t>(t) * half + i] = std::cos(angle);
      tables.sin[static_cast<size_t>(t) * half + i] = std::sin(angle);
    }
  }
  return tables;
}

// Rotates every (x[i], x[i+hd/2]) pair by +a (direction = 1) or -a (direction = -1).
// Both inputs of a pair are read before either output is written, so out may alias x.
template <typename Real>
void rope_rotate(Real* out, const Real* x, int B, int T, int H, int hd, double theta,
                 int direction) {
  const int half = hd / 2;
  const RopeTables tables = rope_tables(T, hd, theta);
#pragma omp parallel for collapse(2)
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const double* cos_t = tables.cos.data() + static_cast<size_t>(t) * half;
      const double* sin_t = tables.sin.data() + static_cast<size_t>(t) * half;
      for (int h = 0; h < H; ++h) {
        const size_t head = ((static_cast<size_t>(b) * T + t) * H + h) * hd;
        for (int i = 0; i < half; ++i) {
          const Real c = static_cast<Real>(cos_t[i]);
          const Real s = static_cast<Real>(direction * sin_t[i]);
          const Real x1 = x[head + i];
          const Real x2 = x[head + i + half];
          out[head + i] = x1 * c - x2 * s;
          out[head + i + half] = x2 * c + x1 * s;
        }
      }
    }
  }
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
