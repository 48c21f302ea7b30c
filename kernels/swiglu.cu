// SwiGLU gate: out = silu(gate) * up, silu(x) = x * sigmoid(x); flat (N,F) = n elements.
// bf16 in/out, fp32 math. Backward: dgate = dout*up*sig*(1 + x*(1-sig)), dup = dout*silu(x);
// dgate/dup may alias dout (each thread reads its element before writing it).
// Launch: vector path when every pointer is 16-byte aligned: one thread per 8 elements (uint4
// loads/stores, grid-stride, 256 threads), the n % 8 tail by the first threads of block 0.
// Otherwise the scalar grid-stride kernels (256 threads, up to 8192 blocks).
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

// 1/(1+e^-x): e^-x = +inf for very negative x gives a clean 0.
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }

__global__ void swiglu_forward_kernel(bf16* __restrict__ out, const bf16* __restrict__ gate,
                                      const bf16* __restrict__ up, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float x = to_f(gate[i]);
    out[i] = to_bf(x * sigmoid(x) * to_f(up[i]));
  }
}

__global__ void swiglu_backward_kernel(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate,
                                       const bf16* up, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float x = to_f(gate[i]);
    const float u = to_f(up[i]);
    const float g = to_f(dout[i]);
    const float sig = sigmoid(x);
    const float silu = x * sig;
    const float dsilu = sig * (1.f + x * (1.f - sig));
    dgate[i] = to_bf(g * u * dsilu);
    dup[i] = to_bf(g * silu);
  }
}

// n8 = n / 8 vectors; elements [8*n8, n) are the scalar tail (same per-element math).
__global__ void swiglu_forward_vec_kernel(bf16* __restrict__ out, const bf16* __restrict__ gate,
                                          const bf16* __restrict__ up, size_t n8, size_t n) {
  for (size_t v = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; v < n8;
       v += static_cast<size_t>(gridDim.x) * blockDim.x) {
    float x[8], u[8];
    load8(gate + 8 * v, x);
    load8(up + 8 * v, u);
#pragma unroll
    for (int k = 0; k < 8; ++k) x[k] = x[k] * sigmoid(x[k]) * u[k];
    store8(out + 8 * v, x);
  }
  if (blockIdx.x == 0) {
    const size_t i = 8 * n8 + threadIdx.x;
    if (i < n) {
      const float x = to_f(gate[i]);
      out[i] = to_bf(x * sigmoid(x) * to_f(up[i]));
    }
  }
}

__device__ __forceinline__ void swiglu_bwd_one(float g, float x, float u, float& dg, float& du) {
  const float sig = sigmoid(x);
  const float silu = x * sig;
  const float dsilu = sig * (1.f + x * (1.f - sig));
  dg = g * u * dsilu;
  du = g * silu;
}

__global__ void swiglu_backward_vec_kernel(bf16* dgate, bf16* dup, const bf16* dout,
                                           const bf16* gate, const bf16* up, size_t n8, size_t n) {
  for (size_t v = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; v < n8;
       v += static_cast<size_t>(gridDim.x) * blockDim.x) {
    float x[8], u[8], g[8], dg[8], du[8];
    load8(gate + 8 * v, x);
    load8(up + 8 * v, u);
    load8(dout + 8 * v, g);
#pragma unroll
    for (int k = 0; k < 8; ++k) swiglu_bwd_one(g[k], x[k], u[k], dg[k], du[k]);
    store8(dgate + 8 * v, dg);
    store8(dup + 8 * v, du);
  }
  if (blockIdx.x == 0) {
    const size_t i = 8 * n8 + threadIdx.x;
    if (i < n) {
      float dg, du;
      swiglu_bwd_one(to_f(dout[i]), to_f(gate[i]), to_f(up[i]), dg, du);
      dgate[i] = to_bf(dg);
      dup[i] = to_bf(du);
    }
  }
}

}  // namespace

extern "C" cudaError_t loco_swiglu_forward(bf16* out, const bf16* gate, const bf16* up, size_t n,
                                           cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  if (vector_path_ok(out) && vector_path_ok(gate) && vector_path_ok(up)) {
    swiglu_forward_vec_kernel<<<grid_for(n / 8, 256, 132 * 16), 256, 0, s>>>(out, gate, up, n / 8,
                                                                             n);
    return cudaGetLastError();
  }
  swiglu_forward_kernel<<<grid_for(n, 256), 256, 0, s>>>(out, gate, up, n);
  return cudaGetLastError();
}

extern "C" cudaError_t loco_swiglu_backward(bf16* dgate, bf16* dup, const bf16* dout,
                                            const bf16* gate, const bf16* up, size_t n,
                                            cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  if (vector_path_ok(dgate) && vector_path_ok(dup) && vector_path_ok(dout) &&
      vector_path_ok(gate) && vector_path_ok(up)) {
    swiglu_backward_vec_kernel<<<grid_for(n / 8, 256, 132 * 16), 256, 0, s>>>(dgate, dup, dout,
                                                                              gate, up, n / 8, n);
    return cudaGetLastError();
  }
  swiglu_backward_kernel<<<grid_for(n, 256), 256, 0, s>>>(dgate, dup, dout, gate, up, n);
  return cudaGetLastError();
}
