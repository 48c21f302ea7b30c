// Run-time choice of the SIMD instruction set for the CPU ops' hottest loops.
//
// The library is compiled for baseline x86-64 (SSE2), so plain loops never use AVX. The ops
// that matter (attention, SwiGLU, cross-entropy, ...) therefore also exist as copies compiled
// for AVX2+FMA and for AVX-512 (a wrapper with a `target` attribute that `flatten`s the
// generic template into itself); the best copy the CPU supports is picked once.
// LOCO_CPU_ISA=generic|avx2|avx512 caps the choice (e.g. to measure the difference).
//
// Results are deterministic for a given machine and ISA whatever the thread count; copies
// for different ISAs may differ in the last bits (FMA contraction).
#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace loco::ops {

enum class CpuIsa { Generic = 0, Avx2 = 1, Avx512 = 2 };

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define LOCO_HAVE_ISA_CLONES 1
#define LOCO_TARGET_AVX2 __attribute__((target("avx2,fma,bmi,bmi2,f16c"), flatten))
#define LOCO_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2,f16c"), flatten))
#else
#define LOCO_HAVE_ISA_CLONES 0
#define LOCO_TARGET_AVX2
#define LOCO_TARGET_AVX512
#endif

inline CpuIsa detect_cpu_isa() {
  CpuIsa best = CpuIsa::Generic;
#if LOCO_HAVE_ISA_CLONES
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = CpuIsa::Avx2;
  if (best == CpuIsa::Avx2 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq"))
    best = CpuIsa::Avx512;
#endif
  if (const char* cap = std::getenv("LOCO_CPU_ISA"); cap && *cap) {
    CpuIsa limit = best;
    if (std::strcmp(cap, "generic") == 0)
      limit = CpuIsa::Generic;
    else if (std::strcmp(cap, "avx2") == 0)
      limit = CpuIsa::Avx2;
    else if (std::strcmp(cap, "avx512") == 0)
      limit = CpuIsa::Avx512;
    if (static_cast<int>(limit) < static_cast<int>(best)) best = limit;
  }
  return best;
}

// The instruction set the dispatched ops use on this machine (detected once).
inline CpuIsa cpu_isa() {
  static const CpuIsa isa = detect_cpu_isa();
  return isa;
}

inline const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx512:
      return "avx512";
    case CpuIsa::Avx2:
      return "avx2";
    default:
      return "generic";
  }
}

// LOCO_ISA_CLONES(kernel) defines kernel_avx2 and kernel_avx512, copies of the function
// template `kernel` (returning void) compiled for those instruction sets;
// LOCO_ISA_CALL(kernel, args...) calls the copy this machine uses.
#define LOCO_ISA_CLONES(kernel)                           \
  template <typename... Args>                             \
  LOCO_TARGET_AVX2 void kernel##_avx2(Args... args) {     \
    kernel(args...);                                      \
  }                                                       \
  template <typename... Args>                             \
  LOCO_TARGET_AVX512 void kernel##_avx512(Args... args) { \
    kernel(args...);                                      \
  }
#define LOCO_ISA_CALL(kernel, ...)      \
  do {                                  \
    switch (::loco::ops::cpu_isa()) {   \
      case ::loco::ops::CpuIsa::Avx512: \
        kernel##_avx512(__VA_ARGS__);   \
        break;                          \
      case ::loco::ops::CpuIsa::Avx2:   \
        kernel##_avx2(__VA_ARGS__);     \
        break;                          \
      default:                          \
        kernel(__VA_ARGS__);            \
        break;                          \
    }                                   \
  } while (0)

// Runs fn(begin, end) over [0, n) in pieces of `chunk` elements, in parallel when there is
// more than one piece (small inputs never pay for waking the thread team). The pieces do not
// depend on the thread count.
template <typename Fn>
void for_chunks(size_t n, size_t chunk, Fn&& fn) {
  if (n == 0) return;
  const size_t count = (n + chunk - 1) / chunk;
  if (count == 1) {
    fn(size_t{0}, n);
    return;
  }
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < count; ++c) fn(c * chunk, c + 1 == count ? n : (c + 1) * chunk);
}

// Elements per parallel piece of a streaming elementwise op (~128 KiB of floats): enough
// work to be worth a thread, small enough to split a (B·T, C) activation across cores.
constexpr size_t kElementwiseChunk = size_t{1} << 15;

}  // namespace loco::ops
