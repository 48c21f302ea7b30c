// Residual add fused with the RMSNorm that follows it. bf16 in/out, fp32 math.
//   sum(N,C) = bf16(a + b);  out(N,C) = sum * rstd * w;  rstd(N) f32 = 1/sqrt(mean(sum²) + eps)
// CPU reference: include/loco/ops/add_rmsnorm.hpp (= add, then rmsnorm_forward on the stored
// sum). sum may alias a or b: every element is read before the same thread writes it.
// One warp per row (8 rows per 256-thread block, grid-stride over rows), as rmsnorm_forward:
//   scalar:  lane l takes columns l, l+32, ...: writes the rounded sum, adds its square, then
//            (after the warp sum) normalises the sum it wrote;
//   vector (C % 8 == 0, C <= 1024, all pointers 16-byte aligned, LOCO_VECTOR_KERNELS=1): the
//            row's sum held in registers as uint4 (8 bf16) vectors, lane l owning vectors
//            l, l+32, ... (VPL = ceil(C/256) per lane, templated 1..4).
// Bytes per row: a, b read once, sum and out written once (the unfused pair also re-read the
// sum: 5 passes of N·C bf16 become 4, and one launch instead of two).
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

constexpr int kBlock = 256;
constexpr int kVecMaxC = 1024;

__global__ void add_rmsnorm_kernel(bf16* sum, bf16* __restrict__ out, float* __restrict__ rstd,
                                   const bf16* a, const bf16* b, const bf16* __restrict__ w, int N,
                                   int C, float eps) {
  const int lane = threadIdx.x & 31;
  const int warps = blockDim.x >> 5;
  for (int row = blockIdx.x * warps + (threadIdx.x >> 5); row < N; row += gridDim.x * warps) {
    const size_t base = static_cast<size_t>(row) * C;
    float ss = 0.f;
    for (int c = lane; c < C; c += 32) {
      const bf16 s = to_bf(to_f(a[base + c]) + to_f(b[base + c]));
      sum[base + c] = s;
      const float v = to_f(s);
      ss += v * v;
    }
    ss = warp_sum(ss);
    const float r = rsqrtf(ss / static_cast<float>(C) + eps);
    for (int c = lane; c < C; c += 32) out[base + c] = to_bf(to_f(sum[base + c]) * r * to_f(w[c]));
    if (lane == 0) rstd[row] = r;
  }
}

template <int VPL>
__global__ void add_rmsnorm_vec_kernel(bf16* sum, bf16* __restrict__ out, float* __restrict__ rstd,
                                       const bf16* a, const bf16* b, const bf16* __restrict__ w,
                                       int N, int C, float eps) {
  const int lane = threadIdx.x & 31;
  const int warps = blockDim.x >> 5;
  const int C8 = C / 8;
  for (int row = blockIdx.x * warps + (threadIdx.x >> 5); row < N; row += gridDim.x * warps) {
    const size_t base = static_cast<size_t>(row) * C;
    uint4 sv[VPL];
    float ss = 0.f;
#pragma unroll
    for (int j = 0; j < VPL; ++j) {
      const int v = lane + 32 * j;
      if (v < C8) {
        float x[8], y[8];
        load8(a + base + 8 * v, x);
        load8(b + base + 8 * v, y);
#pragma unroll
        for (int k = 0; k < 8; ++k) x[k] += y[k];
        sv[j] = pack8(x);  // the rounded sum: what is stored and normalised
        reinterpret_cast<uint4*>(sum + base)[v] = sv[j];
        float f[8];
        unpack8(sv[j], f);
#pragma unroll
        for (int k = 0; k < 8; ++k) ss += f[k] * f[k];
      }
    }
    ss = warp_sum(ss);
    const float r = rsqrtf(ss / static_cast<float>(C) + eps);
#pragma unroll
    for (int j = 0; j < VPL; ++j) {
      const int v = lane + 32 * j;
      if (v < C8) {
        float f[8], wf[8];
        unpack8(sv[j], f);
        load8(w + 8 * v, wf);
#pragma unroll
        for (int k = 0; k < 8; ++k) f[k] = f[k] * r * wf[k];
        store8(out + base + 8 * v, f);
      }
    }
    if (lane == 0) rstd[row] = r;
  }
}

}  // namespace

extern "C" cudaError_t loco_add_rmsnorm_forward(bf16* sum, bf16* out, float* rstd, const bf16* a,
                                                const bf16* b, const bf16* weight, int N, int C,
                                                float eps, cudaStream_t s) {
  if (N <= 0 || C <= 0) return cudaSuccess;
  const int rows_per_block = kBlock / 32;
  const unsigned grid = grid_for(N, rows_per_block, 65535);
  if (C % 8 == 0 && C <= kVecMaxC && vector_path_ok(sum) && vector_path_ok(out) &&
      vector_path_ok(a) && vector_path_ok(b) && vector_path_ok(weight)) {
    switch ((C / 8 + 31) / 32) {
      case 1:
        add_rmsnorm_vec_kernel<1><<<grid, kBlock, 0, s>>>(sum, out, rstd, a, b, weight, N, C, eps);
        break;
      case 2:
        add_rmsnorm_vec_kernel<2><<<grid, kBlock, 0, s>>>(sum, out, rstd, a, b, weight, N, C, eps);
        break;
      case 3:
        add_rmsnorm_vec_kernel<3><<<grid, kBlock, 0, s>>>(sum, out, rstd, a, b, weight, N, C, eps);
        break;
      default:
        add_rmsnorm_vec_kernel<4><<<grid, kBlock, 0, s>>>(sum, out, rstd, a, b, weight, N, C, eps);
        break;
    }
    return cudaGetLastError();
  }
  add_rmsnorm_kernel<<<grid, kBlock, 0, s>>>(sum, out, rstd, a, b, weight, N, C, eps);
  return cudaGetLastError();
}
