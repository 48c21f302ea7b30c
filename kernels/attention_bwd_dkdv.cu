// Causal GQA attention backward, part 2: dk and dv (run after part 1, which wrote D).
//   dout, q: (B,T,NH,hd) bf16; k, v, dk, dv: (B,T,NKV,hd) bf16; lse, D (B,NH,T) f32.
//   dv_j = Σ_h Σ_{i>=j} p_ij dout_i,   dk_j = scale · Σ_h Σ_{i>=j} ds_ij q_i   (overwritten)
//   with p, ds as in part 1, h over the NH/NKV query heads that share kv head j's head.
// Launch: grid (ceil(T/32), NKV, B), 128 threads. Block x owns keys [k0, k0+32), k0 = 32x;
//   warp w owns keys k0+8w .. k0+8w+7, kept in shared memory with V. For every query head
//   of the group and every query tile [i0, i0+32) with i0 >= k0 (causal), the tile's q and
//   dout stream through shared memory, lane i scores query i0+i against the warp's 8 keys,
//   then dk/dv accumulate in registers (head dims d = lane + 32e). Each (b, kv head, key)
//   is owned by one block: no atomics, deterministic.
// Shared memory (floats): K[32][hd] + V[32][hd] + Q[32][hd+4] + dO[32][hd+4]
//   + P[4][8][32] + dS[4][8][32] + lse2[32] + D[32] = 128·hd + 2368 floats (75 KB at 128).
#include <cmath>

#include "attention_common.cuh"

using namespace loco_dev;
using namespace loco_attn;

namespace {

template <int EMAX>
__global__ void __launch_bounds__(kThreads)
    attention_dkdv_kernel(bf16* __restrict__ dk, bf16* __restrict__ dv, const float* __restrict__ D,
                          const bf16* __restrict__ dout, const bf16* __restrict__ q,
                          const bf16* __restrict__ k, const bf16* __restrict__ v,
                          const float* __restrict__ lse, int T, int NH, int NKV, int hd,
                          float scale_log2, float scale) {
  extern __shared__ float4 smem4[];
  const int ldq = hd + 4;
  float* Ks = reinterpret_cast<float*>(smem4);  // [kRows][hd]
  float* Vs = Ks + kRows * hd;                  // [kRows][hd]
  float* Qs = Vs + kRows * hd;                  // [kTile][hd+4]
  float* dOs = Qs + kTile * ldq;                // [kTile][hd+4]
  float* Ps = dOs + kTile * ldq;                // [kNW][kR][kTile]
  float* Ss = Ps + kNW * kR * kTile;            // [kNW][kR][kTile]
  float* L2s = Ss + kNW * kR * kTile;           // [kTile] lse · log2 e
  float* Ds = L2s + kTile;                      // [kTile]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int k0 = blockIdx.x * kRows;
  const int kvh = blockIdx.y, b = blockIdx.z;
  const int group = NH / NKV;
  const size_t q_stride = static_cast<size_t>(NH) * hd;
  const size_t kv_stride = static_cast<size_t>(NKV) * hd;
  const size_t kv_base = (static_cast<size_t>(b) * T * NKV + kvh) * hd;

  load_rows(Ks, hd, k + kv_base, kv_stride, k0, kRows, T, hd, 1.f);
  load_rows(Vs, hd, v + kv_base, kv_stride, k0, kRows, T, hd, 1.f);

  const int row0 = k0 + warp * kR;  // this warp's first key
  const bool active = row0 < T;
  const int nqt = (T + kTile - 1) / kTile;

  float dka[kR][EMAX], dva[kR][EMAX];
#pragma unroll
  for (int r = 0; r < kR; ++r)
#pragma unroll
    for (int e = 0; e < EMAX; ++e) dka[r][e] = dva[r][e] = 0.f;

  float* Pw = Ps + warp * kR * kTile;
  float* Sw = Ss + warp * kR * kTile;
  const float* Kw = Ks + warp * kR * hd;
  const float* Vw = Vs + warp * kR * hd;

  for (int hh = 0; hh < group; ++hh) {
    const int h = kvh * group + hh;
    const size_t q_base = (static_cast<size_t>(b) * T * NH + h) * hd;
    const size_t stat_base = (static_cast<size_t>(b) * NH + h) * T;
    for (int qt = blockIdx.x; qt < nqt; ++qt) {  // query tiles with i0 >= k0
      const int i0 = qt * kTile;
      __syncthreads();  // previous tile consumed (K, V visible on the first pass)
      load_rows(Qs, ldq, q + q_base, q_stride, i0, kTile, T, hd, 1.f);
      load_rows(dOs, ldq, dout + q_base, q_stride, i0, kTile, T, hd, 1.f);
      if (threadIdx.x < kTile) {
        const int i = i0 + threadIdx.x;
        L2s[threadIdx.x] = i < T ? lse[stat_base + i] * kLog2e : 0.f;
        Ds[threadIdx.x] = i < T ? D[stat_base + i] : 0.f;
      }
      __syncthreads();
      // warp-uniform skip: inactive warp, or every query of the tile precedes every key
      if (!active || i0 + kTile - 1 < row0) continue;

      float s[kR], dp[kR];
#pragma unroll
      for (int r = 0; r < kR; ++r) s[r] = dp[r] = 0.f;
      const float* qrow = Qs + lane * ldq;
      const float* grow = dOs + lane * ldq;
      for (int d = 0; d < hd; d += 4) {
        const float4 qq = ld4(qrow + d);
        const float4 gg = ld4(grow + d);
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          s[r] += dot4(qq, ld4(Kw + r * hd + d));
          dp[r] += dot4(gg, ld4(Vw + r * hd + d));
        }
      }
      const int i = i0 + lane;
      const float l2 = L2s[lane], Di = Ds[lane];
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const int key = row0 + r;
        const bool valid = i >= key && i < T && key < T;
        const float p = valid ? exp2f(s[r] * scale_log2 - l2) : 0.f;
        Pw[r * kTile + lane] = p;
        Sw[r * kTile + lane] = p * (dp[r] - Di);
      }
      __syncwarp();

      // dva[r][e] += Σ_i P[r][i] dO[i][d];  dka[r][e] += Σ_i dS[r][i] Q[i][d];  d = lane+32e
      for (int i4 = 0; i4 < kTile; i4 += 4) {
        float qv[4][EMAX], gv[4][EMAX];
#pragma unroll
        for (int ii = 0; ii < 4; ++ii)
#pragma unroll
          for (int e = 0; e < EMAX; ++e) {
            const int d = lane + 32 * e;
            qv[ii][e] = d < hd ? Qs[(i4 + ii) * ldq + d] : 0.f;
            gv[ii][e] = d < hd ? dOs[(i4 + ii) * ldq + d] : 0.f;
          }
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          const float4 p4 = ld4(Pw + r * kTile + i4);
          const float4 s4 = ld4(Sw + r * kTile + i4);
#pragma unroll
          for (int e = 0; e < EMAX; ++e) {
            dva[r][e] += p4.x * gv[0][e] + p4.y * gv[1][e] + p4.z * gv[2][e] + p4.w * gv[3][e];
            dka[r][e] += s4.x * qv[0][e] + s4.y * qv[1][e] + s4.z * qv[2][e] + s4.w * qv[3][e];
          }
        }
      }
      __syncwarp();
    }
  }

  if (!active) return;
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int key = row0 + r;
    if (key < T) {
      const size_t off = kv_base + static_cast<size_t>(key) * kv_stride;
#pragma unroll
      for (int e = 0; e < EMAX; ++e) {
        const int d = lane + 32 * e;
        if (d < hd) {
          dk[off + d] = to_bf(dka[r][e] * scale);
          dv[off + d] = to_bf(dva[r][e]);
        }
      }
    }
  }
}

template <int EMAX>
cudaError_t launch_dkdv(bf16* dk, bf16* dv, const float* D, const bf16* dout, const bf16* q,
                        const bf16* k, const bf16* v, const float* lse, int B, int T, int NH,
                        int NKV, int hd, cudaStream_t s) {
  const size_t smem = sizeof(float) * (2 * static_cast<size_t>(kRows) * hd +
                                       2 * static_cast<size_t>(kTile) * (hd + 4) +
                                       2 * kNW * kR * kTile + 2 * kTile);
  cudaError_t e = allow_smem(attention_dkdv_kernel<EMAX>, smem);
  if (e != cudaSuccess) return e;
  const dim3 grid((T + kRows - 1) / kRows, NKV, B);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  attention_dkdv_kernel<EMAX><<<grid, kThreads, smem, s>>>(dk, dv, D, dout, q, k, v, lse, T, NH,
                                                           NKV, hd, scale * kLog2e, scale);
  return cudaGetLastError();
}

}  // namespace

extern "C" cudaError_t loco_attention_backward_dkdv(bf16* dk, bf16* dv, const float* scratch_D,
                                                    const bf16* dout, const bf16* q, const bf16* k,
                                                    const bf16* v, const float* lse, int B, int T,
                                                    int NH, int NKV, int hd, cudaStream_t s) {
  if (B <= 0 || T <= 0 || NKV <= 0) return cudaSuccess;
  if (!head_dim_ok(hd) || NH % NKV != 0 || NKV > 65535 || B > 65535) return cudaErrorInvalidValue;
  if (tc_eligible(hd, {dk, dv, dout, q, k, v}))
    return tc_dkdv(dk, dv, scratch_D, dout, q, k, v, lse, B, T, NH, NKV, hd, s);
  switch ((hd + 31) / 32) {
    case 1:
      return launch_dkdv<1>(dk, dv, scratch_D, dout, q, k, v, lse, B, T, NH, NKV, hd, s);
    case 2:
      return launch_dkdv<2>(dk, dv, scratch_D, dout, q, k, v, lse, B, T, NH, NKV, hd, s);
    case 3:
      return launch_dkdv<3>(dk, dv, scratch_D, dout, q, k, v, lse, B, T, NH, NKV, hd, s);
    default:
      return launch_dkdv<4>(dk, dv, scratch_D, dout, q, k, v, lse, B, T, NH, NKV, hd, s);
  }
}
