// Chunked top-k of the compression pipeline (loco/compress/compress.hpp, "Selectors"): one
// block per chunk. CPU reference: ops::chunk_topk (include/loco/ops/chunk_topk.hpp); both
// give the same offsets, bit for bit, for every input (NaN included).
//
//   x (total) f32;  chunks (num_chunks, 8) i32 rows;  offsets, flat (kept) u32
//
// Magnitude keys are the IEEE bits of |x| (31 bits, monotone in |x|). The k-th largest key T
// is found by radix select: four passes of an 8-bit digit histogram in shared memory, each
// narrowing the prefix T must have. Then one ordered compaction in offset order keeps every
// key > T and the first `ties` keys == T (ties go to the lower offset), so the offsets come
// out ascending with no sort. The chunk's keys are cached in shared memory when they fit.
// Built without --use_fast_math (CMakeLists.txt): nothing here may depend on it.
#include "loco_device.cuh"

namespace {

constexpr int kThreads = 256;
constexpr uint32_t kCacheMaxElements = 12288;  // 48 KiB of keys

struct Chunk {
  unsigned long long base, kept_start;
  uint32_t stride, h, w, k;
};

__device__ __forceinline__ Chunk load_chunk(const int32_t* row) {
  auto u = [row](int i) { return static_cast<uint32_t>(row[i]); };
  Chunk c;
  c.base = static_cast<unsigned long long>(u(0)) | (static_cast<unsigned long long>(u(1)) << 32);
  c.stride = u(2);
  c.h = u(3);
  c.w = u(4);
  c.k = u(5);
  c.kept_start =
      static_cast<unsigned long long>(u(6)) | (static_cast<unsigned long long>(u(7)) << 32);
  return c;
}

__device__ __forceinline__ unsigned long long flat_index(const Chunk& c, uint32_t p) {
  return c.base + static_cast<unsigned long long>(p / c.w) * c.stride + p % c.w;
}

__device__ __forceinline__ uint32_t key_at(const float* x, const Chunk& c, uint32_t p) {
  return __float_as_uint(x[flat_index(c, p)]) & 0x7fffffffu;
}

// Exclusive count of `flag` over the threads before this one (thread order) and the block's
// total. Two __syncthreads(): uniform control flow only. counts: __shared__ [kThreads / 32].
__device__ __forceinline__ uint32_t block_exclusive_count(bool flag, uint32_t* counts,
                                                          uint32_t& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned ballot = __ballot_sync(0xffffffffu, flag);
  const uint32_t in_warp = __popc(ballot & ((1u << lane) - 1u));
  if (lane == 0) counts[warp] = __popc(ballot);
  __syncthreads();
  uint32_t before = 0, sum = 0;
  for (int w = 0; w < kThreads / 32; ++w) {
    const uint32_t n = counts[w];
    before += w < warp ? n : 0u;
    sum += n;
  }
  __syncthreads();  // counts is reused by the next call
  total = sum;
  return before + in_warp;
}

__global__ void __launch_bounds__(kThreads)
    chunked_topk_kernel(uint32_t* __restrict__ offsets, uint32_t* __restrict__ flat,
                        const float* __restrict__ x, const int32_t* __restrict__ chunks,
                        int use_cache) {
  extern __shared__ uint32_t key_cache[];
  __shared__ uint32_t hist[256];
  __shared__ uint32_t counts[kThreads / 32];
  __shared__ uint32_t shared_prefix, shared_remaining;

  const Chunk c = load_chunk(chunks + static_cast<size_t>(blockIdx.x) * 8);
  const uint32_t C = c.h * c.w, k = c.k;
  uint32_t* out_offsets = offsets + c.kept_start;
  uint32_t* out_flat = flat + c.kept_start;
  if (k >= C) {  // the whole chunk is kept
    for (uint32_t p = threadIdx.x; p < C; p += blockDim.x) {
      out_offsets[p] = p;
      out_flat[p] = static_cast<uint32_t>(flat_index(c, p));
    }
    return;
  }
  if (use_cache) {
    for (uint32_t p = threadIdx.x; p < C; p += blockDim.x) key_cache[p] = key_at(x, c, p);
    __syncthreads();
  }
  auto key = [&](uint32_t p) { return use_cache ? key_cache[p] : key_at(x, c, p); };

  // Radix select: after the pass for `shift`, `prefix` holds T's bits above shift − 1 and
  // `remaining` how many keys with that prefix still belong to the top k.
  uint32_t prefix = 0, mask = 0, remaining = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += blockDim.x) hist[d] = 0;
    __syncthreads();
    for (uint32_t p = threadIdx.x; p < C; p += blockDim.x) {
      const uint32_t m = key(p);
      if ((m & mask) == prefix) atomicAdd(&hist[(m >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t above = 0;
      int d = 255;
      for (; d > 0; --d) {
        if (above + hist[d] >= remaining) break;
        above += hist[d];
      }
      shared_prefix = prefix | (static_cast<uint32_t>(d) << shift);
      shared_remaining = remaining - above;
    }
    __syncthreads();
    prefix = shared_prefix;
    remaining = shared_remaining;
    mask |= 255u << shift;
  }
  const uint32_t T = prefix, ties = remaining;  // keys > T: k − ties of them

  uint32_t equal_before = 0, kept_before = 0;
  for (uint32_t tile = 0; tile < C; tile += blockDim.x) {
    const uint32_t p = tile + threadIdx.x;
    const bool inside = p < C;
    const uint32_t m = inside ? key(p) : 0u;
    const bool equal = inside && m == T;
    uint32_t equal_total = 0, kept_total = 0;
    const uint32_t tie_rank = equal_before + block_exclusive_count(equal, counts, equal_total);
    const bool keep = inside && (m > T || (equal && tie_rank < ties));
    const uint32_t slot = kept_before + block_exclusive_count(keep, counts, kept_total);
    if (keep) {
      out_offsets[slot] = p;
      out_flat[slot] = static_cast<uint32_t>(flat_index(c, p));
    }
    equal_before += equal_total;
    kept_before += kept_total;
  }
}

}  // namespace

extern "C" cudaError_t loco_chunked_topk(uint32_t* offsets, uint32_t* flat, const float* x,
                                         const int32_t* chunks, size_t num_chunks,
                                         uint32_t max_chunk, cudaStream_t s) {
  if (num_chunks == 0) return cudaSuccess;
  if (num_chunks > 0x7fffffffu) return cudaErrorInvalidValue;
  const int use_cache = max_chunk <= kCacheMaxElements ? 1 : 0;
  const size_t smem = use_cache ? size_t(max_chunk) * sizeof(uint32_t) : 0;
  chunked_topk_kernel<<<static_cast<unsigned>(num_chunks), kThreads, smem, s>>>(offsets, flat, x,
                                                                                chunks, use_cache);
  return cudaGetLastError();
}
