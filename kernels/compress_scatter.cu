// Elementwise halves of the compression pipeline: error-feedback accumulate, gather of the
// kept values, the EF subtraction, and the receive side's scatter-accumulate and division.
// CPU reference: include/loco/ops/chunk_topk.hpp. Bitwise equal to it: built without
// --use_fast_math (no flush-to-zero, IEEE division) and with _rn intrinsics where the
// compiler could otherwise fuse a multiply and an add.
//
//   e, delta, x, sum, out (total) f32;  count (total) i32;  flat, values (kept) u32 / f32
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

constexpr int kBlock = 256;

#define LOCO_GRID_STRIDE(i, n)                                                         \
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<size_t>(gridDim.x) * blockDim.x)

__global__ void ef_accumulate_kernel(float* __restrict__ e, const float* __restrict__ delta,
                                     float beta, size_t n) {
  LOCO_GRID_STRIDE(i, n) e[i] = __fadd_rn(__fmul_rn(beta, e[i]), delta[i]);
}

__global__ void gather_kernel(float* __restrict__ values, const float* __restrict__ x,
                              const uint32_t* __restrict__ flat, size_t n) {
  LOCO_GRID_STRIDE(i, n) values[i] = x[flat[i]];
}

__global__ void scatter_subtract_kernel(float* __restrict__ x, const uint32_t* __restrict__ flat,
                                        const float* __restrict__ values, size_t n) {
  LOCO_GRID_STRIDE(i, n) {
    const uint32_t j = flat[i];
    x[j] = __fsub_rn(x[j], values[i]);
  }
}

// Indices are distinct within one call, so no two threads touch one element: no atomics, and
// every element's sum is formed in call order (payload by payload) as on the CPU.
__global__ void scatter_accumulate_kernel(float* __restrict__ sum, int32_t* __restrict__ count,
                                          const uint32_t* __restrict__ flat,
                                          const float* __restrict__ values, size_t n) {
  LOCO_GRID_STRIDE(i, n) {
    const uint32_t j = flat[i];
    sum[j] = __fadd_rn(sum[j], values[i]);
    if (count != nullptr) count[j] += 1;
  }
}

__global__ void divide_kernel(float* __restrict__ out, const float* __restrict__ sum,
                              const int32_t* __restrict__ count, float divisor, size_t n) {
  LOCO_GRID_STRIDE(i, n) {
    if (count != nullptr)
      out[i] = count[i] != 0 ? __fdiv_rn(sum[i], static_cast<float>(count[i])) : 0.0f;
    else
      out[i] = __fdiv_rn(sum[i], divisor);
  }
}

}  // namespace

extern "C" cudaError_t loco_ef_accumulate(float* e, const float* delta, float beta, size_t n,
                                          cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  ef_accumulate_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(e, delta, beta, n);
  return cudaGetLastError();
}

extern "C" cudaError_t loco_gather_f32(float* values, const float* x, const uint32_t* flat,
                                       size_t n, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  gather_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(values, x, flat, n);
  return cudaGetLastError();
}

extern "C" cudaError_t loco_scatter_subtract_f32(float* x, const uint32_t* flat,
                                                 const float* values, size_t n, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  scatter_subtract_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(x, flat, values, n);
  return cudaGetLastError();
}

extern "C" cudaError_t loco_scatter_accumulate_f32(float* sum, int32_t* count, const uint32_t* flat,
                                                   const float* values, size_t n, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  scatter_accumulate_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(sum, count, flat, values, n);
  return cudaGetLastError();
}

extern "C" cudaError_t loco_divide_f32(float* out, const float* sum, const int32_t* count,
                                       float divisor, size_t n, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  divide_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(out, sum, count, divisor, n);
  return cudaGetLastError();
}
