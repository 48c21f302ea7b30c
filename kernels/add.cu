// Residual add: out(n) = a(n) + b(n), bf16 in/out, fp32 add. out may alias a or b (each
// element is read before it is written by the same thread).
// Launch: vector path when out, a, b are 16-byte aligned: one thread per 8 elements (uint4
// loads/stores, grid-stride, 256 threads), the n % 8 tail by the first threads of block 0.
// Otherwise the scalar grid-stride kernel (256 threads, up to 8192 blocks).
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

__global__ void add_bf16_kernel(bf16* out, const bf16* a, const bf16* b, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = to_bf(to_f(a[i]) + to_f(b[i]));
}

// n8 = n / 8 vectors; elements [8*n8, n) are the scalar tail.
__global__ void add_bf16_vec_kernel(bf16* out, const bf16* a, const bf16* b, size_t n8, size_t n) {
  for (size_t v = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; v < n8;
       v += static_cast<size_t>(gridDim.x) * blockDim.x) {
    float x[8], y[8];
    load8(a + 8 * v, x);
    load8(b + 8 * v, y);
#pragma unroll
    for (int k = 0; k < 8; ++k) x[k] += y[k];
    store8(out + 8 * v, x);
  }
  if (blockIdx.x == 0) {
    const size_t i = 8 * n8 + threadIdx.x;
    if (i < n) out[i] = to_bf(to_f(a[i]) + to_f(b[i]));
  }
}

}  // namespace

extern "C" cudaError_t loco_add_bf16(bf16* out, const bf16* a, const bf16* b, size_t n,
                                     cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  if (vector_path_ok(out) && vector_path_ok(a) && vector_path_ok(b)) {
    const size_t n8 = n / 8;
    add_bf16_vec_kernel<<<grid_for(n8, 256, 132 * 16), 256, 0, s>>>(out, a, b, n8, n);
  } else {
    add_bf16_kernel<<<grid_for(n, 256), 256, 0, s>>>(out, a, b, n);
  }
  return cudaGetLastError();
}
