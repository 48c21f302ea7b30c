// Tensor-core flash attention (FlashAttention-2 style) for head dims 64 and 128:
// mma.sync m16n8k16 bf16 x bf16 -> f32, ldmatrix from padded shared memory, cp.async
// double-buffered streaming. Same semantics as the SIMT kernels (attention_fwd.cu,
// attention_bwd_dq.cu, attention_bwd_dkdv.cu), whose launchers dispatch here when
// tc_eligible() (hd 64/128, 16-byte aligned pointers, LOCO_ATTENTION != "simt").
//
// All three kernels: 128 threads = 4 warps, every warp owns 16 rows of the block's 64-row
// tile (m16 of the mma); shared-memory rows are padded to HD+8 bf16 (row pitch = 16 B mod
// 128 B, so each 8-row ldmatrix phase and each cp.async row hits distinct bank groups).
//  forward  grid (ceil(T/64), NH, B), heaviest causal tiles first. Q tile 64xHD (fragments
//           kept in registers), K/V tiles 64xHD double-buffered. S = Q Kᵀ (16x64 per warp,
//           f32), online softmax in the log2 domain (scores x scale·log2 e), P -> bf16 A
//           fragments straight from the S accumulators, O += P V (V via ldmatrix.trans).
//           smem = (64 + 4·64)·(HD+8)·2 B = 46 KB (HD 64) / 87 KB (HD 128).
//  dq       grid (ceil(T/64), NH, B). Q, dO tiles resident; K/V tiles double-buffered.
//           S = Q Kᵀ, dP = dO Vᵀ, P = exp2(S·scale·log2e - lse·log2e), dS = P∘(dP - D),
//           dQ += dS K (K via ldmatrix.trans); dq = scale·dQ.  smem = 6·64·(HD+8)·2 B.
//  dkdv     grid (ceil(T/64), NKV, B); block owns keys [k0, k0+64) (no atomics, deterministic).
//           Loops over the group's query heads and the query tiles (BQ = 64 at HD 64, 32 at
//           HD 128 to stay under 255 registers) with i0 + BQ > k0; Q/dO/lse/D tiles
//           double-buffered. Sᵀ = K Qᵀ, dPᵀ = V dOᵀ, Pᵀ, dSᵀ as above (per column = query),
//           dV += Pᵀ dO, dK += dSᵀ Q (dO, Q via ldmatrix.trans); dk = scale·dK.
#include <math_constants.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "attention_common.cuh"
#include "attention_tc.cuh"

using namespace loco_dev;
using namespace loco_tc;

namespace {

constexpr int kThreads = 128;  // 4 warps
constexpr int kBR = 64;        // query rows per block (fwd, dq)
constexpr int kBC = 64;        // keys per tile (fwd, dq) / per block (dkdv)

// rows r0 .. r0+ROWS-1 of one head (row t at src + t*stride) -> dst[ROWS][HD+8] via cp.async;
// rows t >= T are zero-filled. All 128 threads; not committed here.
template <int ROWS, int HD>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, size_t stride, int r0,
                                          int T) {
  constexpr int LD = HD + 8, CPR = HD / 8;  // 16-byte chunks per row
  static_assert((ROWS * CPR) % kThreads == 0, "tile chunks must split evenly");
#pragma unroll
  for (int i = 0; i < ROWS * CPR / kThreads; ++i) {
    const int ch = threadIdx.x + i * kThreads;
    const int r = ch / CPR, col = (ch % CPR) * 8;
    const int t = r0 + r;
    const bool valid = t < T;
    cp_async16(dst + r * LD + col, src + static_cast<size_t>(valid ? t : 0) * stride + col, valid);
  }
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// ------------------------------------------------------------------------------ forward
template <int HD>
__global__ void __launch_bounds__(kThreads)
    attn_fwd_tc(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q,
                const bf16* __restrict__ k, const bf16* __restrict__ v, int T, int NH, int NKV,
                float sl2) {
  constexpr int LD = HD + 8, KS = HD / 16, NS = kBC / 8, NO = HD / 8;
  extern __shared__ float4 smem4[];
  bf16* Qs = reinterpret_cast<bf16*>(smem4);  // [kBR][LD]
  bf16* Ks = Qs + kBR * LD;                   // [2][kBC][LD]
  bf16* Vs = Ks + 2 * kBC * LD;               // [2][kBC][LD]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBR;
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / (NH / NKV);
  const size_t qs = static_cast<size_t>(NH) * HD, kvs = static_cast<size_t>(NKV) * HD;
  const bf16* qb = q + (static_cast<size_t>(b) * T * NH + h) * HD;
  const bf16* kb = k + (static_cast<size_t>(b) * T * NKV + kvh) * HD;
  const bf16* vb = v + (static_cast<size_t>(b) * T * NKV + kvh) * HD;
  const int ntiles = (min(q0 + kBR, T) - 1) / kBC + 1;

  load_tile<kBR, HD>(Qs, qb, qs, q0, T);
  load_tile<kBC, HD>(Ks, kb, kvs, 0, T);
  load_tile<kBC, HD>(Vs, vb, kvs, 0, T);
  cp_async_commit();

  const int ar = (lane & 7) + ((lane >> 3) & 1) * 8, ac = (lane >> 4) * 8;  // A, trans-B
  const int br = (lane & 7) + (lane >> 4) * 8, bc = ((lane >> 3) & 1) * 8;  // B from [n][k]
  const int wrow = q0 + warp * 16;  // warp's first query row
  const int row_a = wrow + g;       // rows row_a, row_a + 8

  uint32_t qf[KS][4];
  float o[NO][4];
  float m[2] = {-CUDART_INF_F, -CUDART_INF_F}, l[2] = {0.f, 0.f};
#pragma unroll
  for (int n = 0; n < NO; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;

  for (int kt = 0; kt < ntiles; ++kt) {
    const int cur = kt & 1;
    if (kt + 1 < ntiles) {
      load_tile<kBC, HD>(Ks + (cur ^ 1) * kBC * LD, kb, kvs, (kt + 1) * kBC, T);
      load_tile<kBC, HD>(Vs + (cur ^ 1) * kBC * LD, vb, kvs, (kt + 1) * kBC, T);
    }
    cp_async_commit();
    cp_async_wait<1>();  // tile kt (and Q) landed
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) ldsm_x4(qf[ks], Qs + (warp * 16 + ar) * LD + ks * 16 + ac);
    }
    const bf16* Kc = Ks + cur * kBC * LD;
    const bf16* Vc = Vs + cur * kBC * LD;

    float s[NS][4];
#pragma unroll
    for (int j = 0; j < NS; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks)
#pragma unroll
      for (int np = 0; np < NS / 2; ++np) {
        uint32_t kf[4];
        ldsm_x4(kf, Kc + (np * 16 + br) * LD + ks * 16 + bc);
        mma16816(s[2 * np], qf[ks], kf[0], kf[1]);
        mma16816(s[2 * np + 1], qf[ks], kf[2], kf[3]);
      }

    const int k0 = kt * kBC;
    const bool mask = k0 + kBC - 1 > wrow || k0 + kBC > T;  // warp-uniform
    float mx[2] = {-CUDART_INF_F, -CUDART_INF_F};
#pragma unroll
    for (int j = 0; j < NS; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[j][e] * sl2;
        if (mask) {
          const int key = k0 + 8 * j + 2 * c + (e & 1);
          const int row = row_a + (e >> 1) * 8;
          if (key > row || key >= T) x = -CUDART_INF_F;
        }
        s[j][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    float corr[2], ms[2], rs[2] = {0.f, 0.f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float mn = fmaxf(m[r], quad_max(mx[r]));
      ms[r] = mn == -CUDART_INF_F ? 0.f : mn;  // fully masked so far (cannot happen; no NaN)
      corr[r] = exp2f(m[r] - ms[r]);           // 0 on the first tile
      m[r] = mn;
    }
#pragma unroll
    for (int j = 0; j < NS; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(s[j][e] - ms[e >> 1]);
        s[j][e] = p;
        rs[e >> 1] += p;
      }
#pragma unroll
    for (int r = 0; r < 2; ++r)
      l[r] = l[r] * corr[r] + rs[r];  // per-lane share; quad-summed at the end
#pragma unroll
    for (int n = 0; n < NO; ++n) {
      o[n][0] *= corr[0];
      o[n][1] *= corr[0];
      o[n][2] *= corr[1];
      o[n][3] *= corr[1];
    }

    // O += P V
#pragma unroll
    for (int kk = 0; kk < kBC / 16; ++kk) {
      const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]),
                              pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int np = 0; np < NO / 2; ++np) {
        uint32_t vf[4];
        ldsm_x4_t(vf, Vc + (kk * 16 + ar) * LD + np * 16 + ac);
        mma16816(o[2 * np], pa, vf[0], vf[1]);
        mma16816(o[2 * np + 1], pa, vf[2], vf[3]);
      }
    }
    __syncthreads();  // buffer cur is refilled by the next iteration's prefetch
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float lt = quad_sum(l[r]);
    const int row = row_a + 8 * r;
    if (row < T) {
      const float inv = 1.f / lt;
      bf16* orow = out + (static_cast<size_t>(b) * T + row) * qs + static_cast<size_t>(h) * HD;
#pragma unroll
      for (int n = 0; n < NO; ++n)
        *reinterpret_cast<uint32_t*>(orow + 8 * n + 2 * c) =
            pack_bf16(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
      if (c == 0) lse[(static_cast<size_t>(b) * NH + h) * T + row] = (m[r] + log2f(lt)) * kLn2;
    }
  }
}

// ------------------------------------------------------------------------------ dq
template <int HD>
__global__ void __launch_bounds__(kThreads)
    attn_dq_tc(bf16* __restrict__ dq, const float* __restrict__ D, const bf16* __restrict__ dout,
               const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
               const float* __restrict__ lse, int T, int NH, int NKV, float sl2, float scale) {
  constexpr int LD = HD + 8, KS = HD / 16, NS = kBC / 8, NO = HD / 8;
  extern __shared__ float4 smem4[];
  bf16* Qs = reinterpret_cast<bf16*>(smem4);  // [kBR][LD]
  bf16* dOs = Qs + kBR * LD;                  // [kBR][LD]
  bf16* Ks = dOs + kBR * LD;                  // [2][kBC][LD]
  bf16* Vs = Ks + 2 * kBC * LD;               // [2][kBC][LD]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBR;
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / (NH / NKV);
  const size_t qs = static_cast<size_t>(NH) * HD, kvs = static_cast<size_t>(NKV) * HD;
  const size_t q_base = (static_cast<size_t>(b) * T * NH + h) * HD;
  const bf16* kb = k + (static_cast<size_t>(b) * T * NKV + kvh) * HD;
  const bf16* vb = v + (static_cast<size_t>(b) * T * NKV + kvh) * HD;
  const size_t stat = (static_cast<size_t>(b) * NH + h) * T;
  const int ntiles = (min(q0 + kBR, T) - 1) / kBC + 1;

  load_tile<kBR, HD>(Qs, q + q_base, qs, q0, T);
  load_tile<kBR, HD>(dOs, dout + q_base, qs, q0, T);
  load_tile<kBC, HD>(Ks, kb, kvs, 0, T);
  load_tile<kBC, HD>(Vs, vb, kvs, 0, T);
  cp_async_commit();

  const int ar = (lane & 7) + ((lane >> 3) & 1) * 8, ac = (lane >> 4) * 8;
  const int br = (lane & 7) + (lane >> 4) * 8, bc = ((lane >> 3) & 1) * 8;
  const int wrow = q0 + warp * 16;
  const int row_a = wrow + g;

  float l2[2], Dr[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_a + 8 * r;
    l2[r] = row < T ? lse[stat + row] * kLog2e : 0.f;
    Dr[r] = row < T ? D[stat + row] : 0.f;
  }
  float acc[NO][4];
#pragma unroll
  for (int n = 0; n < NO; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

  for (int kt = 0; kt < ntiles; ++kt) {
    const int cur = kt & 1;
    if (kt + 1 < ntiles) {
      load_tile<kBC, HD>(Ks + (cur ^ 1) * kBC * LD, kb, kvs, (kt + 1) * kBC, T);
      load_tile<kBC, HD>(Vs + (cur ^ 1) * kBC * LD, vb, kvs, (kt + 1) * kBC, T);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const bf16* Kc = Ks + cur * kBC * LD;
    const bf16* Vc = Vs + cur * kBC * LD;

    float s[NS][4], dp[NS][4];
#pragma unroll
    for (int j = 0; j < NS; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      uint32_t qa[4], da[4];
      ldsm_x4(qa, Qs + (warp * 16 + ar) * LD + ks * 16 + ac);
      ldsm_x4(da, dOs + (warp * 16 + ar) * LD + ks * 16 + ac);
#pragma unroll
      for (int np = 0; np < NS / 2; ++np) {
        uint32_t kf[4], vf[4];
        ldsm_x4(kf, Kc + (np * 16 + br) * LD + ks * 16 + bc);
        ldsm_x4(vf, Vc + (np * 16 + br) * LD + ks * 16 + bc);
        mma16816(s[2 * np], qa, kf[0], kf[1]);
        mma16816(s[2 * np + 1], qa, kf[2], kf[3]);
        mma16816(dp[2 * np], da, vf[0], vf[1]);
        mma16816(dp[2 * np + 1], da, vf[2], vf[3]);
      }
    }

    const int k0 = kt * kBC;
    const bool mask = k0 + kBC - 1 > wrow || k0 + kBC > T;
#pragma unroll
    for (int j = 0; j < NS; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        float p = exp2f(s[j][e] * sl2 - l2[r]);
        if (mask) {
          const int key = k0 + 8 * j + 2 * c + (e & 1);
          const int row = row_a + 8 * r;
          if (key > row || key >= T) p = 0.f;
        }
        s[j][e] = p * (dp[j][e] - Dr[r]);  // dS
      }

      // dQ += dS K
#pragma unroll
    for (int kk = 0; kk < kBC / 16; ++kk) {
      const uint32_t sa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]),
                              pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int np = 0; np < NO / 2; ++np) {
        uint32_t kf[4];
        ldsm_x4_t(kf, Kc + (kk * 16 + ar) * LD + np * 16 + ac);
        mma16816(acc[2 * np], sa, kf[0], kf[1]);
        mma16816(acc[2 * np + 1], sa, kf[2], kf[3]);
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_a + 8 * r;
    if (row < T) {
      bf16* dst = dq + q_base + static_cast<size_t>(row) * qs;
#pragma unroll
      for (int n = 0; n < NO; ++n)
        *reinterpret_cast<uint32_t*>(dst + 8 * n + 2 * c) =
            pack_bf16(acc[n][2 * r] * scale, acc[n][2 * r + 1] * scale);
    }
  }
}

// ------------------------------------------------------------------------------ dk, dv
template <int HD, int BQ>
__device__ __forceinline__ void dkdv_issue(bf16* Qd, bf16* dOd, float* Ld, float* Dd, const bf16* q,
                                           const bf16* dout, const float* lse, const float* D,
                                           int b, int h, int i0, int T, int NH) {
  const size_t qs = static_cast<size_t>(NH) * HD;
  const size_t q_base = (static_cast<size_t>(b) * T * NH + h) * HD;
  load_tile<BQ, HD>(Qd, q + q_base, qs, i0, T);
  load_tile<BQ, HD>(dOd, dout + q_base, qs, i0, T);
  if (threadIdx.x < BQ) {
    const size_t stat = (static_cast<size_t>(b) * NH + h) * T;
    const int i = i0 + threadIdx.x;
    Ld[threadIdx.x] = i < T ? lse[stat + i] * kLog2e : 0.f;
    Dd[threadIdx.x] = i < T ? D[stat + i] : 0.f;
  }
}

template <int HD, int BQ>
__global__ void __launch_bounds__(kThreads)
    attn_dkdv_tc(bf16* __restrict__ dk, bf16* __restrict__ dv, const float* __restrict__ D,
                 const bf16* __restrict__ dout, const bf16* __restrict__ q,
                 const bf16* __restrict__ k, const bf16* __restrict__ v,
                 const float* __restrict__ lse, int T, int NH, int NKV, float sl2, float scale) {
  constexpr int LD = HD + 8, KS = HD / 16, NSQ = BQ / 8, NO = HD / 8;
  static_assert(kBC % BQ == 0 && BQ % 16 == 0, "query tile");
  extern __shared__ float4 smem4[];
  bf16* Ks = reinterpret_cast<bf16*>(smem4);                // [kBC][LD]
  bf16* Vs = Ks + kBC * LD;                                 // [kBC][LD]
  bf16* Qs = Vs + kBC * LD;                                 // [2][BQ][LD]
  bf16* dOs = Qs + 2 * BQ * LD;                             // [2][BQ][LD]
  float* Ls = reinterpret_cast<float*>(dOs + 2 * BQ * LD);  // [2][BQ] lse·log2 e
  float* Dsm = Ls + 2 * BQ;                                 // [2][BQ]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int k0 = blockIdx.x * kBC;
  const int kvh = blockIdx.y, b = blockIdx.z, group = NH / NKV;
  const size_t kvs = static_cast<size_t>(NKV) * HD;
  const size_t kv_base = (static_cast<size_t>(b) * T * NKV + kvh) * HD;
  const int qt0 = k0 / BQ, nqt = (T + BQ - 1) / BQ;
  const int per_head = nqt - qt0, total = group * per_head;

  load_tile<kBC, HD>(Ks, k + kv_base, kvs, k0, T);
  load_tile<kBC, HD>(Vs, v + kv_base, kvs, k0, T);
  dkdv_issue<HD, BQ>(Qs, dOs, Ls, Dsm, q, dout, lse, D, b, kvh * group, qt0 * BQ, T, NH);
  cp_async_commit();

  const int ar = (lane & 7) + ((lane >> 3) & 1) * 8, ac = (lane >> 4) * 8;
  const int br = (lane & 7) + (lane >> 4) * 8, bc = ((lane >> 3) & 1) * 8;
  const int wkey = k0 + warp * 16;  // warp's first key
  const int key_a = wkey + g;       // keys key_a, key_a + 8

  float dka[NO][4], dva[NO][4];
#pragma unroll
  for (int n = 0; n < NO; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dka[n][e] = dva[n][e] = 0.f;

  for (int it = 0; it < total; ++it) {
    const int cur = it & 1;
    if (it + 1 < total) {
      const int nx = it + 1;
      dkdv_issue<HD, BQ>(Qs + (cur ^ 1) * BQ * LD, dOs + (cur ^ 1) * BQ * LD, Ls + (cur ^ 1) * BQ,
                         Dsm + (cur ^ 1) * BQ, q, dout, lse, D, b, kvh * group + nx / per_head,
                         (qt0 + nx % per_head) * BQ, T, NH);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int i0 = (qt0 + it % per_head) * BQ;
    const bf16* Qc = Qs + cur * BQ * LD;
    const bf16* dOc = dOs + cur * BQ * LD;
    const float* Lc = Ls + cur * BQ;
    const float* Dc = Dsm + cur * BQ;

    float st[NSQ][4], dpt[NSQ][4];
#pragma unroll
    for (int j = 0; j < NSQ; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[j][e] = dpt[j][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      uint32_t ka[4], va[4];
      ldsm_x4(ka, Ks + (warp * 16 + ar) * LD + ks * 16 + ac);
      ldsm_x4(va, Vs + (warp * 16 + ar) * LD + ks * 16 + ac);
#pragma unroll
      for (int np = 0; np < NSQ / 2; ++np) {
        uint32_t qf[4], of[4];
        ldsm_x4(qf, Qc + (np * 16 + br) * LD + ks * 16 + bc);
        ldsm_x4(of, dOc + (np * 16 + br) * LD + ks * 16 + bc);
        mma16816(st[2 * np], ka, qf[0], qf[1]);
        mma16816(st[2 * np + 1], ka, qf[2], qf[3]);
        mma16816(dpt[2 * np], va, of[0], of[1]);
        mma16816(dpt[2 * np + 1], va, of[2], of[3]);
      }
    }

    // some query of the tile precedes some key of the warp, or the tile runs past T
    const bool mask = i0 < wkey + 15 || i0 + BQ > T;
#pragma unroll
    for (int j = 0; j < NSQ; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = 8 * j + 2 * c + (e & 1);
        float p = exp2f(st[j][e] * sl2 - Lc[col]);
        if (mask) {
          const int query = i0 + col, key = key_a + 8 * (e >> 1);
          if (query < key || query >= T) p = 0.f;
        }
        st[j][e] = p;
        dpt[j][e] = p * (dpt[j][e] - Dc[col]);  // dSᵀ
      }

      // dV += Pᵀ dO,  dK += dSᵀ Q
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk) {
      const uint32_t pa[4] = {pack_bf16(st[2 * kk][0], st[2 * kk][1]),
                              pack_bf16(st[2 * kk][2], st[2 * kk][3]),
                              pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                              pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3])};
      const uint32_t sa[4] = {pack_bf16(dpt[2 * kk][0], dpt[2 * kk][1]),
                              pack_bf16(dpt[2 * kk][2], dpt[2 * kk][3]),
                              pack_bf16(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]),
                              pack_bf16(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3])};
#pragma unroll
      for (int np = 0; np < NO / 2; ++np) {
        uint32_t of[4], qf[4];
        ldsm_x4_t(of, dOc + (kk * 16 + ar) * LD + np * 16 + ac);
        mma16816(dva[2 * np], pa, of[0], of[1]);
        mma16816(dva[2 * np + 1], pa, of[2], of[3]);
        ldsm_x4_t(qf, Qc + (kk * 16 + ar) * LD + np * 16 + ac);
        mma16816(dka[2 * np], sa, qf[0], qf[1]);
        mma16816(dka[2 * np + 1], sa, qf[2], qf[3]);
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = key_a + 8 * r;
    if (key < T) {
      const size_t off = kv_base + static_cast<size_t>(key) * kvs;
#pragma unroll
      for (int n = 0; n < NO; ++n) {
        *reinterpret_cast<uint32_t*>(dk + off + 8 * n + 2 * c) =
            pack_bf16(dka[n][2 * r] * scale, dka[n][2 * r + 1] * scale);
        *reinterpret_cast<uint32_t*>(dv + off + 8 * n + 2 * c) =
            pack_bf16(dva[n][2 * r], dva[n][2 * r + 1]);
      }
    }
  }
}

// ------------------------------------------------------------------------------ launchers
template <int HD>
cudaError_t fwd(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B, int T,
                int NH, int NKV, cudaStream_t s) {
  const size_t smem = sizeof(bf16) * (kBR + 4 * kBC) * (HD + 8);
  cudaError_t e = loco_attn::allow_smem(attn_fwd_tc<HD>, smem);
  if (e != cudaSuccess) return e;
  const dim3 grid((T + kBR - 1) / kBR, NH, B);
  const float sl2 = (1.0f / std::sqrt(static_cast<float>(HD))) * kLog2e;
  attn_fwd_tc<HD><<<grid, kThreads, smem, s>>>(out, lse, q, k, v, T, NH, NKV, sl2);
  return cudaGetLastError();
}

template <int HD>
cudaError_t dqk(bf16* dq, const float* D, const bf16* dout, const bf16* q, const bf16* k,
                const bf16* v, const float* lse, int B, int T, int NH, int NKV, cudaStream_t s) {
  const size_t smem = sizeof(bf16) * (2 * kBR + 4 * kBC) * (HD + 8);
  cudaError_t e = loco_attn::allow_smem(attn_dq_tc<HD>, smem);
  if (e != cudaSuccess) return e;
  const dim3 grid((T + kBR - 1) / kBR, NH, B);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HD));
  attn_dq_tc<HD>
      <<<grid, kThreads, smem, s>>>(dq, D, dout, q, k, v, lse, T, NH, NKV, scale * kLog2e, scale);
  return cudaGetLastError();
}

template <int HD, int BQ>
cudaError_t dkdv(bf16* dk, bf16* dv, const float* D, const bf16* dout, const bf16* q, const bf16* k,
                 const bf16* v, const float* lse, int B, int T, int NH, int NKV, cudaStream_t s) {
  const size_t smem = sizeof(bf16) * (2 * kBC + 4 * BQ) * (HD + 8) + sizeof(float) * 4 * BQ;
  cudaError_t e = loco_attn::allow_smem(attn_dkdv_tc<HD, BQ>, smem);
  if (e != cudaSuccess) return e;
  const dim3 grid((T + kBC - 1) / kBC, NKV, B);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HD));
  attn_dkdv_tc<HD, BQ><<<grid, kThreads, smem, s>>>(dk, dv, D, dout, q, k, v, lse, T, NH, NKV,
                                                    scale * kLog2e, scale);
  return cudaGetLastError();
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

namespace loco_attn {

bool tc_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("LOCO_ATTENTION");
    return !(e != nullptr && std::strcmp(e, "simt") == 0);
  }();
  return on;
}

bool tc_eligible(int hd, std::initializer_list<const void*> ptrs) {
  if ((hd != 64 && hd != 128) || !tc_enabled()) return false;
  for (const void* p : ptrs)
    if (!aligned16(p)) return false;
  return true;
}

cudaError_t tc_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B,
                       int T, int NH, int NKV, int hd, cudaStream_t s) {
  return hd == 64 ? fwd<64>(out, lse, q, k, v, B, T, NH, NKV, s)
                  : fwd<128>(out, lse, q, k, v, B, T, NH, NKV, s);
}

cudaError_t tc_dq(bf16* dq, const float* D, const bf16* dout, const bf16* q, const bf16* k,
                  const bf16* v, const float* lse, int B, int T, int NH, int NKV, int hd,
                  cudaStream_t s) {
  return hd == 64 ? dqk<64>(dq, D, dout, q, k, v, lse, B, T, NH, NKV, s)
                  : dqk<128>(dq, D, dout, q, k, v, lse, B, T, NH, NKV, s);
}

cudaError_t tc_dkdv(bf16* dk, bf16* dv, const float* D, const bf16* dout, const bf16* q,
                    const bf16* k, const bf16* v, const float* lse, int B, int T, int NH, int NKV,
                    int hd, cudaStream_t s) {
  return hd == 64 ? dkdv<64, 64>(dk, dv, D, dout, q, k, v, lse, B, T, NH, NKV, s)
                  : dkdv<128, 32>(dk, dv, D, dout, q, k, v, lse, B, T, NH, NKV, s);
}

}  // namespace loco_attn
