// AdamW on one flat fp32 tensor (param, grad, m, v: n elements), the formula of
// include/loco/ops/adamw.hpp:
//   g = grad*grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²
//   p -= lr * ( (m/bc1) / (sqrt(v/bc2) + eps) + wd * p )
// Division and sqrt use the IEEE-rounded intrinsics so --use_fast_math does not change them.
// Launch: grid-stride, 256 threads, up to 8192 blocks.
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

__global__ void adamw_kernel(float* __restrict__ param, const float* __restrict__ grad,
                             float* __restrict__ m, float* __restrict__ v, size_t n, float lr,
                             float b1, float b2, float eps, float wd, float bc1, float bc2,
                             float grad_scale) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float g = grad[i] * grad_scale;
    const float mi = b1 * m[i] + (1.f - b1) * g;
    const float vi = b2 * v[i] + (1.f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float m_hat = __fdiv_rn(mi, bc1);
    const float v_hat = __fdiv_rn(vi, bc2);
    const float p = param[i];
    const float update = __fdiv_rn(m_hat, __fsqrt_rn(v_hat) + eps) + wd * p;
    param[i] = p - lr * update;
  }
}

}  // namespace

extern "C" cudaError_t loco_adamw_f32(float* param, const float* grad, float* m, float* v,
                                      size_t n, float lr, float beta1, float beta2, float eps,
                                      float weight_decay, float bc1, float bc2, float grad_scale,
                                      cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  adamw_kernel<<<grid_for(n, 256), 256, 0, s>>>(param, grad, m, v, n, lr, beta1, beta2, eps,
                                                weight_decay, bc1, bc2, grad_scale);
  return cudaGetLastError();
}
