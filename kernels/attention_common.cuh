// Shared by attention_fwd.cu, attention_bwd_dq.cu, attention_bwd_dkdv.cu.
//
// Tiling (SIMT, fp32 math on bf16 data, no T×T matrix is ever stored):
//  - a block has kNW = 4 warps; each warp owns kR = 8 "rows" (query rows in the forward and
//    dq kernels, key rows in the dkdv kernel), so a block owns a tile of 32 rows;
//  - the other side is streamed in tiles of 32 (keys in fwd/dq, queries in dkdv) through
//    shared memory as fp32, one element of the tile per lane: lane j computes the full
//    hd-long dot products for tile element j against the warp's 8 rows (float4 reads: the
//    per-lane tile is padded to hd+4 floats per row, which is bank-conflict free for 16-byte
//    accesses; the warp's own rows are read as broadcasts);
//  - the weighted sums (P·V, dS·K, Pᵀ·dO, dSᵀ·Q) give each lane the head dims
//    d = lane + 32e, e < EMAX = ceil(hd/32), accumulators in registers.
// head dims: multiples of 4 up to 128 (EMAX = 1..4 instantiations).
#pragma once
#include <initializer_list>

#include "loco_device.cuh"

namespace loco_attn {

using loco_dev::bf16;

constexpr int kNW = 4;  // warps per block
constexpr int kThreads = kNW * 32;
constexpr int kR = 8;            // rows per warp
constexpr int kRows = kNW * kR;  // rows per block tile (32)
constexpr int kTile = 32;        // streamed tile (one element per lane)
static_assert(kRows == kTile, "dkdv assumes key tiles and query tiles of the same size");

inline bool head_dim_ok(int hd) { return hd >= 4 && hd <= 128 && hd % 4 == 0; }

// Loads rows t0 .. t0+rows-1 of one head (row t at src + t*stride, hd elements) into dst
// (row-major, leading dimension ld floats) as float * mul; rows at t >= T are zero.
// Called by all kThreads threads; no barrier inside.
__device__ __forceinline__ void load_rows(float* dst, int ld, const bf16* src, size_t stride,
                                          int t0, int rows, int T, int hd, float mul) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int r = warp; r < rows; r += kNW) {
    const int t = t0 + r;
    const bf16* s = src + static_cast<size_t>(t) * stride;
    for (int d = lane; d < hd; d += 32) dst[r * ld + d] = t < T ? loco_dev::to_f(s[d]) * mul : 0.f;
  }
}

__device__ __forceinline__ float dot4(float4 a, float4 b) {
  return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

__device__ __forceinline__ float4 ld4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}

// Sets the dynamic shared-memory limit when a launch needs more than the default 48 KB.
template <typename Kernel>
inline cudaError_t allow_smem(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(bytes));
}

// Tensor-core flash-attention path (attention_tc.cu): head dims 64 and 128, all pointers
// 16-byte aligned, and not disabled by the environment variable LOCO_ATTENTION=simt (read
// once). The launchers below dispatch to it; every other case runs the SIMT kernels.
bool tc_enabled();
bool tc_eligible(int hd, std::initializer_list<const void*> ptrs);
cudaError_t tc_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B,
                       int T, int NH, int NKV, int hd, cudaStream_t s);
cudaError_t tc_dq(bf16* dq, const float* D, const bf16* dout, const bf16* q, const bf16* k,
                  const bf16* v, const float* lse, int B, int T, int NH, int NKV, int hd,
                  cudaStream_t s);
cudaError_t tc_dkdv(bf16* dk, bf16* dv, const float* D, const bf16* dout, const bf16* q,
                    const bf16* k, const bf16* v, const float* lse, int B, int T, int NH, int NKV,
                    int hd, cudaStream_t s);

}  // namespace loco_attn
