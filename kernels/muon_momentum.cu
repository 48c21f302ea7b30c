// Muon's momentum and Nesterov look-ahead in one pass over a matrix (f32):
//   m = s·g + β·m;  u = s·g + β·m_new (Nesterov) or u = m_new
// (the axpby, copy, axpby it replaces read and wrote 44 bytes per element; this, 16 + 4).
// Grid-stride, 256 threads. CPU reference: CpuBackend::muon_momentum.
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

constexpr int kBlock = 256;

__global__ void muon_momentum_kernel(float* __restrict__ m, float* __restrict__ u,
                                     const float* __restrict__ g, float beta, float grad_scale,
                                     int nesterov, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float sg = grad_scale * g[i];
    const float mi = sg + beta * m[i];
    m[i] = mi;
    u[i] = nesterov ? sg + beta * mi : mi;
  }
}

}  // namespace

extern "C" cudaError_t loco_muon_momentum(float* m, float* u, const float* g, float beta,
                                          float grad_scale, int nesterov, size_t n,
                                          cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  muon_momentum_kernel<<<grid_for(n, kBlock), kBlock, 0, s>>>(m, u, g, beta, grad_scale, nesterov,
                                                              n);
  return cudaGetLastError();
}
