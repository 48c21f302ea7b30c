// Fused softmax + cross-entropy over bf16 logits (N,V), fp32 math, targets (N) i32,
// losses (N) f32 = lse - logit[target], lse = max + log Σ exp(x - max).
// compute_grad: logits <- (exp(x - lse) - onehot(target)) * grad_scale, in place (bf16).
// Launch: one 256-thread block per row (grid-stride over rows, at most 65535 blocks).
// Pass 1: per-thread online (max, sum) over its strided columns, combined across the block
// in a fixed order (deterministic). Pass 2 (grad only): rewrite the row.
// The target logit is read before the first barrier, i.e. before any thread overwrites it.
// Vector path (V % 8 == 0 and logits 16-byte aligned, else the scalar kernel): the same
// structure with uint4 (8 bf16) loads/stores in both passes; pass 1 folds each vector into the
// thread's (max, sum) with one rescale per vector (max of the 8, then 8 exps).
// A target outside [0,V) sets LOCO_STATUS_BAD_TARGET, gives loss NaN and no onehot term.
#include <math_constants.h>

#include "loco_device.cuh"

using namespace loco_dev;

namespace {

constexpr int kBlock = 256;

// Merge two (max, sum-of-exp relative to max) pairs; an empty pair has m = -inf, s = 0.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  if (mn == -CUDART_INF_F) return;  // both empty
  const float a = (m == -CUDART_INF_F) ? 0.f : s * __expf(m - mn);
  const float b = (m2 == -CUDART_INF_F) ? 0.f : s2 * __expf(m2 - mn);
  m = mn;
  s = a + b;
}

__global__ void cross_entropy_kernel(float* __restrict__ losses, bf16* logits,
                                     const int32_t* __restrict__ targets, int N, int V,
                                     float grad_scale, int compute_grad, int* status) {
  __shared__ float red_m[kBlock / 32];
  __shared__ float red_s[kBlock / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int n = blockIdx.x; n < N; n += gridDim.x) {  // uniform across the block
    bf16* row = logits + static_cast<size_t>(n) * V;
    const int target = targets[n];
    const bool valid = target >= 0 && target < V;
    const float x_target = valid ? to_f(row[target]) : CUDART_NAN_F;

    float m = -CUDART_INF_F, s = 0.f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
      const float x = to_f(row[i]);
      if (x > m) {
        s = (m == -CUDART_INF_F ? 0.f : s * __expf(m - x)) + 1.f;
        m = x;
      } else if (m != -CUDART_INF_F) {  // (-inf) - (-inf) would be NaN
        s += __expf(x - m);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
      const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
      merge(m, s, m2, s2);
    }
    if (lane == 0) {
      red_m[warp] = m;
      red_s[warp] = s;
    }
    __syncthreads();
    float bm = red_m[0], bs = red_s[0];
    for (int w = 1; w < kBlock / 32; ++w) merge(bm, bs, red_m[w], red_s[w]);
    const float lse = bm + __logf(bs);
    if (threadIdx.x == 0) {
      losses[n] = lse - x_target;
      if (!valid) atomicOr(status, LOCO_STATUS_BAD_TARGET);
    }
    if (compute_grad) {
      for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float p = __expf(to_f(row[i]) - lse);
        row[i] = to_bf(p * grad_scale - (i == target ? grad_scale : 0.f));
      }
    }
    __syncthreads();  // red_* reused by the next row
  }
}

// Reduce per-thread (m, s) over the block in fixed order; every thread gets the same lse.
__device__ __forceinline__ float block_lse(float m, float s, float* red_m, float* red_s) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
    merge(m, s, m2, s2);
  }
  if (lane == 0) {
    red_m[warp] = m;
    red_s[warp] = s;
  }
  __syncthreads();
  float bm = red_m[0], bs = red_s[0];
  for (int w = 1; w < kBlock / 32; ++w) merge(bm, bs, red_m[w], red_s[w]);
  return bm + __logf(bs);
}

__global__ void __launch_bounds__(kBlock)
    cross_entropy_vec_kernel(float* __restrict__ losses, bf16* logits,
                             const int32_t* __restrict__ targets, int N, int V, float grad_scale,
                             int compute_grad, int* status) {
  __shared__ float red_m[kBlock / 32];
  __shared__ float red_s[kBlock / 32];
  const int V8 = V / 8;
  for (int n = blockIdx.x; n < N; n += gridDim.x) {  // uniform across the block
    bf16* row = logits + static_cast<size_t>(n) * V;
    uint4* row8 = reinterpret_cast<uint4*>(row);
    const int target = targets[n];
    const bool valid = target >= 0 && target < V;
    const float x_target = valid ? to_f(row[target]) : CUDART_NAN_F;

    float m = -CUDART_INF_F, s = 0.f;
    for (int v = threadIdx.x; v < V8; v += blockDim.x) {
      float x[8];
      unpack8(row8[v], x);
      float cm = x[0];
#pragma unroll
      for (int k = 1; k < 8; ++k) cm = fmaxf(cm, x[k]);
      if (cm == -CUDART_INF_F || cm == CUDART_INF_F) {
        // all -inf (or NaN mixed with -inf), or a +inf: the scalar per-element rule
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          if (x[k] > m) {
            s = (m == -CUDART_INF_F ? 0.f : s * __expf(m - x[k])) + 1.f;
            m = x[k];
          } else if (m != -CUDART_INF_F) {
            s += __expf(x[k] - m);
          }
        }
      } else {
        float cs = 0.f;
#pragma unroll
        for (int k = 0; k < 8; ++k) cs += __expf(x[k] - cm);
        merge(m, s, cm, cs);
      }
    }
    const float lse = block_lse(m, s, red_m, red_s);
    if (threadIdx.x == 0) {
      losses[n] = lse - x_target;
      if (!valid) atomicOr(status, LOCO_STATUS_BAD_TARGET);
    }
    if (compute_grad) {
      for (int v = threadIdx.x; v < V8; v += blockDim.x) {
        float x[8];
        unpack8(row8[v], x);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const float p = __expf(x[k] - lse);
          x[k] = p * grad_scale - (8 * v + k == target ? grad_scale : 0.f);
        }
        row8[v] = pack8(x);
      }
    }
    __syncthreads();  // red_* reused by the next row
  }
}

}  // namespace

extern "C" cudaError_t loco_cross_entropy(float* losses, bf16* logits, const int32_t* targets,
                                          int N, int V, float grad_scale, int compute_grad,
                                          int* status, cudaStream_t s) {
  if (N <= 0 || V <= 0) return cudaSuccess;
  if (V % 8 == 0 && vector_path_ok(logits)) {
    cross_entropy_vec_kernel<<<grid_for(N, 1, 65535), kBlock, 0, s>>>(
        losses, logits, targets, N, V, grad_scale, compute_grad, status);
    return cudaGetLastError();
  }
  cross_entropy_kernel<<<grid_for(N, 1, 65535), kBlock, 0, s>>>(losses, logits, targets, N, V,
                                                                grad_scale, compute_grad, status);
  return cudaGetLastError();
}
