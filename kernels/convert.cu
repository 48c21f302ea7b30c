// dtype conversion for Backend::copy: F32 <-> BF16, flat vectors of n elements.
// Launch: grid-stride, 256 threads, up to 8192 blocks.
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

__global__ void f32_to_bf16_kernel(bf16* __restrict__ dst, const float* __restrict__ src,
                                   size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    dst[i] = to_bf(src[i]);
}

__global__ void bf16_to_f32_kernel(float* __restrict__ dst, const bf16* __restrict__ src,
                                   size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    dst[i] = to_f(src[i]);
}

}  // namespace

extern "C" cudaError_t loco_f32_to_bf16(bf16* dst, const float* src, size_t n, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  f32_to_bf16_kernel<<<grid_for(n, 256), 256, 0, s>>>(dst, src, n);
  return cudaGetLastError();
}

extern "C" cudaError_t loco_bf16_to_f32(float* dst, const bf16* src, size_t n, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  bf16_to_f32_kernel<<<grid_for(n, 256), 256, 0, s>>>(dst, src, n);
  return cudaGetLastError();
}

// Whether the current device can run code from this binary: cudaFuncGetAttributes fails with
// cudaErrorNoKernelImageForDevice (or similar) when it was built for another architecture.
extern "C" cudaError_t loco_kernels_probe(void) {
  cudaFuncAttributes attr;
  return cudaFuncGetAttributes(&attr, f32_to_bf16_kernel);
}
