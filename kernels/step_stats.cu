// The step statistics kept in device memory (include/loco/ops/step_stats.hpp: the word
// layout and the CPU reference), so a training step needs no host read until it ends.
//   accumulate_loss: stats.loss += Σ losses / N — one block, each thread sums a strided
//                    slice in double, then a fixed tree (same N and data: same bits).
//   clip_grad_norm:  Σ g² by loco_sum_squares straight into the stats, then one thread turns
//                    it into the clip scale and the non-finite flag with the host's formula
//                    (IEEE sqrt and division in double, one rounding to f32).
#include "loco_device.cuh"

using namespace loco_dev;

namespace {

constexpr int kBlock = 256;

__global__ void accumulate_loss_kernel(int32_t* __restrict__ stats,
                                       const float* __restrict__ losses, size_t n) {
  __shared__ double red[kBlock / 32];
  double acc = 0.0;
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) acc += static_cast<double>(losses[i]);
  acc = warp_sum(acc);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = acc;
  __syncthreads();
  if (warp != 0) return;
  double t = lane < kBlock / 32 ? red[lane] : 0.0;
  t = warp_sum(t);
  if (lane == 0) {
    double* loss = reinterpret_cast<double*>(stats);
    *loss = __dadd_rn(*loss, __ddiv_rn(t, static_cast<double>(n)));
  }
}

__global__ void finish_grad_norm_kernel(int32_t* __restrict__ stats, double max_norm) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  const double ss = *reinterpret_cast<const double*>(stats + 2);
  const double norm = __dsqrt_rn(ss);
  const bool finite = (static_cast<unsigned long long>(__double_as_longlong(norm)) &
                       0x7ff0000000000000ull) != 0x7ff0000000000000ull;
  const float clip =
      max_norm > 0.0 && norm > max_norm ? __double2float_rn(__ddiv_rn(max_norm, norm)) : 1.0f;
  stats[4] = __float_as_int(clip);
  stats[5] = finite ? 0 : 1;
}

}  // namespace

extern "C" cudaError_t loco_accumulate_loss(int32_t* stats, const float* losses, size_t n,
                                            cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  accumulate_loss_kernel<<<1, kBlock, 0, s>>>(stats, losses, n);
  return cudaGetLastError();
}

extern "C" cudaError_t loco_clip_grad_norm(int32_t* stats, const float* grads, size_t n,
                                           double max_norm, double* scratch, cudaStream_t s) {
  const cudaError_t e =
      loco_sum_squares(reinterpret_cast<double*>(stats + 2), grads, n, scratch, s);
  if (e != cudaSuccess) return e;
  finish_grad_norm_kernel<<<1, 32, 0, s>>>(stats, max_norm);
  return cudaGetLastError();
}
