// Batched Frobenius normalisation for Muon's Newton–Schulz: X_b ← X_b / (‖X_b‖_F + eps) for
// `batch` f32 matrices of `each` elements stored back to back.
//   pass 1, grid (G, batch): per-block partial Σx² in double → scratch[b·G + g]
//   pass 2, grid (batch):    Σ of the G partials in a fixed order → scale_b = 1/(√Σ + eps)
//   pass 3, grid (G, batch): x *= scale_b
// G depends only on `each`, so the result is bit-identical run to run. CPU reference:
// CpuBackend::frobenius_normalize (ops::sum_squares, ops::scale).
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

constexpr int kBlock = 256;
constexpr unsigned kMaxBlocksPerMatrix = 128;

unsigned blocks_per_matrix(size_t each) { return grid_for(each, kBlock * 8, kMaxBlocksPerMatrix); }

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
  return t;  // valid in thread 0
}

__global__ void partial_squares(double* __restrict__ partial, const float* __restrict__ x,
                                size_t each) {
  const float* m = x + size_t(blockIdx.y) * each;
  double acc = 0.0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < each;
       i += size_t(gridDim.x) * blockDim.x) {
    const double v = m[i];
    acc += v * v;
  }
  const double t = block_sum_double(acc);
  if (threadIdx.x == 0) partial[size_t(blockIdx.y) * gridDim.x + blockIdx.x] = t;
}

__global__ void inverse_norms(double* __restrict__ scale, const double* __restrict__ partial,
                              unsigned G, float eps) {
  if (threadIdx.x != 0) return;
  double s = 0.0;
  for (unsigned g = 0; g < G; ++g) s += partial[size_t(blockIdx.x) * G + g];
  scale[blockIdx.x] = 1.0 / (sqrt(s) + double(eps));
}

__global__ void scale_matrices(float* __restrict__ x, const double* __restrict__ scale,
                               size_t each) {
  float* m = x + size_t(blockIdx.y) * each;
  const float s = static_cast<float>(scale[blockIdx.y]);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < each;
       i += size_t(gridDim.x) * blockDim.x)
    m[i] *= s;
}

}  // namespace

extern "C" size_t loco_frobenius_normalize_scratch(size_t each, int batch) {
  return (size_t(blocks_per_matrix(each)) + 1) * size_t(batch > 0 ? batch : 0);
}

extern "C" cudaError_t loco_frobenius_normalize(float* x, size_t each, int batch, float eps,
                                                double* scratch, cudaStream_t s) {
  if (batch <= 0 || each == 0) return cudaSuccess;
  if (batch > 65535) return cudaErrorInvalidValue;  // grid.y limit
  const unsigned G = blocks_per_matrix(each);
  double* partial = scratch;
  double* scale = scratch + size_t(G) * batch;
  partial_squares<<<dim3(G, batch), kBlock, 0, s>>>(partial, x, each);
  inverse_norms<<<batch, 32, 0, s>>>(scale, partial, G, eps);
  scale_matrices<<<dim3(G, batch), kBlock, 0, s>>>(x, scale, each);
  return cudaGetLastError();
}
