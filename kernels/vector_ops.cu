// F32 vector ops on flat master/state buffers (optimizers, clipping, outer sync).
// scale, axpby, all_finite: grid-stride, 256 threads, up to 8192 blocks.
// sum_squares: deterministic two-pass reduction in double. Pass 1 uses G = min(1024,
// ceil(n/256)) blocks (a function of n only), each thread strides over the vector, blocks
// reduce in a fixed tree into scratch[G]; pass 2 is one block that sums scratch in a fixed
// order into *result. Same n and data -> bit-identical result on every run.
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

constexpr int kBlock = 256;
constexpr int kMaxPartials = 1024;

// Block-wide double sum for kBlock threads; result valid in thread 0.
__device__ __forceinline__ double block_sum_double(double v) {
  __shared__ double red[kBlock / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  double t = 0.0;
  if (warp == 0) {
    t = lane < kBlock / 32 ? red[lane] : 0.0;
    t = warp_sum(t);
  }
  return t;
}

__global__ void sum_squares_pass1(double* __restrict__ partial, const float* __restrict__ x,
                                  size_t n) {
  double acc = 0.0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const double v = static_cast<double>(x[i]);
    acc += v * v;
  }
  const double t = block_sum_double(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = t;
}

__global__ void sum_squares_pass2(double* __restrict__ result, const double* __restrict__ partial,
                                  int G) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < G; i += blockDim.x) acc += partial[i];
  const double t = block_sum_double(acc);
  if (threadIdx.x == 0) *result = t;
}

__global__ void scale_kernel(float* __restrict__ x, float a, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    x[i] *= a;
}

__global__ void axpby_kernel(float* y, float a, const float* x, float b, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    y[i] = a * x[i] + b * y[i];
}

__global__ void all_finite_kernel(int* __restrict__ flag, const float* __restrict__ x, size_t n) {
  bool bad = false;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    bad |= not_finite(x[i]);
  if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) *flag = 1;  // benign race
}

}  // namespace

extern "C" size_t loco_sum_squares_scratch(void) { return kMaxPartials; }

extern "C" cudaError_t loco_sum_squares(double* result, const float* x, size_t n, double* scratch,
                                        cudaStream_t s) {
  if (n == 0) return cudaMemsetAsync(result, 0, sizeof(double), s);
  const unsigned G = grid_for(n, kBlock, kMaxPartials);
  sum_squares_pass1<<<G, kBlock, 0, s>>>(scratch, x, n);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  sum_squares_pass2<<<1, kBlock, 0, s>>>(result, scratch, static_cast<int>(G));
  return cudaGetLastError();
}

extern "C" cudaError_t loco_scale_f32(float* x, float a, size_t n, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  scale_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(x, a, n);
  return cudaGetLastError();
}

extern "C" cudaError_t loco_axpby_f32(float* y, float a, const float* x, float b, size_t n,
                                      cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  axpby_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(y, a, x, b, n);
  return cudaGetLastError();
}

extern "C" cudaError_t loco_all_finite_f32(int* flag, const float* x, size_t n, cudaStream_t s) {
  cudaError_t e = cudaMemsetAsync(flag, 0, sizeof(int), s);
  if (e != cudaSuccess || n == 0) return e;
  all_finite_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(flag, x, n);
  return cudaGetLastError();
}
