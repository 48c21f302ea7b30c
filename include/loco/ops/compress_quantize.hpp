// CPU reference of the compression quantiser (Backend::quantize_values; the rules are in
// loco/compress/compress.hpp, "Quantisers"; kernels/compress_quantize.cu is the CUDA version
// and must agree bit for bit). The host pipeline (compress::quantize_gathered) calls these
// functions too, so host, CPU backend and GPU share one definition of every rounding.
//
// Input: the kept values of every tensor, gathered back to back (tensor t owns
// values[kept_begin, kept_begin + kept)). Output per kept value: its code (the level, or the
// bf16 / f32 bits) and D, the value every receiver decodes (written over the input); per
// b-bit tensor: its table at tables[table_begin ...].
//
// The three statistics of a b-bit tensor are double sums, and their summation order is part
// of the definition (a parallel device needs one it can follow): the tensor's kept values are
// cut into segments of kQuantSegment consecutive values (the last one shorter); each segment
// is summed sequentially from 0.0 in kept order, then the segment sums are added
// sequentially, in segment order, to 0.0. So
//   μ = Σ v / n,   σ = sqrt(Σ (v − μ)² / n),   step = (6σ) / L,   level sum[q] = Σ_{q(v)=q} v
// (a tensor of at most kQuantSegment kept values is summed plainly in order). Products and
// sums are rounded one at a time: never fused into an fma. The blocks are segments of kept
// values, not chunks: a chunk keeps 64 values at the default density, and per-chunk partials
// of the 8-bit level sums would be 256 doubles per 64 values.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "loco/ops/bf16.hpp"
#include "loco/ops/chunk_topk.hpp"  // LOCO_NO_FP_CONTRACT

namespace loco::ops {

inline constexpr uint32_t kQuantSegment = 1024;  // kept values per segment of a sum

// Table kinds (as on the wire): none (f32 / bf16 values, or a tensor that keeps nothing),
// means (L level means), uniform (shift, step).
inline constexpr uint32_t kTableNone = 0, kTableMeans = 1, kTableUniform = 2;

// One tensor of the quantiser's input, as the backends read it (kQuantTensorInts i32 words).
struct QuantTensor {
  uint32_t kept_begin = 0;                      // first kept value of the tensor
  uint32_t kept = 0;                            // n
  uint32_t segment_begin = 0, segment_end = 0;  // its rows in the segment table
  uint32_t table_begin = 0;                     // first table entry (f32) of the tensor
  uint32_t table_kind = kTableNone;             // kTableMeans / kTableUniform for b-bit
};
inline constexpr int kQuantTensorInts = 6;

// One segment (kQuantSegmentInts i32 words): kept values [begin, begin + count) of `tensor`.
struct QuantSegment {
  uint32_t begin = 0, count = 0, tensor = 0;
};
inline constexpr int kQuantSegmentInts = 3;

inline void pack_quant_tensor(const QuantTensor& t, int32_t* out) {
  const uint32_t w[kQuantTensorInts] = {t.kept_begin,  t.kept,        t.segment_begin,
                                        t.segment_end, t.table_begin, t.table_kind};
  for (int i = 0; i < kQuantTensorInts; ++i) out[i] = static_cast<int32_t>(w[i]);
}
inline QuantTensor unpack_quant_tensor(const int32_t* in) {
  auto u = [in](int i) { return static_cast<uint32_t>(in[i]); };
  return QuantTensor{u(0), u(1), u(2), u(3), u(4), u(5)};
}
inline void pack_quant_segment(const QuantSegment& s, int32_t* out) {
  out[0] = static_cast<int32_t>(s.begin);
  out[1] = static_cast<int32_t>(s.count);
  out[2] = static_cast<int32_t>(s.tensor);
}
inline QuantSegment unpack_quant_segment(const int32_t* in) {
  return QuantSegment{static_cast<uint32_t>(in[0]), static_cast<uint32_t>(in[1]),
                      static_cast<uint32_t>(in[2])};
}

// Whether a tensor of n kept values sends L level means (else shift and step): the L·32
// table bits then cost at most 2 bits per kept value.
inline bool quant_uses_means(size_t n, int L) { return L <= 16 || n >= size_t(16) * size_t(L); }

// Level of v: clamp(floor((v − μ)/step + L/2), 0, L − 1); L/2 when step is 0 or not finite.
inline int quant_level(double v, double mu, double step, int L) {
  if (!(step > 0.0) || !std::isfinite(step)) return L / 2;
  const double z = std::floor((v - mu) / step + 0.5 * L);
  if (!(z >= 0.0)) return 0;  // also NaN
  if (z >= double(L - 1)) return L - 1;
  return static_cast<int>(z);
}

// The centre of level q: μ + (q + 0.5 − L/2)·step (the means table's entry for an empty level
// and, with μ and step rounded to f32, every entry of a uniform table).
LOCO_NO_FP_CONTRACT inline double quant_bin_centre(double mu, double step, int q, int L) {
  const double at = (double(q) + 0.5) - 0.5 * double(L);
  const double offset = at * step;
  return mu + offset;
}

namespace detail {

// Σ over segments of (segment's sequential sum of v), v = values[0, n).
LOCO_NO_FP_CONTRACT inline double blocked_sum(const float* v, size_t n) {
  double total = 0.0;
  for (size_t s = 0; s < n; s += kQuantSegment) {
    double part = 0.0;
    for (size_t i = s, e = std::min<size_t>(n, s + kQuantSegment); i < e; ++i) part += v[i];
    total += part;
  }
  return total;
}

// The same for (v − μ)², each square rounded before it is added.
LOCO_NO_FP_CONTRACT inline double blocked_sum_squared_deviation(const float* v, size_t n,
                                                                double mu) {
  double total = 0.0;
  for (size_t s = 0; s < n; s += kQuantSegment) {
    double part = 0.0;
    for (size_t i = s, e = std::min<size_t>(n, s + kQuantSegment); i < e; ++i) {
      const double d = double(v[i]) - mu;
      const double sq = d * d;
      part += sq;
    }
    total += part;
  }
  return total;
}

// Per level: Σ of the values with that code (blocked as above) and how many there are.
LOCO_NO_FP_CONTRACT inline void blocked_level_sums(const float* v, const uint32_t* code, size_t n,
                                                   int L, double* sum, uint64_t* count) {
  std::vector<double> part(static_cast<size_t>(L));
  std::fill(sum, sum + L, 0.0);
  std::fill(count, count + L, uint64_t(0));
  for (size_t s = 0; s < n; s += kQuantSegment) {
    std::fill(part.begin(), part.end(), 0.0);
    for (size_t i = s, e = std::min<size_t>(n, s + kQuantSegment); i < e; ++i) {
      part[code[i]] += v[i];
      ++count[code[i]];
    }
    for (int q = 0; q < L; ++q) sum[q] += part[size_t(q)];
  }
}

}  // namespace detail

// μ and step of one tensor's kept values (n > 0), L levels.
struct QuantStats {
  double mu = 0.0, step = 0.0;
};
LOCO_NO_FP_CONTRACT inline QuantStats quant_stats(const float* v, size_t n, int L) {
  QuantStats st;
  st.mu = detail::blocked_sum(v, n) / double(n);
  const double sigma = std::sqrt(detail::blocked_sum_squared_deviation(v, n, st.mu) / double(n));
  const double six_sigma = 6.0 * sigma;
  st.step = six_sigma / double(L);
  return st;
}

// Codes, table (L means or shift/step) and D of one b-bit tensor: v[0, n) in, D out.
// `table` receives L entries (means) or 2 (uniform); `dequant` (L entries) the f32 levels D
// is drawn from.
inline void quantize_levels_tensor(float* v, uint32_t* code, size_t n, int L, bool means,
                                   float* table, float* dequant) {
  const QuantStats st = quant_stats(v, n, L);
  for (size_t i = 0; i < n; ++i) code[i] = uint32_t(quant_level(v[i], st.mu, st.step, L));
  if (means) {
    std::vector<double> sum(static_cast<size_t>(L));
    std::vector<uint64_t> count(static_cast<size_t>(L));
    detail::blocked_level_sums(v, code, n, L, sum.data(), count.data());
    for (int q = 0; q < L; ++q) {
      dequant[q] = count[size_t(q)] != 0
                       ? static_cast<float>(sum[size_t(q)] / double(count[size_t(q)]))
                       : static_cast<float>(quant_bin_centre(st.mu, st.step, q, L));
      table[q] = dequant[q];
    }
  } else {
    const float shift = static_cast<float>(st.mu), step = static_cast<float>(st.step);
    for (int q = 0; q < L; ++q)
      dequant[q] = static_cast<float>(quant_bin_centre(double(shift), double(step), q, L));
    table[0] = shift;
    table[1] = step;
  }
  for (size_t i = 0; i < n; ++i) v[i] = dequant[code[i]];
}

// The whole quantiser over every tensor (tensors: nt rows; value_bits 32, 16, 8, 4 or 2).
//  32: code = the f32 bits, D = v.   16: code = bf16 bits (round to nearest even), D = widened.
//  8/4/2: per tensor with kept > 0, quantize_levels_tensor with L = 2^bits and the tensor's
//  table kind.
inline void quantize_values(uint32_t* codes, float* values, float* tables, size_t total_kept,
                            const QuantTensor* tensors, size_t nt, int value_bits) {
  if (value_bits == 32 || value_bits == 16) {
#pragma omp parallel for schedule(static) if (total_kept >= 65536)
    for (size_t i = 0; i < total_kept; ++i) {
      if (value_bits == 32) {
        codes[i] = std::bit_cast<uint32_t>(values[i]);
      } else {
        const uint16_t b = float_to_bf16_bits(values[i]);
        codes[i] = b;
        values[i] = bf16_bits_to_float(b);
      }
    }
    return;
  }
  const int L = 1 << value_bits;
  // Tensors are independent (each one's sums stay sequential): the same bits in parallel.
#pragma omp parallel for schedule(dynamic, 1) if (total_kept >= 65536)
  for (size_t t = 0; t < nt; ++t) {
    const QuantTensor& q = tensors[t];
    if (q.kept == 0) continue;
    std::vector<float> dequant(static_cast<size_t>(L));
    quantize_levels_tensor(values + q.kept_begin, codes + q.kept_begin, q.kept, L,
                           q.table_kind == kTableMeans, tables + q.table_begin, dequant.data());
  }
}

}  // namespace loco::ops
