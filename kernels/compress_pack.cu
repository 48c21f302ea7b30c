// The payload packer on the device (Backend::pack_sections): the tensor sections of the wire
// format (loco/compress/wire.hpp) written from the kept offsets, codes and tables in device
// memory. CPU reference and the order of the steps: include/loco/ops/compress_pack.hpp; the
// bytes must be the same.
//
//   payload u32 words (bytes, little-endian; zeroed here from first_byte on);
//   layout (nt + 2) u32: index stream bytes per tensor, total bytes (low, high);
//   offsets, codes (kept) u32;  tables f32;  tensors (nt, 8) i32;  chunks (nc, 4) i32
//
// Launches:
//  1. index_choice: one block per tensor. Each thread takes chunks of the tensor and computes
//     their Rice costs for p = 0..15 (a chunk's best parameter and cost are kept per chunk);
//     the block adds the integer costs (any order gives the same sums), thread 0 picks the
//     coding, and a block-wide scan over the chunks (tile by tile) gives each chunk's first
//     bit in the tensor's index stream.
//  2. section_offsets: one thread walks the tensors in order (first byte of each section,
//     total size).
//  3. section_heads: one thread per tensor writes its 12-byte header and its table.
//  4. index_streams: (blocks, nt) grid, one thread per chunk writes its count and offsets
//     through a 64-bit bit buffer, OR-ing 32-bit words (neighbouring chunks share words).
//  5. value_streams: (blocks, nt) grid, one thread per byte of each value stream.
#include "loco_device.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kMaxRice = 15;
constexpr int kCodingFixed = 1, kCodingRice = 2, kCodingBitmap = 3;  // requested
constexpr uint32_t kWireImplied = 0, kWireFixed = 1, kWireRiceChunk = 2, kWireRiceTensor = 3,
                   kWireBitmap = 4;
constexpr int kSums = kMaxRice + 1 + 3;  // rice_tensor[16], fixed, bitmap, rice_chunk

struct Tensor {
  uint32_t chunk_begin, chunk_end, kept_begin, kept, table_begin, table_entries, table_kind,
      count_bits;
};
__device__ __forceinline__ Tensor load_tensor(const int32_t* tensors, uint32_t t) {
  const int32_t* r = tensors + static_cast<size_t>(t) * 8;
  auto u = [r](int i) { return static_cast<uint32_t>(r[i]); };
  return Tensor{u(0), u(1), u(2), u(3), u(4), u(5), u(6), u(7)};
}
struct Chunk {
  uint32_t size, kept_start, kept, count_pos;
};
__device__ __forceinline__ Chunk load_chunk(const int32_t* chunks, uint32_t c) {
  const int32_t* r = chunks + static_cast<size_t>(c) * 4;
  return Chunk{static_cast<uint32_t>(r[0]), static_cast<uint32_t>(r[1]),
               static_cast<uint32_t>(r[2]), static_cast<uint32_t>(r[3])};
}

__device__ __forceinline__ int bit_width(uint32_t x) { return x == 0 ? 0 : 32 - __clz(x); }
__device__ __forceinline__ int offset_bits(uint32_t C) { return C <= 1 ? 0 : bit_width(C - 1); }
__device__ __forceinline__ bool needs_offsets(uint32_t n, uint32_t C) { return n != 0 && n != C; }
__device__ __forceinline__ unsigned long long value_bytes(uint32_t kept, int vbits) {
  return (static_cast<unsigned long long>(kept) * vbits + 7) / 8;
}

// Rice cost of a chunk's gaps with parameter p.
__device__ unsigned long long rice_cost_at(const uint32_t* o, uint32_t n, int p) {
  unsigned long long cost = static_cast<unsigned long long>(n) * (1 + p);
  uint32_t prev = 0;
  for (uint32_t j = 0; j < n; ++j) {
    const uint32_t g = j == 0 ? o[0] : o[j] - prev - 1;
    prev = o[j];
    cost += g >> p;
  }
  return cost;
}

// Per tensor (scratch): chosen wire coding and parameter; per chunk: best Rice parameter,
// its cost, and the chunk's first bit in its tensor's stream.
struct Work {
  uint32_t* choice;                // (nt, 2): coding, parameter
  unsigned long long* at;          // (nt): first byte of each section
  uint32_t* chunk_param;           // (nc)
  unsigned long long* chunk_rice;  // (nc)
  unsigned long long* chunk_pos;   // (nc)
};

// Inclusive block scan (kThreads threads) of one value per thread; scan: __shared__ [kThreads].
__device__ unsigned long long block_inclusive_scan(unsigned long long v, unsigned long long* scan) {
  scan[threadIdx.x] = v;
  __syncthreads();
  for (int off = 1; off < kThreads; off <<= 1) {
    const unsigned long long add =
        threadIdx.x >= static_cast<unsigned>(off) ? scan[threadIdx.x - off] : 0ull;
    __syncthreads();
    scan[threadIdx.x] += add;
    __syncthreads();
  }
  return scan[threadIdx.x];
}

__global__ void __launch_bounds__(kThreads)
    index_choice_kernel(Work w, uint32_t* __restrict__ layout, const uint32_t* __restrict__ offsets,
                        const int32_t* __restrict__ tensors, const int32_t* __restrict__ chunks,
                        int requested) {
  __shared__ unsigned long long sums[kSums];
  __shared__ unsigned long long scan[kThreads];
  __shared__ uint32_t coding_s, param_s;
  __shared__ unsigned long long running;
  const uint32_t t = blockIdx.x;
  const Tensor T = load_tensor(tensors, t);
  for (int i = threadIdx.x; i < kSums; i += blockDim.x) sums[i] = 0;
  __syncthreads();
  unsigned long long mine[kSums];
  for (int i = 0; i < kSums; ++i) mine[i] = 0;
  for (uint32_t c = T.chunk_begin + threadIdx.x; c < T.chunk_end; c += blockDim.x) {
    const Chunk g = load_chunk(chunks, c);
    w.chunk_param[c] = 0;
    w.chunk_rice[c] = 0;
    if (!needs_offsets(g.kept, g.size)) continue;
    const uint32_t* o = offsets + g.kept_start;
    unsigned long long cost[kMaxRice + 1];
    for (int p = 0; p <= kMaxRice; ++p) cost[p] = static_cast<unsigned long long>(g.kept) * (1 + p);
    uint32_t prev = 0;
    for (uint32_t j = 0; j < g.kept; ++j) {
      const uint32_t gap = j == 0 ? o[0] : o[j] - prev - 1;
      prev = o[j];
#pragma unroll
      for (int p = 0; p <= kMaxRice; ++p) cost[p] += gap >> p;
    }
    const int pmax = min(kMaxRice, offset_bits(g.size));
    int best = 0;
    for (int p = 1; p <= pmax; ++p)
      if (cost[p] < cost[best]) best = p;
    w.chunk_param[c] = static_cast<uint32_t>(best);
    w.chunk_rice[c] = cost[best];
#pragma unroll
    for (int p = 0; p <= kMaxRice; ++p) mine[p] += cost[p];
    mine[kMaxRice + 1] += static_cast<unsigned long long>(g.kept) * offset_bits(g.size);
    mine[kMaxRice + 2] += g.size;
    mine[kMaxRice + 3] += 4 + cost[best];
  }
  for (int i = 0; i < kSums; ++i)
    if (mine[i] != 0) atomicAdd(&sums[i], mine[i]);
  __syncthreads();
  if (threadIdx.x == 0) {  // ops::choose_index_coding
    int tensor_param = 0;
    for (int p = 1; p <= kMaxRice; ++p)
      if (sums[p] < sums[tensor_param]) tensor_param = p;
    const unsigned long long rice_tensor = sums[tensor_param];
    const unsigned long long fixed = sums[kMaxRice + 1], bitmap = sums[kMaxRice + 2],
                             rice_chunk = sums[kMaxRice + 3];
    const unsigned long long rice = rice_chunk < rice_tensor ? rice_chunk : rice_tensor;
    const uint32_t rice_kind = rice_tensor <= rice_chunk ? kWireRiceTensor : kWireRiceChunk;
    uint32_t coding;
    unsigned long long bits;
    if (requested == kCodingFixed) {
      coding = kWireFixed, bits = fixed;
    } else if (requested == kCodingRice) {
      coding = rice_kind, bits = rice;
    } else if (requested == kCodingBitmap) {
      coding = kWireBitmap, bits = bitmap;
    } else {
      coding = kWireFixed, bits = fixed;
      if (rice < bits) coding = rice_kind, bits = rice;
      if (bitmap < bits) coding = kWireBitmap, bits = bitmap;
    }
    coding_s = coding;
    param_s = coding == kWireRiceTensor ? static_cast<uint32_t>(tensor_param) : 0u;
    w.choice[2 * t] = coding_s;
    w.choice[2 * t + 1] = param_s;
    layout[t] = static_cast<uint32_t>((T.count_bits + bits + 7) / 8);
    running = T.count_bits;
  }
  __syncthreads();
  const uint32_t coding = coding_s;
  const int param = static_cast<int>(param_s);
  // Each chunk's first bit: the count bits, then the chunks before it (tile by tile).
  for (uint32_t tile = T.chunk_begin; tile < T.chunk_end; tile += blockDim.x) {
    const uint32_t c = tile + threadIdx.x;
    unsigned long long bits = 0;
    if (c < T.chunk_end) {
      const Chunk g = load_chunk(chunks, c);
      if (needs_offsets(g.kept, g.size)) {
        if (coding == kWireFixed)
          bits = static_cast<unsigned long long>(g.kept) * offset_bits(g.size);
        else if (coding == kWireRiceChunk)
          bits = 4 + w.chunk_rice[c];
        else if (coding == kWireRiceTensor)
          bits = rice_cost_at(offsets + g.kept_start, g.kept, param);
        else if (coding == kWireBitmap)
          bits = g.size;
      }
    }
    const unsigned long long inclusive = block_inclusive_scan(bits, scan);
    const unsigned long long base = running;
    if (c < T.chunk_end) w.chunk_pos[c] = base + inclusive - bits;
    __syncthreads();
    if (threadIdx.x == blockDim.x - 1) running = base + inclusive;
    __syncthreads();
  }
}

// Section starts, in tensor order, and the total.
__global__ void section_offsets_kernel(Work w, uint32_t* __restrict__ layout,
                                       const int32_t* __restrict__ tensors, int nt, int vbits,
                                       unsigned long long first_byte) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  unsigned long long at = first_byte;
  for (int t = 0; t < nt; ++t) {
    const Tensor T = load_tensor(tensors, static_cast<uint32_t>(t));
    w.at[t] = at;
    at += 12 + 4ull * T.table_entries + layout[t] + value_bytes(T.kept, vbits);
  }
  layout[nt] = static_cast<uint32_t>(at);
  layout[nt + 1] = static_cast<uint32_t>(at >> 32);
}

__device__ __forceinline__ void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

__global__ void section_heads_kernel(uint8_t* __restrict__ payload, Work w,
                                     const uint32_t* __restrict__ layout,
                                     const float* __restrict__ tables,
                                     const int32_t* __restrict__ tensors, int nt) {
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < nt; t += gridDim.x * blockDim.x) {
    const Tensor T = load_tensor(tensors, static_cast<uint32_t>(t));
    uint8_t* sec = payload + w.at[t];
    put_u32(sec, T.kept);
    sec[4] = static_cast<uint8_t>(w.choice[2 * t]);
    sec[5] = static_cast<uint8_t>(w.choice[2 * t + 1]);
    sec[6] = static_cast<uint8_t>(T.table_kind);
    sec[7] = 0;
    put_u32(sec + 8, layout[t]);
    for (uint32_t i = 0; i < T.table_entries; ++i)
      put_u32(sec + 12 + 4 * i, __float_as_uint(tables[T.table_begin + i]));
  }
}

// Appends bits LSB-first at a global bit position of the payload, OR-ing whole 32-bit words.
struct BitSink {
  uint32_t* words;
  unsigned long long word;  // index of the word being filled
  unsigned long long acc;
  int fill;
  __device__ BitSink(uint32_t* w, unsigned long long bit)
      : words(w), word(bit >> 5), acc(0), fill(static_cast<int>(bit & 31)) {}
  __device__ void put(uint32_t v, int n) {  // n <= 32
    if (n == 0) return;
    const unsigned long long masked = n == 32 ? v : (v & ((1u << n) - 1u));
    acc |= masked << fill;
    fill += n;
    if (fill >= 32) {
      atomicOr(&words[word], static_cast<uint32_t>(acc));
      ++word;
      acc >>= 32;
      fill -= 32;
    }
  }
  __device__ void skip(int n) { put(0u, n); }
  __device__ void flush() {
    if (acc != 0) atomicOr(&words[word], static_cast<uint32_t>(acc));
  }
};

__global__ void index_streams_kernel(uint32_t* __restrict__ payload, Work w,
                                     const uint32_t* __restrict__ offsets,
                                     const int32_t* __restrict__ tensors,
                                     const int32_t* __restrict__ chunks, int explicit_counts) {
  const uint32_t t = blockIdx.y;
  const Tensor T = load_tensor(tensors, t);
  const uint32_t coding = w.choice[2 * t];
  if (coding == kWireImplied) return;
  const unsigned long long stream_bit = 8ull * (w.at[t] + 12 + 4ull * T.table_entries);
  for (uint32_t c = T.chunk_begin + blockIdx.x * blockDim.x + threadIdx.x; c < T.chunk_end;
       c += gridDim.x * blockDim.x) {
    const Chunk g = load_chunk(chunks, c);
    if (explicit_counts) {
      BitSink count(payload, stream_bit + g.count_pos);
      count.put(g.kept, bit_width(g.size));
      count.flush();
    }
    if (!needs_offsets(g.kept, g.size)) continue;
    const uint32_t* o = offsets + g.kept_start;
    BitSink out(payload, stream_bit + w.chunk_pos[c]);
    if (coding == kWireFixed) {
      const int width = offset_bits(g.size);
      for (uint32_t j = 0; j < g.kept; ++j) out.put(o[j], width);
    } else if (coding == kWireBitmap) {
      uint32_t j = 0;
      for (uint32_t base = 0; base < g.size; base += 32) {
        const uint32_t end = min(base + 32, g.size);
        uint32_t word = 0;
        while (j < g.kept && o[j] < end) word |= 1u << (o[j++] - base);
        out.put(word, static_cast<int>(end - base));
      }
    } else {
      int p = static_cast<int>(w.choice[2 * t + 1]);
      if (coding == kWireRiceChunk) {
        p = static_cast<int>(w.chunk_param[c]);
        out.put(static_cast<uint32_t>(p), 4);
      }
      uint32_t prev = 0;
      for (uint32_t j = 0; j < g.kept; ++j) {
        const uint32_t gap = j == 0 ? o[0] : o[j] - prev - 1;
        prev = o[j];
        for (uint32_t q = gap >> p; q > 0;) {
          const uint32_t run = q < 32 ? q : 32;
          out.put(0xffffffffu, static_cast<int>(run));
          q -= run;
        }
        out.skip(1);
        out.put(gap, p);
      }
    }
    out.flush();
  }
}

__global__ void value_streams_kernel(uint8_t* __restrict__ payload, Work w,
                                     const uint32_t* __restrict__ layout,
                                     const uint32_t* __restrict__ codes,
                                     const int32_t* __restrict__ tensors, int vbits) {
  const uint32_t t = blockIdx.y;
  const Tensor T = load_tensor(tensors, t);
  uint8_t* out = payload + w.at[t] + 12 + 4ull * T.table_entries + layout[t];
  const uint32_t* code = codes + T.kept_begin;
  const unsigned long long bytes = value_bytes(T.kept, vbits);
  for (unsigned long long j =
           blockIdx.x * static_cast<unsigned long long>(blockDim.x) + threadIdx.x;
       j < bytes; j += static_cast<unsigned long long>(gridDim.x) * blockDim.x) {
    uint32_t b = 0;
    if (vbits < 8) {
      const int per = 8 / vbits;
      for (int u = 0; u < per; ++u) {
        const unsigned long long i = j * per + u;
        if (i < T.kept) b |= (code[i] & ((1u << vbits) - 1u)) << (u * vbits);
      }
    } else {
      const int per = vbits / 8;
      b = code[j / per] >> (8 * (j % per));
    }
    out[j] = static_cast<uint8_t>(b);
  }
}

Work carve(void* scratch, size_t nt, size_t nc) {
  auto* u64 = static_cast<unsigned long long*>(scratch);
  Work w;
  w.at = u64;
  w.chunk_rice = u64 + nt;
  w.chunk_pos = w.chunk_rice + nc;
  w.choice = reinterpret_cast<uint32_t*>(w.chunk_pos + nc);
  w.chunk_param = w.choice + 2 * nt;
  return w;
}

}  // namespace

extern "C" size_t loco_pack_sections_scratch(size_t num_tensors, size_t num_chunks) {
  return sizeof(unsigned long long) * (num_tensors + 2 * num_chunks) +
         sizeof(uint32_t) * (2 * num_tensors + num_chunks);
}

extern "C" cudaError_t loco_pack_sections(
    uint32_t* payload, size_t payload_bytes, uint32_t* layout, const uint32_t* offsets,
    const uint32_t* codes, const float* tables, const int32_t* tensors, size_t num_tensors,
    const int32_t* chunks, size_t num_chunks, size_t max_chunks_per_tensor, size_t max_value_bytes,
    int index_coding, int implied, int explicit_counts, int value_bits,
    unsigned long long first_byte, void* scratch, cudaStream_t s) {
  if (num_tensors == 0) return cudaSuccess;
  if (num_tensors > 65535) return cudaErrorInvalidValue;  // grid.y of the stream kernels
  if (first_byte > payload_bytes) return cudaErrorInvalidValue;
  const int nt = static_cast<int>(num_tensors);
  const Work w = carve(scratch, num_tensors, num_chunks);
  cudaError_t e = cudaMemsetAsync(reinterpret_cast<uint8_t*>(payload) + first_byte, 0,
                                  payload_bytes - first_byte, s);
  if (e != cudaSuccess) return e;
  if (implied) {
    e = cudaMemsetAsync(layout, 0, sizeof(uint32_t) * num_tensors, s);
    if (e != cudaSuccess) return e;
    e = cudaMemsetAsync(w.choice, 0, sizeof(uint32_t) * 2 * num_tensors, s);
  } else {
    index_choice_kernel<<<static_cast<unsigned>(nt), kThreads, 0, s>>>(w, layout, offsets, tensors,
                                                                       chunks, index_coding);
    e = cudaGetLastError();
  }
  if (e != cudaSuccess) return e;
  section_offsets_kernel<<<1, 32, 0, s>>>(w, layout, tensors, nt, value_bits, first_byte);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  auto* bytes = reinterpret_cast<uint8_t*>(payload);
  section_heads_kernel<<<loco_dev::grid_for(num_tensors, kThreads), kThreads, 0, s>>>(
      bytes, w, layout, tables, tensors, nt);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  if (!implied) {
    const unsigned gx = loco_dev::grid_for(max_chunks_per_tensor, kThreads, 64);
    index_streams_kernel<<<dim3(gx, static_cast<unsigned>(nt)), kThreads, 0, s>>>(
        payload, w, offsets, tensors, chunks, explicit_counts);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  const unsigned vx = loco_dev::grid_for(max_value_bytes, kThreads, 64);
  value_streams_kernel<<<dim3(vx, static_cast<unsigned>(nt)), kThreads, 0, s>>>(
      bytes, w, layout, codes, tensors, value_bits);
  return cudaGetLastError();
}
