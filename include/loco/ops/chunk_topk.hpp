// CPU reference of the compression primitives the backends share (Backend::chunked_topk,
// gather, scatter_subtract, scatter_accumulate, divide, ef_accumulate; kernels/chunk_topk.cu
// and kernels/scatter.cu are the CUDA versions and must agree bit for bit).
//
// A chunk is a tile of h × w elements of a flat buffer whose (0,0) element sits at `base`,
// rows `stride` apart (loco/compress/compress.hpp, "Chunks"). The backends read chunks from a
// table of kChunkRowInts i32 per chunk so the same table can live in device memory.
// Flat indices travel as i32 words holding uint32 bits: buffers of up to 2^32 − 1 elements.
#pragma once
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>

namespace loco::ops {

struct ChunkRow {
  uint64_t base = 0;        // flat index of the tile's (0,0) element
  uint32_t stride = 0;      // elements between rows
  uint32_t h = 0, w = 0;    // tile shape
  uint32_t k = 0;           // elements chunked top-k keeps
  uint64_t kept_start = 0;  // where this chunk's kept elements start in the output arrays
  uint32_t size() const { return h * w; }
  uint64_t flat(uint32_t offset) const { return base + uint64_t(offset / w) * stride + offset % w; }
};

inline constexpr int kChunkRowInts = 8;

// Row layout: base lo, base hi, stride, h, w, k, kept_start lo, kept_start hi.
inline void pack_chunk_row(const ChunkRow& r, int32_t* out) {
  const uint32_t words[kChunkRowInts] = {
      uint32_t(r.base),       uint32_t(r.base >> 32),      r.stride, r.h, r.w, r.k,
      uint32_t(r.kept_start), uint32_t(r.kept_start >> 32)};
  for (int i = 0; i < kChunkRowInts; ++i) out[i] = std::bit_cast<int32_t>(words[i]);
}

inline ChunkRow unpack_chunk_row(const int32_t* in) {
  auto u = [in](int i) { return std::bit_cast<uint32_t>(in[i]); };
  ChunkRow r;
  r.base = uint64_t(u(0)) | (uint64_t(u(1)) << 32);
  r.stride = u(2);
  r.h = u(3);
  r.w = u(4);
  r.k = u(5);
  r.kept_start = uint64_t(u(6)) | (uint64_t(u(7)) << 32);
  return r;
}

// The ordering key of a value: the IEEE bits of |x| (monotone in |x|, NaN above ∞).
inline uint32_t magnitude_bits(float x) { return std::bit_cast<uint32_t>(x) & 0x7fffffffu; }

// The k largest magnitudes of one chunk, ties to the lower offset; their offsets ascending
// into `offsets` (k of them). `mag` and `scratch` hold at least size() words each.
inline void chunk_topk(const ChunkRow& g, const float* x, uint32_t* offsets, uint32_t* mag,
                       uint32_t* scratch) {
  const uint32_t C = g.size(), k = g.k;
  if (k >= C) {
    for (uint32_t i = 0; i < C; ++i) offsets[i] = i;
    return;
  }
  uint32_t p = 0;
  for (uint32_t r = 0; r < g.h; ++r) {
    const float* row = x + g.base + uint64_t(r) * g.stride;
    for (uint32_t col = 0; col < g.w; ++col, ++p) mag[p] = magnitude_bits(row[col]);
  }
  // Threshold T = the k-th largest magnitude; keep every magnitude > T and, of those equal to
  // T, the lowest offsets: one scan in offset order, so the offsets come out sorted.
  // Finding T: when k is small, a strided sample gives a lower bound T0 with (almost always)
  // at least k magnitudes >= T0; T is then the k-th largest of those few candidates (the same
  // T: every magnitude >= T0 is a candidate). Else: all of them.
  uint32_t m = 0;
  if (C >= 1024 && k * 8 <= C) {
    const uint32_t stride = 8, samples = C / stride;
    const uint32_t rank = std::min(samples - 1, (k / stride) * 5 / 2 + 2);
    for (uint32_t i = 0; i < samples; ++i) scratch[i] = mag[i * stride];
    std::nth_element(scratch, scratch + rank, scratch + samples, std::greater<uint32_t>());
    const uint32_t T0 = scratch[rank];
    for (uint32_t i = 0; i < C; ++i) {
      scratch[m] = mag[i];
      m += mag[i] >= T0;
    }
    if (m < k) m = 0;  // the sample was unlucky: fall back to every magnitude
  }
  if (m == 0) {
    std::copy(mag, mag + C, scratch);
    m = C;
  }
  std::nth_element(scratch, scratch + (k - 1), scratch + m, std::greater<uint32_t>());
  const uint32_t T = scratch[k - 1];
  uint32_t above = 0;
  for (uint32_t i = 0; i < k; ++i) above += scratch[i] > T;
  uint32_t ties = k - above, n = 0;
  for (uint32_t i = 0; i < C; ++i) {
    if (mag[i] > T) {
      offsets[n++] = i;
    } else if (mag[i] == T && ties > 0) {
      --ties;
      offsets[n++] = i;
    }
  }
}

// GCC contracts a·b + c across statements into an fma where the target has one
// (-ffp-contract=fast is its default); clang only within one expression. Functions whose
// roundings are part of their contract opt out.
#if defined(__GNUC__) && !defined(__clang__)
#define LOCO_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define LOCO_NO_FP_CONTRACT
#endif

// e = fl(fl(β·e) + Δ): two roundings, never fused (the EF identity in compress.hpp needs the
// stored t to be exactly this value on every backend).
LOCO_NO_FP_CONTRACT inline void ef_accumulate(float* e, const float* delta, float beta, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float decayed = beta * e[i];
    e[i] = decayed + delta[i];
  }
}

inline void gather(float* values, const float* x, const uint32_t* flat, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) values[i] = x[flat[i]];
}

inline void scatter_subtract(float* x, const uint32_t* flat, const float* values, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) x[flat[i]] = x[flat[i]] - values[i];
}

// count may be null. Indices are distinct, so the loop parallelises without races.
inline void scatter_accumulate(float* sum, int32_t* count, const uint32_t* flat,
                               const float* values, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    sum[flat[i]] += values[i];
    if (count != nullptr) count[flat[i]] += 1;
  }
}

// out = sum / count (0 where count is 0), or sum / divisor when count is null.
inline void divide(float* out, const float* sum, const int32_t* count, float divisor, size_t n) {
  if (count != nullptr) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) out[i] = count[i] != 0 ? sum[i] / float(count[i]) : 0.0f;
  } else {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) out[i] = sum[i] / divisor;
  }
}

}  // namespace loco::ops
