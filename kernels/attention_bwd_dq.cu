// Causal GQA attention backward, part 1: D and dq.
//   dout, out, q, dq: (B,T,NH,hd) bf16; k, v: (B,T,NKV,hd) bf16; lse (B,NH,T) f32.
//   D(B,NH,T) f32 = Σ_d dout·out                      (scratch, also read by part 2)
//   p_ij = exp(scale·q_i·k_j - lse_i),  ds_ij = p_ij (dout_i·v_j - D_i)
//   dq_i = scale · Σ_{j<=i} ds_ij k_j                 (overwritten)
// Launch:
//   D:  one warp per (b,t,h) row, 256 threads, grid-stride (at most 65535 blocks).
//   dq: grid (ceil(T/32), NH, B), 128 threads; the query-row tiling of the forward kernel
//       (attention_common.cuh). P is recomputed from lse (log2 domain), one key per lane;
//       dq accumulates in registers, head dims d = lane + 32e.
// Shared memory (floats): Q[32][hd] + dO[32][hd] + K[32][hd+4] + V[32][hd+4] + dS[4][8][32]
//   = 128·hd + 1280 floats (70.6 KB at hd = 128).
#include <cmath>

#include "attention_common.cuh"

using namespace loco_dev;
using namespace loco_attn;

namespace {

__global__ void attention_d_kernel(float* __restrict__ D, const bf16* __restrict__ dout,
                                   const bf16* __restrict__ out, int B, int T, int NH, int hd) {
  const int lane = threadIdx.x & 31;
  const int warps = blockDim.x >> 5;
  const size_t rows = static_cast<size_t>(B) * T * NH;
  for (size_t row = static_cast<size_t>(blockIdx.x) * warps + (threadIdx.x >> 5); row < rows;
       row += static_cast<size_t>(gridDim.x) * warps) {
    const bf16* a = dout + row * hd;
    const bf16* c = out + row * hd;
    float acc = 0.f;
    for (int d = lane; d < hd; d += 32) acc += to_f(a[d]) * to_f(c[d]);
    acc = warp_sum(acc);
    if (lane == 0) {
      const size_t bt = row / NH;  // b*T + t
      const int h = static_cast<int>(row % NH);
      const size_t b = bt / T;
      const int t = static_cast<int>(bt % T);
      D[(b * NH + h) * T + t] = acc;
    }
  }
}

template <int EMAX>
__global__ void __launch_bounds__(kThreads)
    attention_dq_kernel(bf16* __restrict__ dq, const float* __restrict__ D,
                        const bf16* __restrict__ dout, const bf16* __restrict__ q,
                        const bf16* __restrict__ k, const bf16* __restrict__ v,
                        const float* __restrict__ lse, int T, int NH, int NKV, int hd,
                        float scale_log2, float scale) {
  extern __shared__ float4 smem4[];
  const int ldk = hd + 4;
  float* Qs = reinterpret_cast<float*>(smem4);  // [kRows][hd], times scale·log2 e
  float* dOs = Qs + kRows * hd;                 // [kRows][hd]
  float* Ks = dOs + kRows * hd;                 // [kTile][hd+4]
  float* Vs = Ks + kTile * ldk;                 // [kTile][hd+4]
  float* Ss = Vs + kTile * ldk;                 // [kNW][kR][kTile]  (dS)

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kRows;
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (NH / NKV);
  const size_t q_stride = static_cast<size_t>(NH) * hd;
  const size_t kv_stride = static_cast<size_t>(NKV) * hd;
  const size_t q_base = (static_cast<size_t>(b) * T * NH + h) * hd;
  const bf16* kb = k + (static_cast<size_t>(b) * T * NKV + kvh) * hd;
  const bf16* vb = v + (static_cast<size_t>(b) * T * NKV + kvh) * hd;
  const size_t stat_base = (static_cast<size_t>(b) * NH + h) * T;  // lse / D row (b, h)

  load_rows(Qs, hd, q + q_base, q_stride, q0, kRows, T, hd, scale_log2);
  load_rows(dOs, hd, dout + q_base, q_stride, q0, kRows, T, hd, 1.f);

  const int row0 = q0 + warp * kR;
  const bool active = row0 < T;
  const int warp_last = min(row0 + kR - 1, T - 1);
  const int last_row = min(T, q0 + kRows) - 1;
  const int ntiles = last_row / kTile + 1;

  float lse2[kR], Dr[kR], acc[kR][EMAX];
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int row = row0 + r;
    lse2[r] = row < T ? lse[stat_base + row] * kLog2e : 0.f;
    Dr[r] = row < T ? D[stat_base + row] : 0.f;
#pragma unroll
    for (int e = 0; e < EMAX; ++e) acc[r][e] = 0.f;
  }
  float* Sw = Ss + warp * kR * kTile;
  const float* Qw = Qs + warp * kR * hd;
  const float* dOw = dOs + warp * kR * hd;

  for (int kt = 0; kt < ntiles; ++kt) {
    const int k0 = kt * kTile;
    __syncthreads();
    load_rows(Ks, ldk, kb, kv_stride, k0, kTile, T, hd, 1.f);
    load_rows(Vs, ldk, vb, kv_stride, k0, kTile, T, hd, 1.f);
    __syncthreads();
    if (!active || k0 > warp_last) continue;  // warp-uniform

    float s[kR], dp[kR];
#pragma unroll
    for (int r = 0; r < kR; ++r) s[r] = dp[r] = 0.f;
    const float* krow = Ks + lane * ldk;
    const float* vrow = Vs + lane * ldk;
    for (int d = 0; d < hd; d += 4) {
      const float4 kk = ld4(krow + d);
      const float4 vv = ld4(vrow + d);
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        s[r] += dot4(ld4(Qw + r * hd + d), kk);
        dp[r] += dot4(ld4(dOw + r * hd + d), vv);
      }
    }
    const int key = k0 + lane;
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      const int row = row0 + r;
      const float p = (key <= row && key < T) ? exp2f(s[r] - lse2[r]) : 0.f;
      Sw[r * kTile + lane] = p * (dp[r] - Dr[r]);
    }
    __syncwarp();

    // acc[r][e] += Σ_j dS[r][j] · K[j][lane + 32e]
    for (int j4 = 0; j4 < kTile; j4 += 4) {
      float kv[4][EMAX];
#pragma unroll
      for (int jj = 0; jj < 4; ++jj)
#pragma unroll
        for (int e = 0; e < EMAX; ++e) {
          const int d = lane + 32 * e;
          kv[jj][e] = d < hd ? Ks[(j4 + jj) * ldk + d] : 0.f;
        }
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const float4 s4 = ld4(Sw + r * kTile + j4);
#pragma unroll
        for (int e = 0; e < EMAX; ++e)
          acc[r][e] += s4.x * kv[0][e] + s4.y * kv[1][e] + s4.z * kv[2][e] + s4.w * kv[3][e];
      }
    }
    __syncwarp();
  }

  if (!active) return;
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int row = row0 + r;
    if (row < T) {
      bf16* dst = dq + q_base + static_cast<size_t>(row) * q_stride;
#pragma unroll
      for (int e = 0; e < EMAX; ++e) {
        const int d = lane + 32 * e;
        if (d < hd) dst[d] = to_bf(acc[r][e] * scale);
      }
    }
  }
}

template <int EMAX>
cudaError_t launch_dq(bf16* dq, const float* D, const bf16* dout, const bf16* q, const bf16* k,
                      const bf16* v, const float* lse, int B, int T, int NH, int NKV, int hd,
                      cudaStream_t s) {
  const size_t smem =
      sizeof(float) * (2 * static_cast<size_t>(kRows) * hd +
                       2 * static_cast<size_t>(kTile) * (hd + 4) + kNW * kR * kTile);
  cudaError_t e = allow_smem(attention_dq_kernel<EMAX>, smem);
  if (e != cudaSuccess) return e;
  const dim3 grid((T + kRows - 1) / kRows, NH, B);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  attention_dq_kernel<EMAX><<<grid, kThreads, smem, s>>>(dq, D, dout, q, k, v, lse, T, NH, NKV, hd,
                                                         scale * kLog2e, scale);
  return cudaGetLastError();
}

}  // namespace

extern "C" cudaError_t loco_attention_backward_dq(bf16* dq, float* scratch_D, const bf16* dout,
                                                  const bf16* q, const bf16* k, const bf16* v,
                                                  const bf16* out, const float* lse, int B, int T,
                                                  int NH, int NKV, int hd, cudaStream_t s) {
  if (B <= 0 || T <= 0 || NH <= 0) return cudaSuccess;
  if (!head_dim_ok(hd) || NKV <= 0 || NH % NKV != 0 || NH > 65535 || B > 65535)
    return cudaErrorInvalidValue;
  const size_t rows = static_cast<size_t>(B) * T * NH;
  attention_d_kernel<<<grid_for(rows, 8, 65535), 256, 0, s>>>(scratch_D, dout, out, B, T, NH, hd);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  if (tc_eligible(hd, {dq, dout, q, k, v}))
    return tc_dq(dq, scratch_D, dout, q, k, v, lse, B, T, NH, NKV, hd, s);
  switch ((hd + 31) / 32) {
    case 1:
      return launch_dq<1>(dq, scratch_D, dout, q, k, v, lse, B, T, NH, NKV, hd, s);
    case 2:
      return launch_dq<2>(dq, scratch_D, dout, q, k, v, lse, B, T, NH, NKV, hd, s);
    case 3:
      return launch_dq<3>(dq, scratch_D, dout, q, k, v, lse, B, T, NH, NKV, hd, s);
    default:
      return launch_dq<4>(dq, scratch_D, dout, q, k, v, lse, B, T, NH, NKV, hd, s);
  }
}
