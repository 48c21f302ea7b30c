// Causal GQA attention forward, online softmax (flash-style; no T×T matrix).
//   q, out: (B,T,NH,hd) bf16; k, v: (B,T,NKV,hd) bf16; lse: (B,NH,T) f32 (natural log of
//   Σ_j exp(scale·q·k_j) over j <= t); scale = 1/sqrt(hd); query head h reads kv head
//   h / (NH/NKV).
// Launch: grid (ceil(T/32), NH, B), 128 threads; block x handles query rows
//   [q0, q0+32) with q0 = (gridDim.x-1-x)*32 (heaviest causal tiles first); warp w owns rows
//   q0+8w .. q0+8w+7. Key tiles of 32 (tiles 0 .. (last row)/32) stream through shared
//   memory; lane j scores key k0+j against the warp's 8 rows, scores live in the log2
//   domain (q pre-multiplied by scale·log2 e) and exp2 is used throughout.
// Shared memory (floats): Q[32][hd] + K[32][hd+4] + V[32][hd] + P[4][8][32]
//   = 96·hd + 1152 floats (53.8 KB at hd = 128: the launcher raises the limit).
#include <math_constants.h>

#include <cmath>

#include "attention_common.cuh"

using namespace loco_dev;
using namespace loco_attn;

namespace {

template <int EMAX>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(bf16* __restrict__ out, float* __restrict__ lse,
                             const bf16* __restrict__ q, const bf16* __restrict__ k,
                             const bf16* __restrict__ v, int T, int NH, int NKV, int hd,
                             float scale_log2) {
  extern __shared__ float4 smem4[];
  const int ldk = hd + 4;
  float* Qs = reinterpret_cast<float*>(smem4);  // [kRows][hd]
  float* Ks = Qs + kRows * hd;                  // [kTile][hd+4]
  float* Vs = Ks + kTile * ldk;                 // [kTile][hd]
  float* Ps = Vs + kTile * hd;                  // [kNW][kR][kTile]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kRows;
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (NH / NKV);
  const size_t q_stride = static_cast<size_t>(NH) * hd;  // from row t to row t+1
  const size_t kv_stride = static_cast<size_t>(NKV) * hd;
  const bf16* qb = q + (static_cast<size_t>(b) * T * NH + h) * hd;  // q[b, 0, h, :]
  const bf16* kb = k + (static_cast<size_t>(b) * T * NKV + kvh) * hd;
  const bf16* vb = v + (static_cast<size_t>(b) * T * NKV + kvh) * hd;

  load_rows(Qs, hd, qb, q_stride, q0, kRows, T, hd, scale_log2);

  const int row0 = q0 + warp * kR;  // this warp's first query row
  const bool active = row0 < T;
  const int warp_last = min(row0 + kR - 1, T - 1);
  const int last_row = min(T, q0 + kRows) - 1;
  const int ntiles = last_row / kTile + 1;

  float m[kR], l[kR], o[kR][EMAX];
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    m[r] = -CUDART_INF_F;
    l[r] = 0.f;  // this lane's share of Σ p; summed over lanes at the end
#pragma unroll
    for (int e = 0; e < EMAX; ++e) o[r][e] = 0.f;
  }
  float* Pw = Ps + warp * kR * kTile;
  const float* Qw = Qs + warp * kR * hd;

  for (int kt = 0; kt < ntiles; ++kt) {
    const int k0 = kt * kTile;
    __syncthreads();  // previous tile fully consumed (and Q visible on the first pass)
    load_rows(Ks, ldk, kb, kv_stride, k0, kTile, T, hd, 1.f);
    load_rows(Vs, hd, vb, kv_stride, k0, kTile, T, hd, 1.f);
    __syncthreads();
    if (!active || k0 > warp_last) continue;  // warp-uniform: every key masked for this warp

    // s[r] = log2-scaled score of key k0+lane for row row0+r
    float s[kR];
#pragma unroll
    for (int r = 0; r < kR; ++r) s[r] = 0.f;
    const float* krow = Ks + lane * ldk;
    for (int d = 0; d < hd; d += 4) {
      const float4 kk = ld4(krow + d);
#pragma unroll
      for (int r = 0; r < kR; ++r) s[r] += dot4(ld4(Qw + r * hd + d), kk);
    }

    const int key = k0 + lane;
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      const int row = row0 + r;
      const float sr = (key <= row && key < T) ? s[r] : -CUDART_INF_F;
      // Tile 0 always holds key 0, unmasked for every row: m is finite from then on.
      const float mn = fmaxf(m[r], warp_max(sr));
      const float corr = exp2f(m[r] - mn);  // 0 on the first tile (m = -inf)
      const float p = exp2f(sr - mn);       // 0 for masked keys
      l[r] = l[r] * corr + p;
      m[r] = mn;
#pragma unroll
      for (int e = 0; e < EMAX; ++e) o[r][e] *= corr;
      Pw[r * kTile + lane] = p;
    }
    __syncwarp();

    // o[r][e] += Σ_j P[r][j] · V[j][lane + 32e]
    for (int j4 = 0; j4 < kTile; j4 += 4) {
      float vv[4][EMAX];
#pragma unroll
      for (int jj = 0; jj < 4; ++jj)
#pragma unroll
        for (int e = 0; e < EMAX; ++e) {
          const int d = lane + 32 * e;
          vv[jj][e] = d < hd ? Vs[(j4 + jj) * hd + d] : 0.f;
        }
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const float4 p4 = ld4(Pw + r * kTile + j4);
#pragma unroll
        for (int e = 0; e < EMAX; ++e)
          o[r][e] += p4.x * vv[0][e] + p4.y * vv[1][e] + p4.z * vv[2][e] + p4.w * vv[3][e];
      }
    }
    __syncwarp();  // P is rewritten on the next tile
  }

  if (!active) return;  // no barriers below
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int row = row0 + r;
    if (row < T) {  // warp-uniform
      const float lt = warp_sum(l[r]);
      const float inv = 1.f / lt;
      bf16* orow =
          out + (static_cast<size_t>(b) * T + row) * q_stride + static_cast<size_t>(h) * hd;
#pragma unroll
      for (int e = 0; e < EMAX; ++e) {
        const int d = lane + 32 * e;
        if (d < hd) orow[d] = to_bf(o[r][e] * inv);
      }
      if (lane == 0) lse[(static_cast<size_t>(b) * NH + h) * T + row] = (m[r] + log2f(lt)) * kLn2;
    }
  }
}

template <int EMAX>
cudaError_t launch(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B, int T,
                   int NH, int NKV, int hd, cudaStream_t s) {
  const size_t smem =
      sizeof(float) * (static_cast<size_t>(kRows) * hd + static_cast<size_t>(kTile) * (hd + 4) +
                       static_cast<size_t>(kTile) * hd + kNW * kR * kTile);
  cudaError_t e = allow_smem(attention_forward_kernel<EMAX>, smem);
  if (e != cudaSuccess) return e;
  const dim3 grid((T + kRows - 1) / kRows, NH, B);
  const float scale_log2 = (1.0f / std::sqrt(static_cast<float>(hd))) * kLog2e;
  attention_forward_kernel<EMAX>
      <<<grid, kThreads, smem, s>>>(out, lse, q, k, v, T, NH, NKV, hd, scale_log2);
  return cudaGetLastError();
}

}  // namespace

extern "C" int loco_attention_supported(int hd) { return head_dim_ok(hd) ? 1 : 0; }

extern "C" cudaError_t loco_attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k,
                                              const bf16* v, int B, int T, int NH, int NKV, int hd,
                                              cudaStream_t s) {
  if (B <= 0 || T <= 0 || NH <= 0) return cudaSuccess;
  if (!head_dim_ok(hd) || NKV <= 0 || NH % NKV != 0 || NH > 65535 || B > 65535)
    return cudaErrorInvalidValue;
  if (tc_eligible(hd, {out, q, k, v})) return tc_forward(out, lse, q, k, v, B, T, NH, NKV, hd, s);
  switch ((hd + 31) / 32) {
    case 1:
      return launch<1>(out, lse, q, k, v, B, T, NH, NKV, hd, s);
    case 2:
      return launch<2>(out, lse, q, k, v, B, T, NH, NKV, hd, s);
    case 3:
      return launch<3>(out, lse, q, k, v, B, T, NH, NKV, hd, s);
    default:
      return launch<4>(out, lse, q, k, v, B, T, NH, NKV, hd, s);
  }
}
