// Rotary embedding, Hugging Face rotate-half convention. x, out: (B,T,H,hd), hd even.
// For i < hd/2: a = t * theta^(-2i/hd) (double precision, like the CPU reference's tables),
//   out[i]      = x[i]*cos(a)      - x[i+hd/2]*sin(a)
//   out[i+hd/2] = x[i+hd/2]*cos(a) + x[i]*sin(a)
// direction -1 rotates by -a (backward). One thread per (b, t, i) computes the angle once and
// rotates that pair in all H heads; each thread reads both elements of a pair before writing
// them, so out may alias x.
// Launch: grid-stride over B*T*(hd/2) items, 256 threads, up to 8192 blocks.
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

}  // namespace

extern "C" cudaError_t loco_rope(bf16* out, const bf16* x, int B, int T, int H, int hd,
                                 float theta, int direction, cudaStream_t s) {
  if (B <= 0 || T <= 0 || H <= 0 || hd < 2) return cudaSuccess;
  const size_t items = static_cast<size_t>(B) * T * (hd / 2);
  rope_kernel<<<grid_for(items, 256), 256, 0, s>>>(out, x, B, T, H, hd,
                                                   static_cast<double>(theta), direction);
  return cudaGetLastError();
}
