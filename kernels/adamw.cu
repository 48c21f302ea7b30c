// AdamW on one flat fp32 tensor (param, grad, m, v: n elements), the formula of
// include/loco/ops/adamw.hpp:
//   g = grad*grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²
//   p -= lr * ( (m/bc1) / (sqrt(v/bc2) + eps) + wd * p )
// Division and sqrt use the IEEE-rounded intrinsics so --use_fast_math does not change them.
// Launch: vector path when all four pointers are 16-byte aligned: one thread per 4 elements
// (float4, grid-stride, 256 threads), the n % 4 tail by the first threads of block 0; the
// per-element math is the same function, so results are bit-identical to the scalar kernel.
// Otherwise the scalar grid-stride kernel (256 threads, up to 8192 blocks).
// loco_adamw_multi_f32: the same update for many tensors of one flat buffer in one launch
// (Backend::adamw_multi), scalars read from device memory.
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
                                 float* __restrict__ m, float* __restrict__ v, size_t n4, size_t n,
                                 AdamArgs a) {
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

// Multi-tensor AdamW: blockIdx.y picks the tensor (a row of `table`: element offset, count,
// weight decay bits as u64 words), blockIdx.x strides over its elements. The scalars are
// read from device memory (hyper: lr, b1, b2, eps, bc1, bc2, grad_scale; stats: the step's
// clip scale and non-finite flag, include/loco/ops/step_stats.hpp), so a replayed graph uses
// each step's values. The per-element math is adamw_one: bit-identical to adamw_kernel.
__global__ void adamw_multi_kernel(float* __restrict__ param, const float* __restrict__ grad,
                                   float* __restrict__ m, float* __restrict__ v,
                                   const unsigned long long* __restrict__ table,
                                   const float* __restrict__ hyper,
                                   const int32_t* __restrict__ stats, int vec) {
  if (stats != nullptr && stats[5] != 0) return;  // non-finite gradient: the step is skipped
  const unsigned long long* row = table + 3 * static_cast<size_t>(blockIdx.y);
  const size_t offset = static_cast<size_t>(row[0]), n = static_cast<size_t>(row[1]);
  const AdamArgs a{hyper[0],
                   hyper[1],
                   hyper[2],
                   hyper[3],
                   __uint_as_float(static_cast<uint32_t>(row[2])),
                   hyper[4],
                   hyper[5],
                   stats != nullptr ? __int_as_float(stats[4]) : hyper[6]};
  float* p = param + offset;
  const float* g = grad + offset;
  float* pm = m + offset;
  float* pv = v + offset;
  const size_t first = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t done = 0;
  if (vec && offset % 4 == 0) {  // float4 body (the bases are 16-byte aligned), scalar tail
    const size_t n4 = n / 4;
    for (size_t i = first; i < n4; i += stride) {
      float4 pp = reinterpret_cast<const float4*>(p)[i];
      const float4 gg = reinterpret_cast<const float4*>(g)[i];
      float4 mm = reinterpret_cast<const float4*>(pm)[i];
      float4 vv = reinterpret_cast<const float4*>(pv)[i];
      adamw_one(pp.x, gg.x, mm.x, vv.x, a);
      adamw_one(pp.y, gg.y, mm.y, vv.y, a);
      adamw_one(pp.z, gg.z, mm.z, vv.z, a);
      adamw_one(pp.w, gg.w, mm.w, vv.w, a);
      reinterpret_cast<float4*>(pm)[i] = mm;
      reinterpret_cast<float4*>(pv)[i] = vv;
      reinterpret_cast<float4*>(p)[i] = pp;
    }
    done = 4 * n4;
  }
  for (size_t i = done + first; i < n; i += stride) {
    float pp = p[i], mm = pm[i], vv = pv[i];
    adamw_one(pp, g[i], mm, vv, a);
    pm[i] = mm;
    pv[i] = vv;
    p[i] = pp;
  }
}

}  // namespace

extern "C" cudaError_t loco_adamw_multi_f32(float* param, const float* grad, float* m, float* v,
                                            const unsigned long long* table, size_t num_tensors,
                                            size_t max_numel, const float* hyper,
                                            const int32_t* stats, cudaStream_t s) {
  if (num_tensors == 0) return cudaSuccess;
  if (num_tensors > 65535) return cudaErrorInvalidValue;  // grid.y
  const int vec =
      vector_path_ok(param) && vector_path_ok(grad) && vector_path_ok(m) && vector_path_ok(v);
  // Enough blocks for the largest tensor (4 elements per thread per pass), at most 256.
  const unsigned gx = grid_for((max_numel + 3) / 4, 256, 256);
  adamw_multi_kernel<<<dim3(gx, static_cast<unsigned>(num_tensors)), 256, 0, s>>>(
      param, grad, m, v, table, hyper, stats, vec);
  return cudaGetLastError();
}

extern "C" cudaError_t loco_adamw_f32(float* param, const float* grad, float* m, float* v, size_t n,
                                      float lr, float beta1, float beta2, float eps,
                                      float weight_decay, float bc1, float bc2, float grad_scale,
                                      cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  if (vector_path_ok(param) && vector_path_ok(grad) && vector_path_ok(m) && vector_path_ok(v)) {
    const AdamArgs a{lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale};
    adamw_vec_kernel<<<grid_for(n / 4, 256, 132 * 16), 256, 0, s>>>(param, grad, m, v, n / 4, n, a);
    return cudaGetLastError();
  }
  adamw_kernel<<<grid_for(n, 256), 256, 0, s>>>(param, grad, m, v, n, lr, beta1, beta2, eps,
                                                weight_decay, bc1, bc2, grad_scale);
  return cudaGetLastError();
}
