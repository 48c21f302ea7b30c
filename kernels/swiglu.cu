// SwiGLU gate: out = silu(gate) * up, silu(x) = x * sigmoid(x); flat (N,F) = n elements.
// bf16 in/out, fp32 math. Backward: dgate = dout*up*sig*(1 + x*(1-sig)), dup = dout*silu(x);
// dgate/dup may alias dout (each thread reads its element before writing it).
// Launch: grid-stride, 256 threads, up to 8192 blocks.
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

}  // namespace

extern "C" cudaError_t loco_swiglu_forward(bf16* out, const bf16* gate, const bf16* up, size_t n,
                                           cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  swiglu_forward_kernel<<<grid_for(n, 256), 256, 0, s>>>(out, gate, up, n);
  return cudaGetLastError();
}

extern "C" cudaError_t loco_swiglu_backward(bf16* dgate, bf16* dup, const bf16* dout,
                                            const bf16* gate, const bf16* up, size_t n,
                                            cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  swiglu_backward_kernel<<<grid_for(n, 256), 256, 0, s>>>(dgate, dup, dout, gate, up, n);
  return cudaGetLastError();
}
