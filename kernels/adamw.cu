// AdamW on one flat fp32 tensor (param, grad, m, v: n elements), the formula of
// include/loco/ops/adamw.hpp:
//   g = grad*grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²
//   p -= lr * ( (m/bc1) / (sqrt(v/bc2) + eps) + wd * p )
// Division and sqrt use the IEEE-rounded intrinsics so --use_fast_math does not change them.
// Launch: vector path when all four pointers are 16-byte aligned: one thread per 4 elements
// (float4, grid-stride, 256 threads), the n % 4 tail by the first threads of block 0; the
// per-element math is the same function, so results are bit-identical to the scalar kernel.
// Otherwise the scalar grid-stride kernel (256 threads, up to 8192 blocks).
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

struct AdamArgs {
  float lr, b1, b2, eps, wd, bc1, bc2, grad_scale;
};

__device__ __forceinline__ void adamw_one(float& p, float gr, float& m, float& v,
                                          const AdamArgs& a) {
  const float g = gr * a.grad_scale;
  const float mi = a.b1 * m + (1.f - a.b1) * g;
  const float vi = a.b2 * v + (1.f - a.b2) * g * g;
  m = mi;
  v = vi;
  const float m_hat = __fdiv_rn(mi, a.bc1);
  const float v_hat = __fdiv_rn(vi, a.bc2);
  const float update = __fdiv_rn(m_hat, __fsqrt_rn(v_hat) + a.eps) + a.wd * p;
  p = p - a.lr * update;
}

// n4 = n / 4 float4 vectors; elements [4*n4, n) are the scalar tail.
__global__ void adamw_vec_kernel(float* __restrict__ param, const float* __restrict__ grad,
                                 float* __restrict__ m, float* __restrict__ v, size_t n4,
                                 size_t n, AdamArgs a) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n4;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    float4 p = reinterpret_cast<const float4*>(param)[i];
    const float4 g = reinterpret_cast<const float4*>(grad)[i];
    float4 mm = reinterpret_cast<const float4*>(m)[i];
    float4 vv = reinterpret_cast<const float4*>(v)[i];
    adamw_one(p.x, g.x, mm.x, vv.x, a);
    adamw_one(p.y, g.y, mm.y, vv.y, a);
    adamw_one(p.z, g.z, mm.z, vv.z, a);
    adamw_one(p.w, g.w, mm.w, vv.w, a);
    reinterpret_cast<float4*>(m)[i] = mm;
    reinterpret_cast<float4*>(v)[i] = vv;
    reinterpret_cast<float4*>(param)[i] = p;
  }
  if (blockIdx.x == 0) {
    const size_t i = 4 * n4 + threadIdx.x;
    if (i < n) {
      float p = param[i], mm = m[i], vv = v[i];
      adamw_one(p, grad[i], mm, vv, a);
      m[i] = mm;
      v[i] = vv;
      param[i] = p;
    }
  }
}

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
  if (vector_path_ok(param) && vector_path_ok(grad) && vector_path_ok(m) && vector_path_ok(v)) {
    const AdamArgs a{lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale};
    adamw_vec_kernel<<<grid_for(n / 4, 256, 132 * 16), 256, 0, s>>>(param, grad, m, v, n / 4, n,
                                                                    a);
    return cudaGetLastError();
  }
  adamw_kernel<<<grid_for(n, 256), 256, 0, s>>>(param, grad, m, v, n, lr, beta1, beta2, eps,
                                                weight_decay, bc1, bc2, grad_scale);
  return cudaGetLastError();
}
