// Tensor-core primitives for the flash-attention kernels in attention_tc.cu:
//   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, ldmatrix (.x4, optionally .trans),
//   cp.async (16 B, zero-fill) and bf16x2 packing.
// Fragment layouts (PTX ISA, m16n8k16, g = lane/4, c = lane%4; each 32-bit register holds
// two bf16, the lower column/k index in the low half):
//   A (16x16, row): a0 = A[g][2c..2c+1]   a1 = A[g+8][2c..]   a2 = A[g][2c+8..]  a3 =
//   A[g+8][2c+8..] B (16x8, col):  b0 = B[2c..2c+1][g]   b1 = B[2c+8..2c+9][g] C/D (16x8 f32): d0 =
//   D[g][2c]  d1 = D[g][2c+1]  d2 = D[g+8][2c]  d3 = D[g+8][2c+1] ldmatrix .x4: lanes 8i..8i+7 give
//   the 8 row addresses (16 B each) of 8x8 matrix i; register i of lane t = M_i[t/4][2(t%4)..+1]
//   (.trans: {M_i[2(t%4)][t/4], M_i[2(t%4)+1][t/4]}).
// Under the CPU emulator (build-cuda/emu, LOCO_EMU) the same functions are emulated
// warp-collectively with exactly these layouts.
#pragma once
#include <cstdint>
#include <cstring>

#include "loco_device.cuh"

namespace loco_tc {

using loco_dev::bf16;

__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
#if defined(__CUDA_ARCH__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#elif defined(LOCO_EMU)
  emu::mma16816(d, a, b0, b1);
#endif
}

// Four 8x8 b16 matrices from shared memory; p = this lane's row address (16-byte aligned).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
#if defined(__CUDA_ARCH__)
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
#elif defined(LOCO_EMU)
  emu::ldmatrix_x4(r, p, false);
#endif
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const bf16* p) {
#if defined(__CUDA_ARCH__)
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
#elif defined(LOCO_EMU)
  emu::ldmatrix_x4(r, p, true);
#endif
}

// 16-byte global -> shared copy; zero-fills dst when !valid (src is then not read).
__device__ __forceinline__ void cp_async16(bf16* dst, const bf16* src, bool valid) {
#if defined(__CUDA_ARCH__)
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(src), "r"(n)
               : "memory");
#elif defined(LOCO_EMU)
  emu::cp_async16(dst, src, valid);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// {lo, hi} -> bf16x2 (round to nearest even), lo in the low half.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
#if defined(__CUDA_ARCH__)
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
#else
  const bf16 l = loco_dev::to_bf(lo), h = loco_dev::to_bf(hi);
  uint16_t lb, hb;
  std::memcpy(&lb, &l, 2);
  std::memcpy(&hb, &h, 2);
  return static_cast<uint32_t>(lb) | (static_cast<uint32_t>(hb) << 16);
#endif
}

}  // namespace loco_tc
