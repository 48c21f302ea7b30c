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
// Vector path (C % 8 == 0, C <= 1024, in/out/din/dout/weight 16-byte aligned; otherwise the
// scalar kernels above):
//   forward:  one warp per row, the row held in registers as uint4 (8 bf16) vectors, lane l
//             owning vectors l, l+32, ... (VPL = ceil(C/256) per lane, templated 1..4).
//   backward: one warp per row (8 rows per 256-thread block, grid-stride over rows, at most
//             kVecPartials blocks); dout, in, din and weight are loaded once as uint4 into
//             registers, din is written back in one pass. Each lane keeps Σ_rows dout*x*r for
//             its own columns in registers; at the end the 8 warps are summed in fixed order
//             through shared memory into the block's partial row, and column_sum_vec_kernel
//             adds the G partials into dweight (32 columns x 16 row-groups per block, fixed
//             order: deterministic).
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

constexpr int kBlock = 256;
constexpr int kMaxPartials = 256;
constexpr int kVecPartials = 512;
constexpr int kVecMaxC = 1024;  // 4 uint4 per lane
constexpr int kVecWarps = kBlock / 32;

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

template <int VPL>
__global__ void rmsnorm_forward_vec_kernel(bf16* __restrict__ out, float* __restrict__ rstd,
                                           const bf16* __restrict__ in, const bf16* __restrict__ w,
                                           int N, int C, float eps) {
  const int lane = threadIdx.x & 31;
  const int warps = blockDim.x >> 5;
  const int C8 = C / 8;
  for (int row = blockIdx.x * warps + (threadIdx.x >> 5); row < N; row += gridDim.x * warps) {
    const bf16* x = in + static_cast<size_t>(row) * C;
    uint4 xv[VPL];
#pragma unroll
    for (int j = 0; j < VPL; ++j) {
      const int v = lane + 32 * j;
      if (v < C8) xv[j] = reinterpret_cast<const uint4*>(x)[v];
    }
    float ss = 0.f;
#pragma unroll
    for (int j = 0; j < VPL; ++j) {
      const int v = lane + 32 * j;
      if (v < C8) {
        float f[8];
        unpack8(xv[j], f);
#pragma unroll
        for (int k = 0; k < 8; ++k) ss += f[k] * f[k];
      }
    }
    ss = warp_sum(ss);
    const float r = rsqrtf(ss / static_cast<float>(C) + eps);
    bf16* y = out + static_cast<size_t>(row) * C;
#pragma unroll
    for (int j = 0; j < VPL; ++j) {
      const int v = lane + 32 * j;
      if (v < C8) {
        float f[8], wf[8];
        unpack8(xv[j], f);
        load8(w + 8 * v, wf);
#pragma unroll
        for (int k = 0; k < 8; ++k) f[k] = f[k] * r * wf[k];
        store8(y + 8 * v, f);
      }
    }
    if (lane == 0) rstd[row] = r;
  }
}

// dynamic shared memory: kVecWarps * C floats. partial: gridDim.x rows of C floats.
template <int VPL>
__global__ void rmsnorm_backward_vec_kernel(bf16* din, float* __restrict__ partial,
                                            const bf16* __restrict__ dout,
                                            const bf16* __restrict__ in, const bf16* __restrict__ w,
                                            const float* __restrict__ rstd, int N, int C) {
  extern __shared__ float dws[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int C8 = C / 8;
  float wf[VPL][8], acc[VPL][8];
#pragma unroll
  for (int j = 0; j < VPL; ++j) {
    const int v = lane + 32 * j;
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[j][k] = 0.f;
    if (v < C8) {
      load8(w + 8 * v, wf[j]);
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k) wf[j][k] = 0.f;
    }
  }
  for (int row = blockIdx.x * kVecWarps + warp; row < N; row += gridDim.x * kVecWarps) {
    const size_t base = static_cast<size_t>(row) * C;
    const float r = rstd[row];
    uint4 gv[VPL], xv[VPL], dv[VPL];
#pragma unroll
    for (int j = 0; j < VPL; ++j) {
      const int v = lane + 32 * j;
      if (v < C8) {
        gv[j] = reinterpret_cast<const uint4*>(dout + base)[v];
        xv[j] = reinterpret_cast<const uint4*>(in + base)[v];
        dv[j] = reinterpret_cast<const uint4*>(din + base)[v];
      }
    }
    float dot = 0.f;
#pragma unroll
    for (int j = 0; j < VPL; ++j) {
      const int v = lane + 32 * j;
      if (v < C8) {
        float g[8], x[8];
        unpack8(gv[j], g);
        unpack8(xv[j], x);
#pragma unroll
        for (int k = 0; k < 8; ++k) dot += g[k] * wf[j][k] * x[k];
      }
    }
    dot = warp_sum(dot);
    const float through_rstd = dot * r * r * r / static_cast<float>(C);
#pragma unroll
    for (int j = 0; j < VPL; ++j) {
      const int v = lane + 32 * j;
      if (v < C8) {
        float g[8], x[8], d[8];
        unpack8(gv[j], g);
        unpack8(xv[j], x);
        unpack8(dv[j], d);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          d[k] = d[k] + (g[k] * wf[j][k] * r - x[k] * through_rstd);
          acc[j][k] += g[k] * x[k] * r;
        }
        reinterpret_cast<uint4*>(din + base)[v] = pack8(d);
      }
    }
  }
  // Warp partials to shared memory, then the 8 warps summed per column in fixed order.
  float* mine = dws + static_cast<size_t>(warp) * C;
#pragma unroll
  for (int j = 0; j < VPL; ++j) {
    const int v = lane + 32 * j;
    if (v < C8) {
#pragma unroll
      for (int k = 0; k < 8; ++k) mine[8 * v + k] = acc[j][k];
    }
  }
  __syncthreads();
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float t = 0.f;
    for (int q = 0; q < kVecWarps; ++q) t += dws[static_cast<size_t>(q) * C + c];
    partial[static_cast<size_t>(blockIdx.x) * C + c] = t;
  }
}

constexpr int kColX = 32, kColY = 16;

// dweight[c] += Σ_{g<G} partial[g][c]. Block (32, 16): column blockIdx.x*32 + tx; thread row
// ty sums g = ty, ty+16, ... in order, then the 16 sums are added in order ty = 0..15.
__global__ void column_sum_vec_kernel(float* __restrict__ dweight,
                                      const float* __restrict__ partial, int G, int C) {
  __shared__ float red[kColY][kColX];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * kColX + tx;
  float s = 0.f;
  if (c < C) {
#pragma unroll 4
    for (int g = ty; g < G; g += kColY) s += partial[static_cast<size_t>(g) * C + c];
  }
  red[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && c < C) {
    float t = 0.f;
    for (int q = 0; q < kColY; ++q) t += red[q][tx];
    dweight[c] += t;
  }
}

int vec_partials(int N) {
  const int g = (N + kVecWarps - 1) / kVecWarps;
  return g < kVecPartials ? g : kVecPartials;
}

bool rms_vec_ok(int C) { return C % 8 == 0 && C <= kVecMaxC; }
int rms_vpl(int C) { return (C / 8 + 31) / 32; }

}  // namespace

extern "C" cudaError_t loco_rmsnorm_forward(bf16* out, float* rstd, const bf16* in,
                                            const bf16* weight, int N, int C, float eps,
                                            cudaStream_t s) {
  if (N <= 0 || C <= 0) return cudaSuccess;
  const int rows_per_block = kBlock / 32;
  if (rms_vec_ok(C) && vector_path_ok(out) && vector_path_ok(in) && vector_path_ok(weight)) {
    const unsigned grid = grid_for(N, rows_per_block, 65535);
    switch (rms_vpl(C)) {
      case 1:
        rmsnorm_forward_vec_kernel<1><<<grid, kBlock, 0, s>>>(out, rstd, in, weight, N, C, eps);
        break;
      case 2:
        rmsnorm_forward_vec_kernel<2><<<grid, kBlock, 0, s>>>(out, rstd, in, weight, N, C, eps);
        break;
      case 3:
        rmsnorm_forward_vec_kernel<3><<<grid, kBlock, 0, s>>>(out, rstd, in, weight, N, C, eps);
        break;
      default:
        rmsnorm_forward_vec_kernel<4><<<grid, kBlock, 0, s>>>(out, rstd, in, weight, N, C, eps);
        break;
    }
    return cudaGetLastError();
  }
  rmsnorm_forward_kernel<<<grid_for(N, rows_per_block, 65535), kBlock, 0, s>>>(out, rstd, in,
                                                                               weight, N, C, eps);
  return cudaGetLastError();
}

extern "C" size_t loco_rmsnorm_backward_scratch(int N, int C) {
  if (N <= 0 || C <= 0) return 0;
  const int g = num_partials(N) > vec_partials(N) ? num_partials(N) : vec_partials(N);
  return static_cast<size_t>(g) * static_cast<size_t>(C);
}

extern "C" cudaError_t loco_rmsnorm_backward(bf16* din, float* dweight, const bf16* dout,
                                             const bf16* in, const bf16* weight, const float* rstd,
                                             int N, int C, float* scratch, cudaStream_t s) {
  if (N <= 0 || C <= 0) return cudaSuccess;
  if (rms_vec_ok(C) && vector_path_ok(din) && vector_path_ok(dout) && vector_path_ok(in) &&
      vector_path_ok(weight)) {
    const int G = vec_partials(N);
    const size_t sm = static_cast<size_t>(kVecWarps) * C * sizeof(float);  // <= 32 KiB
    switch (rms_vpl(C)) {
      case 1:
        rmsnorm_backward_vec_kernel<1>
            <<<G, kBlock, sm, s>>>(din, scratch, dout, in, weight, rstd, N, C);
        break;
      case 2:
        rmsnorm_backward_vec_kernel<2>
            <<<G, kBlock, sm, s>>>(din, scratch, dout, in, weight, rstd, N, C);
        break;
      case 3:
        rmsnorm_backward_vec_kernel<3>
            <<<G, kBlock, sm, s>>>(din, scratch, dout, in, weight, rstd, N, C);
        break;
      default:
        rmsnorm_backward_vec_kernel<4>
            <<<G, kBlock, sm, s>>>(din, scratch, dout, in, weight, rstd, N, C);
        break;
    }
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    column_sum_vec_kernel<<<(C + kColX - 1) / kColX, dim3(kColX, kColY), 0, s>>>(dweight, scratch,
                                                                                 G, C);
    return cudaGetLastError();
  }
  const int G = num_partials(N);
  const size_t smem = static_cast<size_t>(C) * sizeof(float);
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(rmsnorm_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  rmsnorm_backward_kernel<<<G, kBlock, smem, s>>>(din, scratch, dout, in, weight, rstd, N, C);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  column_sum_kernel<<<grid_for(C, kBlock, 1024), kBlock, 0, s>>>(dweight, scratch, G, C);
  return cudaGetLastError();
}
