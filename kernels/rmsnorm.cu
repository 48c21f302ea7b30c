// RMSNorm, bf16 in/out, fp32 math.  in, out, din, dout: (N,C); weight (C) bf16;
// rstd (N) f32; dweight (C) f32.
// forward:  one warp per row (8 rows per 256-thread block, grid-stride over rows):
//           rstd = 1/sqrt(mean(x²) + eps), out = x * rstd * w.
// backward: G = min(N, 256) blocks of 256 threads, block g owns rows g, g+G, ...; the whole
//           block works on one row at a time (block reduction of Σ g·x, g = dout*w), adds
//           din += r*g - x*r³/C*Σ(g·x), and keeps its Σ_rows dout*x*r per column in shared
//           memory (C floats, each column owned by one thread: no races). The G partial rows
//           go to scratch (G,C); a second kernel adds them into dweight in fixed order
//           (deterministic).
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

constexpr int kBlock = 256;
constexpr int kMaxPartials = 256;

__global__ void rmsnorm_forward_kernel(bf16* __restrict__ out, float* __restrict__ rstd,
                                       const bf16* __restrict__ in, const bf16* __restrict__ w,
                                       int N, int C, float eps) {
  const int lane = threadIdx.x & 31;
  const int warps = blockDim.x >> 5;
  for (int row = blockIdx.x * warps + (threadIdx.x >> 5); row < N; row += gridDim.x * warps) {
    const bf16* x = in + static_cast<size_t>(row) * C;
    float ss = 0.f;
    for (int c = lane; c < C; c += 32) {
      const float v = to_f(x[c]);
      ss += v * v;
    }
    ss = warp_sum(ss);
    const float r = rsqrtf(ss / static_cast<float>(C) + eps);
    bf16* y = out + static_cast<size_t>(row) * C;
    for (int c = lane; c < C; c += 32) y[c] = to_bf(to_f(x[c]) * r * to_f(w[c]));
    if (lane == 0) rstd[row] = r;
  }
}

// dynamic shared memory: C floats (this block's dweight partial).
__global__ void rmsnorm_backward_kernel(bf16* din, float* __restrict__ partial,
                                        const bf16* __restrict__ dout, const bf16* __restrict__ in,
                                        const bf16* __restrict__ w, const float* __restrict__ rstd,
                                        int N, int C) {
  extern __shared__ float dw[];
  __shared__ float red[32];
  for (int c = threadIdx.x; c < C; c += blockDim.x) dw[c] = 0.f;
  for (int row = blockIdx.x; row < N; row += gridDim.x) {  // uniform across the block
    const size_t base = static_cast<size_t>(row) * C;
    const float r = rstd[row];
    float dot = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
      dot += to_f(dout[base + c]) * to_f(w[c]) * to_f(in[base + c]);
    dot = block_sum(dot, red);
    const float through_rstd = dot * r * r * r / static_cast<float>(C);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float g = to_f(dout[base + c]);
      const float x = to_f(in[base + c]);
      din[base + c] = to_bf(to_f(din[base + c]) + (g * to_f(w[c]) * r - x * through_rstd));
      dw[c] += g * x * r;
    }
  }
  // Each thread wrote only its own columns of dw: no barrier needed before reading them.
  for (int c = threadIdx.x; c < C; c += blockDim.x)
    partial[static_cast<size_t>(blockIdx.x) * C + c] = dw[c];
}

// dweight[c] += Σ_{g<G} partial[g][c], in order g = 0, 1, ... (one thread per column).
__global__ void column_sum_kernel(float* __restrict__ dweight, const float* __restrict__ partial,
                                  int G, int C) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x) {
    float s = 0.f;
    for (int g = 0; g < G; ++g) s += partial[static_cast<size_t>(g) * C + c];
    dweight[c] += s;
  }
}

int num_partials(int N) { return N < kMaxPartials ? N : kMaxPartials; }

}  // namespace

extern "C" cudaError_t loco_rmsnorm_forward(bf16* out, float* rstd, const bf16* in,
                                            const bf16* weight, int N, int C, float eps,
                                            cudaStream_t s) {
  if (N <= 0 || C <= 0) return cudaSuccess;
  const int rows_per_block = kBlock / 32;
  rmsnorm_forward_kernel<<<grid_for(N, rows_per_block, 65535), kBlock, 0, s>>>(out, rstd, in,
                                                                             weight, N, C, eps);
  return cudaGetLastError();
}

extern "C" size_t loco_rmsnorm_backward_scratch(int N, int C) {
  if (N <= 0 || C <= 0) return 0;
  return static_cast<size_t>(num_partials(N)) * static_cast<size_t>(C);
}

extern "C" cudaError_t loco_rmsnorm_backward(bf16* din, float* dweight, const bf16* dout,
                                             const bf16* in, const bf16* weight,
                                             const float* rstd, int N, int C, float* scratch,
                                             cudaStream_t s) {
  if (N <= 0 || C <= 0) return cudaSuccess;
  const int G = num_partials(N);
  const size_t smem = static_cast<size_t>(C) * sizeof(float);
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(
        rmsnorm_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  rmsnorm_backward_kernel<<<G, kBlock, smem, s>>>(din, scratch, dout, in, weight, rstd, N, C);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  column_sum_kernel<<<grid_for(C, kBlock, 1024), kBlock, 0, s>>>(dweight, scratch, G, C);
  return cudaGetLastError();
}
