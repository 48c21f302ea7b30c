// A CPU emulator for loco's CUDA kernels (scripts/emu-check.sh): every CUDA thread is a
// fiber, blocks run one after another, __syncthreads / __syncwarp / shuffles /
// ballots are cooperative switches. It aborts on what would be undefined on a GPU: barriers
// reached by only part of a block (deadlock), warp collectives with exited lanes, ldmatrix /
// cp.async addresses outside the dynamic shared memory or not 16-byte aligned. Dynamic shared
// memory starts poisoned with NaN bytes. mma.sync m16n8k16 (bf16 → f32), ldmatrix .x4
// (.trans) and cp.async follow the PTX ISA fragment layouts.
//
// What it cannot show: float math is the host's (no flush-to-zero, exact division, no fused
// multiply-add unless the compiler makes one, double-precision accumulation in the cuBLASLt
// stand-in), memory is sequentially consistent (races that a GPU would expose stay hidden)
// and timing means nothing. Stream capture (CUDA graphs) records launches, copies, memsets
// and GEMMs and replays them; a synchronisation, allocation or free while capturing fails
// the capture, as on a GPU. A pass here is necessary, not sufficient: scripts/gpu-check.sh
// on a GPU is the real test.
#pragma once
#include <cstring>
inline float __int_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
#include <cuda_runtime_api.h>
#include <cuda_bf16.h>
#include <math_constants.h>
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

namespace emu {
enum State { RUN = 0, WAIT_BLOCK = 1, WAIT_WARP = 2, DONE = 3 };
// One CUDA thread. Fibers persist across blocks and launches: each runs "the current block's
// body, then park as DONE" in a loop, so a block costs no context creation. Switches use
// _setjmp/_longjmp (no signal-mask system call, unlike swapcontext); the ucontext is used once,
// to start the fiber on its own stack.
struct Fiber {
  ucontext_t ctx;
  jmp_buf jb;
  bool started = false;
  char* stack = nullptr;
  uint3 tid;
  int lane = 0, warp = 0, state = RUN;
};
extern Fiber* g_cur;
extern uint3 g_block;
extern dim3 g_blockDim, g_gridDim;
extern std::vector<unsigned char> g_dyn;
extern double g_warp_vals[64][32];
// Parks the current thread in state `st` and returns to the block scheduler.
inline void yield(int st) {
  extern jmp_buf g_main_jb;
  g_cur->state = st;
  if (!_setjmp(g_cur->jb)) _longjmp(g_main_jb, 1);
}
void run(dim3 grid, dim3 block, size_t smem, std::function<void()> body);
// While a stream capture records (mock_cudart_cublaslt.cpp), launches are appended here with
// their arguments copied, as a CUDA graph captures them, instead of running.
extern std::vector<std::function<void()>>* g_capture;
template <typename F, typename... A>
void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t, F* kernel, A&&... args) {
  if (g_capture != nullptr) {
    g_capture->push_back([=] { run(grid, block, smem, [&] { kernel(args...); }); });
    return;
  }
  run(grid, block, smem, [&] { kernel(args...); });
}
template <typename T>
T* dyn_smem() { return reinterpret_cast<T*>(g_dyn.data()); }
}  // namespace emu

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __forceinline__
#define __forceinline__ inline
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __shared__
#define __shared__ static
#define threadIdx (emu::g_cur->tid)
#define blockIdx (emu::g_block)
#define blockDim (emu::g_blockDim)
#define gridDim (emu::g_gridDim)

inline void __syncthreads() { emu::yield(emu::WAIT_BLOCK); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::yield(emu::WAIT_WARP); }
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int m) {
  static_assert(sizeof(T) <= 8);
  static unsigned char slots[64][32][8];  // raw bytes: exact for integers and doubles
  auto& w = slots[emu::g_cur->warp];
  std::memcpy(w[emu::g_cur->lane], &v, sizeof(T));
  __syncwarp();
  T r;
  std::memcpy(&r, w[emu::g_cur->lane ^ m], sizeof(T));
  __syncwarp();
  return r;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  const unsigned long long o = *p;
  *p = o + v;
  return o;
}
inline int __any_sync(unsigned, int p) {
  auto& w = emu::g_warp_vals[emu::g_cur->warp];
  w[emu::g_cur->lane] = p ? 1.0 : 0.0;
  __syncwarp();
  int any = 0;
  for (int i = 0; i < 32; ++i) any |= w[i] != 0.0;
  __syncwarp();
  return any;
}
inline unsigned __ballot_sync(unsigned, int p) {
  auto& w = emu::g_warp_vals[emu::g_cur->warp];
  w[emu::g_cur->lane] = p ? 1.0 : 0.0;
  __syncwarp();
  unsigned m = 0;
  for (int i = 0; i < 32; ++i) m |= (w[i] != 0.0 ? 1u : 0u) << i;
  __syncwarp();
  return m;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned o = *p; *p = o + v; return o; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { volatile double r = a + b; return r; }
inline double __dsub_rn(double a, double b) { volatile double r = a - b; return r; }
inline double __dmul_rn(double a, double b) { volatile double r = a * b; return r; }
inline double __ddiv_rn(double a, double b) { volatile double r = a / b; return r; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline float __double2float_rn(double a) { return static_cast<float>(a); }
inline long long __double_as_longlong(double x) { long long u; std::memcpy(&u, &x, 8); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline int __clz(unsigned x) { return x == 0 ? 32 : __builtin_clz(x); }
inline unsigned atomicOr(unsigned* p, unsigned v) { unsigned o = *p; *p |= v; return o; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline unsigned __float_as_uint(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }
inline int __float_as_int(float x) { int u; std::memcpy(&u, &x, 4); return u; }
inline float atomicAdd(float* p, float v) { float o = *p; *p = o + v; return o; }
inline int atomicOr(int* p, int v) { int o = *p; *p |= v; return o; }
using std::max;
using std::min;
template <typename T>
cudaError_t cudaFuncSetAttribute(T*, cudaFuncAttribute, int) { return cudaSuccess; }
template <typename T>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes*, T*) { return cudaSuccess; }

// ---- tensor-core / async-copy emulation (attention_tc.cuh), PTX ISA fragment layouts.
#define LOCO_EMU 1
#include <cstdint>
namespace emu {
inline uint32_t g_mma_a[64][32][4], g_mma_b[64][32][2];
inline const void* g_ptr[64][32];
inline void check_smem(const void* p, size_t n, const char* what) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < g_dyn.data() || c + n > g_dyn.data() + g_dyn.size() ||
      (reinterpret_cast<uintptr_t>(p) & 15u) != 0) {
    std::fprintf(stderr, "EMU ERROR: %s: bad shared address %p (smem %p + %zu) block (%u,%u,%u) thread %u\n",
                 what, p, (void*)g_dyn.data(), g_dyn.size(), g_block.x, g_block.y, g_block.z, g_cur->tid.x);
    std::abort();
  }
}
inline float bf_half(uint32_t r, int hi) {
  const uint32_t bits = (hi ? (r >> 16) : (r & 0xffffu)) << 16;
  float f; std::memcpy(&f, &bits, 4); return f;
}
inline void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const int w = g_cur->warp, l = g_cur->lane;
  for (int i = 0; i < 4; ++i) g_mma_a[w][l][i] = a[i];
  g_mma_b[w][l][0] = b0; g_mma_b[w][l][1] = b1;
  __syncwarp();
  auto A = [&](int r, int k) { return bf_half(g_mma_a[w][(r & 7) * 4 + (k & 7) / 2][(r >> 3) + 2 * (k >> 3)], k & 1); };
  auto B = [&](int k, int n) { return bf_half(g_mma_b[w][n * 4 + (k & 7) / 2][k >> 3], k & 1); };
  const int g = l >> 2, c = l & 3;
  float o[4];
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i >> 1), col = 2 * c + (i & 1);
    float acc = d[i];
    for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
    o[i] = acc;
  }
  __syncwarp();
  for (int i = 0; i < 4; ++i) d[i] = o[i];
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* p, bool trans) {
  const int w = g_cur->warp, l = g_cur->lane;
  check_smem(p, 16, "ldmatrix");
  g_ptr[w][l] = p;
  __syncwarp();
  const int g = l >> 2, c = l & 3;
  for (int i = 0; i < 4; ++i) {
    uint16_t lo, hi;
    if (!trans) {
      const auto* row = static_cast<const uint16_t*>(g_ptr[w][8 * i + g]);
      lo = row[2 * c]; hi = row[2 * c + 1];
    } else {
      lo = static_cast<const uint16_t*>(g_ptr[w][8 * i + 2 * c])[g];
      hi = static_cast<const uint16_t*>(g_ptr[w][8 * i + 2 * c + 1])[g];
    }
    r[i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  __syncwarp();
}
inline void cp_async16(void* dst, const void* src, bool valid) {
  check_smem(dst, 16, "cp.async");
  if (valid) std::memcpy(dst, src, 16); else std::memset(dst, 0, 16);
}
}  // namespace emu
