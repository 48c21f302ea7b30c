// The compression quantiser on the device (Backend::quantize_values). CPU reference and the
// exact rules: include/loco/ops/compress_quantize.hpp; this file must match it bit for bit.
//
//   values, codes (kept) f32 / u32;  tensors (nt, 6) i32;  segments (ns, 3) i32;
//   tables f32 (each tensor's slot);  L = 2^value_bits levels
//
// A b-bit tensor's sums are blocked into segments of kSegment consecutive kept values, each
// summed sequentially from 0.0, then added in segment order. The device follows that order:
// one block per segment stages its values in shared memory and one thread sums them (level
// sums: one thread per level, scanning the segment in order); one thread per tensor adds the
// segment sums. Every double operation is a _rn intrinsic, so nothing is contracted into an
// fma (this file is built without --use_fast_math, CMakeLists.txt).
//
// Launches (b-bit): segment sums → μ per tensor → segment Σ(v−μ)² → step per tensor →
// codes + per-level segment sums → tables and dequantisation levels per tensor → D.
#include "loco_device.cuh"

namespace {

constexpr int kThreads = 256;
constexpr uint32_t kSegment = 1024;  // ops::kQuantSegment
constexpr uint32_t kMeans = 1;       // ops::kTableMeans

struct Tensor {
  uint32_t kept_begin, kept, segment_begin, segment_end, table_begin, table_kind;
};
__device__ __forceinline__ Tensor load_tensor(const int32_t* tensors, uint32_t t) {
  const int32_t* r = tensors + static_cast<size_t>(t) * 6;
  return Tensor{static_cast<uint32_t>(r[0]), static_cast<uint32_t>(r[1]),
                static_cast<uint32_t>(r[2]), static_cast<uint32_t>(r[3]),
                static_cast<uint32_t>(r[4]), static_cast<uint32_t>(r[5])};
}

struct Segment {
  uint32_t begin, count, tensor;
};
__device__ __forceinline__ Segment load_segment(const int32_t* segments, uint32_t s) {
  const int32_t* r = segments + static_cast<size_t>(s) * 3;
  return Segment{static_cast<uint32_t>(r[0]), static_cast<uint32_t>(r[1]),
                 static_cast<uint32_t>(r[2])};
}

__device__ __forceinline__ bool finite_double(double x) {
  return (static_cast<unsigned long long>(__double_as_longlong(x)) & 0x7ff0000000000000ull) !=
         0x7ff0000000000000ull;
}

// ops::quant_level
__device__ __forceinline__ uint32_t quant_level(double v, double mu, double step, int L) {
  if (!(step > 0.0) || !finite_double(step)) return static_cast<uint32_t>(L / 2);
  const double z = floor(__dadd_rn(__ddiv_rn(__dsub_rn(v, mu), step), 0.5 * L));
  if (!(z >= 0.0)) return 0u;
  if (z >= static_cast<double>(L - 1)) return static_cast<uint32_t>(L - 1);
  return static_cast<uint32_t>(z);
}

// ops::quant_bin_centre: μ + ((q + 0.5) − L/2)·step
__device__ __forceinline__ double bin_centre(double mu, double step, int q, int L) {
  const double at = __dsub_rn(__dadd_rn(static_cast<double>(q), 0.5), 0.5 * L);
  return __dadd_rn(mu, __dmul_rn(at, step));
}

// Segment sums: Σ v (mu == nullptr) or Σ (v − μ)², sequentially, by thread 0.
__global__ void __launch_bounds__(kThreads)
    segment_sum_kernel(double* __restrict__ partial, const float* __restrict__ values,
                       const int32_t* __restrict__ segments, const double* __restrict__ mu) {
  __shared__ float v[kSegment];
  const Segment seg = load_segment(segments, blockIdx.x);
  for (uint32_t i = threadIdx.x; i < seg.count; i += blockDim.x) v[i] = values[seg.begin + i];
  __syncthreads();
  if (threadIdx.x != 0) return;
  double s = 0.0;
  if (mu == nullptr) {
    for (uint32_t i = 0; i < seg.count; ++i) s = __dadd_rn(s, static_cast<double>(v[i]));
  } else {
    const double m = mu[seg.tensor];
    for (uint32_t i = 0; i < seg.count; ++i) {
      const double d = __dsub_rn(static_cast<double>(v[i]), m);
      s = __dadd_rn(s, __dmul_rn(d, d));
    }
  }
  partial[blockIdx.x] = s;
}

// One thread per tensor: its segment sums in order. first pass: out = μ = Σ/n; second pass
// (levels > 0): out = step = 6·sqrt(Σ/n) / L.
__global__ void tensor_total_kernel(double* __restrict__ out, const double* __restrict__ partial,
                                    const int32_t* __restrict__ tensors, int nt, int levels) {
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < nt; t += gridDim.x * blockDim.x) {
    const Tensor T = load_tensor(tensors, static_cast<uint32_t>(t));
    if (T.kept == 0) {
      out[t] = 0.0;
      continue;
    }
    double total = 0.0;
    for (uint32_t s = T.segment_begin; s < T.segment_end; ++s) total = __dadd_rn(total, partial[s]);
    const double mean = __ddiv_rn(total, static_cast<double>(T.kept));
    if (levels == 0) {
      out[t] = mean;
    } else {
      const double sigma = __dsqrt_rn(mean);
      out[t] = __ddiv_rn(__dmul_rn(6.0, sigma), static_cast<double>(levels));
    }
  }
}

// Codes of one segment, then its per-level sums (thread q adds the values of level q in
// kept order) and counts. level_sum / level_count: (segments, L).
__global__ void __launch_bounds__(kThreads)
    segment_levels_kernel(uint32_t* __restrict__ codes, double* __restrict__ level_sum,
                          uint32_t* __restrict__ level_count, const float* __restrict__ values,
                          const int32_t* __restrict__ segments, const double* __restrict__ mu,
                          const double* __restrict__ step, int L) {
  __shared__ float v[kSegment];
  __shared__ uint8_t level[kSegment];
  const Segment seg = load_segment(segments, blockIdx.x);
  const double m = mu[seg.tensor], st = step[seg.tensor];
  for (uint32_t i = threadIdx.x; i < seg.count; i += blockDim.x) {
    const float x = values[seg.begin + i];
    const uint32_t q = quant_level(static_cast<double>(x), m, st, L);
    v[i] = x;
    level[i] = static_cast<uint8_t>(q);
    codes[seg.begin + i] = q;
  }
  __syncthreads();
  for (int q = threadIdx.x; q < L; q += blockDim.x) {
    double s = 0.0;
    uint32_t n = 0;
    for (uint32_t i = 0; i < seg.count; ++i) {
      if (level[i] == q) {
        s = __dadd_rn(s, static_cast<double>(v[i]));
        ++n;
      }
    }
    level_sum[static_cast<size_t>(blockIdx.x) * L + q] = s;
    level_count[static_cast<size_t>(blockIdx.x) * L + q] = n;
  }
}

// One block per tensor, one thread per level: the table (level means, or shift and step) at
// the tensor's slot and the L dequantisation levels (dequant: (nt, L)).
__global__ void tensor_tables_kernel(float* __restrict__ tables, float* __restrict__ dequant,
                                     const double* __restrict__ level_sum,
                                     const uint32_t* __restrict__ level_count,
                                     const int32_t* __restrict__ tensors,
                                     const double* __restrict__ mu, const double* __restrict__ step,
                                     int L) {
  const uint32_t t = blockIdx.x;
  const Tensor T = load_tensor(tensors, t);
  if (T.kept == 0) return;
  const double m = mu[t], st = step[t];
  for (int q = threadIdx.x; q < L; q += blockDim.x) {
    float d;
    if (T.table_kind == kMeans) {
      double s = 0.0;
      uint32_t n = 0;
      for (uint32_t g = T.segment_begin; g < T.segment_end; ++g) {
        s = __dadd_rn(s, level_sum[static_cast<size_t>(g) * L + q]);
        n += level_count[static_cast<size_t>(g) * L + q];
      }
      d = n != 0 ? __double2float_rn(__ddiv_rn(s, static_cast<double>(n)))
                 : __double2float_rn(bin_centre(m, st, q, L));
      tables[T.table_begin + q] = d;
    } else {  // uniform: shift and step as f32, levels from them
      const float shift = __double2float_rn(m), fstep = __double2float_rn(st);
      d = __double2float_rn(
          bin_centre(static_cast<double>(shift), static_cast<double>(fstep), q, L));
      if (q == 0) {
        tables[T.table_begin] = shift;
        tables[T.table_begin + 1] = fstep;
      }
    }
    dequant[static_cast<size_t>(t) * L + q] = d;
  }
}

// D = the level of each code, segment by segment (values overwritten).
__global__ void dequantize_kernel(float* __restrict__ values, const uint32_t* __restrict__ codes,
                                  const float* __restrict__ dequant,
                                  const int32_t* __restrict__ segments, int L) {
  const Segment seg = load_segment(segments, blockIdx.x);
  const float* levels = dequant + static_cast<size_t>(seg.tensor) * L;
  for (uint32_t i = threadIdx.x; i < seg.count; i += blockDim.x)
    values[seg.begin + i] = levels[codes[seg.begin + i]];
}

// ops::float_to_bf16_bits: round to nearest even, NaN kept quiet with its sign.
__device__ __forceinline__ uint32_t bf16_bits(float x) {
  const uint32_t bits = __float_as_uint(x);
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0)
    return ((bits >> 16) | 0x0040u) & 0xffffu;
  return ((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16) & 0xffffu;
}

// 32: codes = f32 bits. 16: codes = bf16 bits, values = the widened bf16.
__global__ void quantize_bits_kernel(uint32_t* __restrict__ codes, float* __restrict__ values,
                                     size_t n, int bf16) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float x = values[i];
    if (bf16) {
      const uint32_t b = bf16_bits(x);
      codes[i] = b;
      values[i] = __uint_as_float(b << 16);
    } else {
      codes[i] = __float_as_uint(x);
    }
  }
}

struct Scratch {
  double *seg_partial, *mu, *step, *level_sum;
  uint32_t* level_count;
  float* dequant;
};

Scratch carve(void* scratch, size_t nt, size_t ns, int L) {
  auto* d = static_cast<double*>(scratch);
  Scratch s;
  s.seg_partial = d;
  s.mu = d + ns;
  s.step = s.mu + nt;
  s.level_sum = s.step + nt;
  s.level_count = reinterpret_cast<uint32_t*>(s.level_sum + ns * static_cast<size_t>(L));
  s.dequant = reinterpret_cast<float*>(s.level_count + ns * static_cast<size_t>(L));
  return s;
}

}  // namespace

extern "C" size_t loco_quantize_values_scratch(size_t num_tensors, size_t num_segments,
                                               int value_bits) {
  if (value_bits >= 16) return 0;
  const size_t L = size_t{1} << value_bits;
  return sizeof(double) * (num_segments + 2 * num_tensors + num_segments * L) +
         sizeof(uint32_t) * num_segments * L + sizeof(float) * num_tensors * L;
}

extern "C" cudaError_t loco_quantize_values(uint32_t* codes, float* values, float* tables,
                                            size_t total_kept, const int32_t* tensors,
                                            size_t num_tensors, const int32_t* segments,
                                            size_t num_segments, int value_bits, void* scratch,
                                            cudaStream_t s) {
  using loco_dev::grid_for;
  if (value_bits == 32 || value_bits == 16) {
    if (total_kept == 0) return cudaSuccess;
    quantize_bits_kernel<<<grid_for(total_kept, kThreads), kThreads, 0, s>>>(
        codes, values, total_kept, value_bits == 16 ? 1 : 0);
    return cudaGetLastError();
  }
  if (value_bits != 8 && value_bits != 4 && value_bits != 2) return cudaErrorInvalidValue;
  if (num_tensors == 0 || num_segments == 0) return cudaSuccess;
  if (num_segments > 0x7fffffffu || num_tensors > 0x7fffffffu) return cudaErrorInvalidValue;
  const int L = 1 << value_bits;
  const int nt = static_cast<int>(num_tensors);
  const unsigned ns = static_cast<unsigned>(num_segments);
  const Scratch w = carve(scratch, num_tensors, num_segments, L);
  const unsigned tensor_grid = grid_for(num_tensors, kThreads);
  cudaError_t e;
  segment_sum_kernel<<<ns, kThreads, 0, s>>>(w.seg_partial, values, segments, nullptr);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  tensor_total_kernel<<<tensor_grid, kThreads, 0, s>>>(w.mu, w.seg_partial, tensors, nt, 0);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  segment_sum_kernel<<<ns, kThreads, 0, s>>>(w.seg_partial, values, segments, w.mu);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  tensor_total_kernel<<<tensor_grid, kThreads, 0, s>>>(w.step, w.seg_partial, tensors, nt, L);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  segment_levels_kernel<<<ns, kThreads, 0, s>>>(codes, w.level_sum, w.level_count, values, segments,
                                                w.mu, w.step, L);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  tensor_tables_kernel<<<static_cast<unsigned>(nt), kThreads, 0, s>>>(
      tables, w.dequant, w.level_sum, w.level_count, tensors, w.mu, w.step, L);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  dequantize_kernel<<<ns, kThreads, 0, s>>>(values, codes, w.dequant, segments, L);
  return cudaGetLastError();
}
