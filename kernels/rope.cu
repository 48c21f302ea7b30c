// Rotary embedding, Hugging Face rotate-half convention. x, out: (B,T,H,hd), hd even.
// For i < hd/2: a = t * theta^(-2i/hd) (double precision, like the CPU reference's tables),
//   out[i]      = x[i]*cos(a)      - x[i+hd/2]*sin(a)
//   out[i+hd/2] = x[i+hd/2]*cos(a) + x[i]*sin(a)
// direction -1 rotates by -a (backward). One thread per (b, t, i) computes the angle once and
// rotates that pair in all H heads; each thread reads both elements of a pair before writing
// them, so out may alias x.
// Launch: grid-stride over B*T*(hd/2) items, 256 threads, up to 8192 blocks.
// Vector path (hd % 16 == 0, out and x 16-byte aligned): one thread per (b, t, 8 consecutive
// i), the same double-precision angles, uint4 (8 bf16) loads/stores of both halves per head.
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

__global__ void rope_kernel(bf16* out, const bf16* x, int B, int T, int H, int hd, double theta,
                            int direction) {
  const int half = hd / 2;
  const size_t items = static_cast<size_t>(B) * T * half;
  for (size_t it = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; it < items;
       it += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(it % half);
    const size_t bt = it / half;  // b*T + t
    const int t = static_cast<int>(bt % T);
    const double inv_freq = pow(theta, -2.0 * i / hd);
    double sd, cd;
    sincos(static_cast<double>(t) * inv_freq, &sd, &cd);
    const float c = static_cast<float>(cd);
    const float sn = static_cast<float>(direction * sd);
    for (int h = 0; h < H; ++h) {
      const size_t head = (bt * H + h) * static_cast<size_t>(hd);
      const float x1 = to_f(x[head + i]);
      const float x2 = to_f(x[head + i + half]);
      out[head + i] = to_bf(x1 * c - x2 * sn);
      out[head + i + half] = to_bf(x2 * c + x1 * sn);
    }
  }
}

__global__ void rope_vec_kernel(bf16* out, const bf16* x, int B, int T, int H, int hd, double theta,
                                int direction) {
  const int half = hd / 2;
  const int half8 = half / 8;
  const size_t items = static_cast<size_t>(B) * T * half8;
  for (size_t it = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; it < items;
       it += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int i0 = static_cast<int>(it % half8) * 8;
    const size_t bt = it / half8;  // b*T + t
    const int t = static_cast<int>(bt % T);
    float c[8], sn[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const double inv_freq = pow(theta, -2.0 * (i0 + k) / hd);
      double sd, cd;
      sincos(static_cast<double>(t) * inv_freq, &sd, &cd);
      c[k] = static_cast<float>(cd);
      sn[k] = static_cast<float>(direction * sd);
    }
    // Heads in groups of 4: all loads of a group are issued before its stores (out may alias
    // x, so the compiler cannot hoist the next head's loads above this head's stores).
    constexpr int kHeads = 4;
    for (int h0 = 0; h0 < H; h0 += kHeads) {
      uint4 a[kHeads], b[kHeads];
#pragma unroll
      for (int j = 0; j < kHeads; ++j) {
        if (h0 + j < H) {
          const size_t head = (bt * H + h0 + j) * static_cast<size_t>(hd);
          a[j] = *reinterpret_cast<const uint4*>(x + head + i0);
          b[j] = *reinterpret_cast<const uint4*>(x + head + i0 + half);
        }
      }
#pragma unroll
      for (int j = 0; j < kHeads; ++j) {
        if (h0 + j < H) {
          const size_t head = (bt * H + h0 + j) * static_cast<size_t>(hd);
          float x1[8], x2[8], y1[8], y2[8];
          unpack8(a[j], x1);
          unpack8(b[j], x2);
#pragma unroll
          for (int k = 0; k < 8; ++k) {
            y1[k] = x1[k] * c[k] - x2[k] * sn[k];
            y2[k] = x2[k] * c[k] + x1[k] * sn[k];
          }
          store8(out + head + i0, y1);
          store8(out + head + i0 + half, y2);
        }
      }
    }
  }
}

}  // namespace

extern "C" cudaError_t loco_rope(bf16* out, const bf16* x, int B, int T, int H, int hd, float theta,
                                 int direction, cudaStream_t s) {
  if (B <= 0 || T <= 0 || H <= 0 || hd < 2) return cudaSuccess;
  if (hd % 16 == 0 && vector_path_ok(out) && vector_path_ok(x)) {
    const size_t items8 = static_cast<size_t>(B) * T * (hd / 16);
    rope_vec_kernel<<<grid_for(items8, 256), 256, 0, s>>>(out, x, B, T, H, hd,
                                                          static_cast<double>(theta), direction);
    return cudaGetLastError();
  }
  const size_t items = static_cast<size_t>(B) * T * (hd / 2);
  rope_kernel<<<grid_for(items, 256), 256, 0, s>>>(out, x, B, T, H, hd, static_cast<double>(theta),
                                                   direction);
  return cudaGetLastError();
}
