// Residual add: out(n) = a(n) + b(n), bf16 in/out, fp32 add. out may alias a or b (each
// element is read before it is written by the same thread).
// Launch: grid-stride, 256 threads, up to 8192 blocks.
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

__global__ void add_bf16_kernel(bf16* out, const bf16* a, const bf16* b, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = to_bf(to_f(a[i]) + to_f(b[i]));
}

}  // namespace

extern "C" cudaError_t loco_add_bf16(bf16* out, const bf16* a, const bf16* b, size_t n,
                                     cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  add_bf16_kernel<<<grid_for(n, 256), 256, 0, s>>>(out, a, b, n);
  return cudaGetLastError();
}
