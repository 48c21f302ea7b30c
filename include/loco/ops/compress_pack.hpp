// CPU reference of the payload packer (Backend::pack_sections; kernels/compress_pack.cu is the
// CUDA version and must write the same bytes). It writes the tensor sections of the wire
// format (loco/compress/wire.hpp) — tensor headers, quantiser tables, index streams, value
// streams — from data the backend already holds: the kept in-chunk offsets, the quantiser's
// codes and tables. The 48-byte payload header and its checksum are the host's
// (compress::seal_payload). compress::encode_into is the other implementation of the same
// format; tests/support/device_compress_checks.hpp holds the two to the same bytes.
//
// The work is laid out as a device does it, so every step has a fixed answer in any order:
//  1. per chunk that needs offsets (0 < kept < C): the bit cost of each index coding —
//     fixed n·w, bitmap C, Rice Σ(g >> p) + n·(1 + p) for p = 0..15 — and its best Rice
//     parameter (the smallest p of least cost, p <= min(15, w)); w = bit_width(C − 1);
//  2. per tensor: the integer sums of those costs pick the coding (the rules of
//     compress::encode_into), hence the index stream's length; a scan over chunks gives each
//     chunk's first bit in the stream;
//  3. per tensor, in order: the section's first byte (header 12 + table 4·entries + index
//     bytes + value bytes, back to back after `first_byte`);
//  4. headers and tables, then every chunk's bits (OR-ed in: neighbours share bytes), then
//     the value stream (value_bits per code, LSB first).
#pragma once
#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace loco::ops {

inline constexpr int kMaxRiceParam = 15;

// Requested index coding (the values of compress::IndexCoding) and the codes the wire
// carries per tensor (compress::WireIndexCoding).
inline constexpr int kCodingAuto = 0, kCodingFixed = 1, kCodingRice = 2, kCodingBitmap = 3;
inline constexpr uint8_t kWireImplied = 0, kWireFixed = 1, kWireRiceChunk = 2, kWireRiceTensor = 3,
                         kWireBitmap = 4;
inline constexpr size_t kSectionHeaderBytes = 12;

struct PackOptions {
  int index_coding = kCodingAuto;
  bool implied = false;          // no index streams (selector none, random_k)
  bool explicit_counts = false;  // each chunk's count first (global_topk)
  int value_bits = 32;           // 32, 16, 8, 4 or 2
  uint64_t first_byte = 48;      // where the first section starts
  // Launch sizing for a device (it cannot read its tables without a copy): the most chunks
  // and the most value-stream bytes of any one tensor. Results do not depend on them.
  uint32_t max_chunks_per_tensor = 0;
  uint64_t max_value_bytes = 0;
};

// One chunk (kPackChunkInts i32 words): its size C, where its kept elements start among the
// kept arrays, how many it keeps, and (explicit counts) the bit of its count in the stream.
struct PackChunk {
  uint32_t size = 0, kept_start = 0, kept = 0, count_pos = 0;
};
inline constexpr int kPackChunkInts = 4;

// One tensor (kPackTensorInts i32 words). count_bits: the bits of its explicit counts (0
// without), which come before the first chunk's offsets.
struct PackTensor {
  uint32_t chunk_begin = 0, chunk_end = 0;
  uint32_t kept_begin = 0, kept = 0;
  uint32_t table_begin = 0, table_entries = 0, table_kind = 0;
  uint32_t count_bits = 0;
};
inline constexpr int kPackTensorInts = 8;

inline void pack_pack_chunk(const PackChunk& c, int32_t* out) {
  const uint32_t w[kPackChunkInts] = {c.size, c.kept_start, c.kept, c.count_pos};
  for (int i = 0; i < kPackChunkInts; ++i) out[i] = static_cast<int32_t>(w[i]);
}
inline PackChunk unpack_pack_chunk(const int32_t* in) {
  auto u = [in](int i) { return static_cast<uint32_t>(in[i]); };
  return PackChunk{u(0), u(1), u(2), u(3)};
}
inline void pack_pack_tensor(const PackTensor& t, int32_t* out) {
  const uint32_t w[kPackTensorInts] = {t.chunk_begin, t.chunk_end,     t.kept_begin, t.kept,
                                       t.table_begin, t.table_entries, t.table_kind, t.count_bits};
  for (int i = 0; i < kPackTensorInts; ++i) out[i] = static_cast<int32_t>(w[i]);
}
inline PackTensor unpack_pack_tensor(const int32_t* in) {
  auto u = [in](int i) { return static_cast<uint32_t>(in[i]); };
  return PackTensor{u(0), u(1), u(2), u(3), u(4), u(5), u(6), u(7)};
}

// Bits of an in-chunk offset (fixed coding) and of a count (explicit counts).
inline int offset_bits(uint32_t C) { return C <= 1 ? 0 : std::bit_width(C - 1); }
inline int count_bits(uint32_t C) { return std::bit_width(C); }
// A chunk's offsets are coded unless it keeps nothing or everything.
inline bool needs_offsets(uint32_t n, uint32_t C) { return n != 0 && n != C; }

// Rice cost in bits of one chunk's gaps (g₀ = o₀, gⱼ = oⱼ − oⱼ₋₁ − 1) for every parameter.
inline void rice_costs(const uint32_t* o, uint32_t n,
                       std::array<uint64_t, kMaxRiceParam + 1>& cost) {
  cost.fill(0);
  uint32_t prev = 0;
  for (uint32_t j = 0; j < n; ++j) {
    const uint32_t g = j == 0 ? o[0] : o[j] - prev - 1;
    prev = o[j];
    for (int p = 0; p <= kMaxRiceParam; ++p) cost[size_t(p)] += (g >> p);
  }
  for (int p = 0; p <= kMaxRiceParam; ++p) cost[size_t(p)] += uint64_t(n) * uint64_t(1 + p);
}

// The smallest p <= pmax of least cost.
inline int best_rice_param(const std::array<uint64_t, kMaxRiceParam + 1>& cost, int pmax) {
  int best = 0;
  for (int p = 1; p <= pmax; ++p)
    if (cost[size_t(p)] < cost[size_t(best)]) best = p;
  return best;
}

// Index costs of one tensor (stream padding excluded): the sums over its coded chunks.
struct TensorIndexCost {
  uint64_t fixed = 0, bitmap = 0, rice_chunk = 0;
  std::array<uint64_t, kMaxRiceParam + 1> rice_tensor{};  // Σ cost[p] over chunks
};

// The coding a tensor is sent with, its parameter (RiceTensor), and its index stream bits.
struct IndexChoice {
  uint8_t coding = kWireImplied;
  int param = 0;
  uint64_t bits = 0;
};
inline IndexChoice choose_index_coding(const TensorIndexCost& c, int requested,
                                       uint64_t count_bits) {
  IndexChoice ch;
  const int tensor_param = best_rice_param(c.rice_tensor, kMaxRiceParam);
  const uint64_t rice_tensor = c.rice_tensor[size_t(tensor_param)];
  const uint64_t rice = std::min(c.rice_chunk, rice_tensor);
  const uint8_t rice_kind = rice_tensor <= c.rice_chunk ? kWireRiceTensor : kWireRiceChunk;
  uint64_t bits = 0;
  switch (requested) {
    case kCodingFixed:
      ch.coding = kWireFixed, bits = c.fixed;
      break;
    case kCodingRice:
      ch.coding = rice_kind, bits = rice;
      break;
    case kCodingBitmap:
      ch.coding = kWireBitmap, bits = c.bitmap;
      break;
    default:  // auto: the smallest, fixed < rice < bitmap on ties
      ch.coding = kWireFixed, bits = c.fixed;
      if (rice < bits) ch.coding = rice_kind, bits = rice;
      if (c.bitmap < bits) ch.coding = kWireBitmap, bits = c.bitmap;
      break;
  }
  if (ch.coding == kWireRiceTensor) ch.param = tensor_param;
  ch.bits = count_bits + bits;
  return ch;
}

// Rice cost of one chunk's gaps with parameter p (one entry of rice_costs).
inline uint64_t rice_cost_at(const uint32_t* o, uint32_t n, int p) {
  uint64_t cost = uint64_t(n) * uint64_t(1 + p);
  uint32_t prev = 0;
  for (uint32_t j = 0; j < n; ++j) {
    const uint32_t g = j == 0 ? o[0] : o[j] - prev - 1;
    prev = o[j];
    cost += g >> p;
  }
  return cost;
}

// ORs the n <= 32 low bits of v into the bit stream `p` at bit `pos` (LSB first).
inline void or_bits(uint8_t* p, uint64_t pos, uint64_t v, int n) {
  if (n == 0) return;
  v &= n >= 64 ? ~uint64_t(0) : (uint64_t(1) << n) - 1;
  uint64_t byte = pos >> 3;
  v <<= pos & 7;
  for (int left = n + int(pos & 7); left > 0; left -= 8, v >>= 8) p[byte++] |= uint8_t(v);
}

// Writes one chunk's offsets at bit `pos` of its tensor's stream (pointer `stream`).
inline void write_chunk_offsets(uint8_t* stream, uint64_t pos, uint8_t coding, int param,
                                const uint32_t* o, uint32_t n, uint32_t C) {
  switch (coding) {
    case kWireFixed: {
      const int w = offset_bits(C);
      for (uint32_t j = 0; j < n; ++j, pos += uint64_t(w)) or_bits(stream, pos, o[j], w);
      break;
    }
    case kWireRiceChunk:
    case kWireRiceTensor: {
      if (coding == kWireRiceChunk) {
        or_bits(stream, pos, uint64_t(param), 4);
        pos += 4;
      }
      uint32_t prev = 0;
      for (uint32_t j = 0; j < n; ++j) {
        const uint32_t g = j == 0 ? o[0] : o[j] - prev - 1;
        prev = o[j];
        for (uint64_t q = g >> param; q > 0;) {  // the unary quotient: ones, then a zero
          const int run = int(std::min<uint64_t>(q, 32));
          or_bits(stream, pos, ~uint64_t(0), run);
          pos += uint64_t(run);
          q -= uint64_t(run);
        }
        pos += 1;
        or_bits(stream, pos, g, param);
        pos += uint64_t(param);
      }
      break;
    }
    case kWireBitmap:
      for (uint32_t j = 0; j < n; ++j) or_bits(stream, pos + o[j], 1, 1);
      break;
    default:
      break;
  }
}

// An upper bound of the bytes pack_sections writes (the total it reports is never more): per
// coded chunk at most max(C, 4 + 17·kept) index bits (bit_width(C − 1) <= 16, a Rice
// parameter <= 15 leaves quotients <= 1), plus the counts, headers, tables and values.
inline uint64_t pack_bound(const PackTensor* tensors, size_t nt, const PackChunk* chunks,
                           const PackOptions& opt) {
  uint64_t total = opt.first_byte;
  for (size_t t = 0; t < nt; ++t) {
    const PackTensor& T = tensors[t];
    uint64_t bits = T.count_bits;
    if (!opt.implied)
      for (uint32_t c = T.chunk_begin; c < T.chunk_end; ++c)
        if (needs_offsets(chunks[c].kept, chunks[c].size))
          bits += std::max<uint64_t>(chunks[c].size, 4 + 17 * uint64_t(chunks[c].kept));
    total += kSectionHeaderBytes + 4 * uint64_t(T.table_entries) + (bits + 7) / 8 +
             (uint64_t(T.kept) * uint64_t(opt.value_bits) + 7) / 8;
  }
  return total;
}

// The whole packer: sections of every tensor into payload (zeroed, at least the returned
// total bytes); layout[t] = tensor t's index stream bytes, layout[nt, nt + 1] = total bytes
// (low, high word). offsets/codes: per kept element; tables: f32 entries.
inline void pack_sections(uint8_t* payload, uint32_t* layout, const uint32_t* offsets,
                          const uint32_t* codes, const float* tables, const PackTensor* tensors,
                          size_t nt, const PackChunk* chunks, const PackOptions& opt) {
  uint64_t at = opt.first_byte;
  for (size_t t = 0; t < nt; ++t) {
    const PackTensor& T = tensors[t];
    // 1–2: costs, coding, stream length.
    IndexChoice ch;
    std::vector<uint8_t> chunk_param(T.chunk_end - T.chunk_begin);
    std::vector<uint64_t> chunk_rice(T.chunk_end - T.chunk_begin);
    if (!opt.implied) {
      TensorIndexCost cost;
      std::array<uint64_t, kMaxRiceParam + 1> rc{};
      for (uint32_t c = T.chunk_begin; c < T.chunk_end; ++c) {
        const PackChunk& g = chunks[c];
        if (!needs_offsets(g.kept, g.size)) continue;
        cost.fixed += uint64_t(g.kept) * uint64_t(offset_bits(g.size));
        cost.bitmap += g.size;
        rice_costs(offsets + g.kept_start, g.kept, rc);
        const int p = best_rice_param(rc, std::min(kMaxRiceParam, offset_bits(g.size)));
        chunk_param[c - T.chunk_begin] = uint8_t(p);
        chunk_rice[c - T.chunk_begin] = rc[size_t(p)];
        cost.rice_chunk += 4 + rc[size_t(p)];
        for (int q = 0; q <= kMaxRiceParam; ++q) cost.rice_tensor[size_t(q)] += rc[size_t(q)];
      }
      ch = choose_index_coding(cost, opt.index_coding, T.count_bits);
    }
    const uint64_t index_bytes = (ch.bits + 7) / 8;
    const uint64_t value_bytes = (uint64_t(T.kept) * uint64_t(opt.value_bits) + 7) / 8;
    layout[t] = uint32_t(index_bytes);
    // 3–4: header and table.
    uint8_t* sec = payload + at;
    std::memcpy(sec, &T.kept, 4);
    sec[4] = ch.coding;
    sec[5] = uint8_t(ch.param);
    sec[6] = uint8_t(T.table_kind);
    sec[7] = 0;
    const uint32_t ib = uint32_t(index_bytes);
    std::memcpy(sec + 8, &ib, 4);
    if (T.table_entries > 0)
      std::memcpy(sec + kSectionHeaderBytes, tables + T.table_begin, 4 * size_t(T.table_entries));
    uint8_t* stream = sec + kSectionHeaderBytes + 4 * size_t(T.table_entries);
    // Index stream: counts, then each chunk's offsets after the ones before it.
    if (!opt.implied) {
      uint64_t pos = T.count_bits;
      for (uint32_t c = T.chunk_begin; c < T.chunk_end; ++c) {
        const PackChunk& g = chunks[c];
        if (opt.explicit_counts) or_bits(stream, g.count_pos, g.kept, count_bits(g.size));
        if (!needs_offsets(g.kept, g.size)) continue;
        const uint32_t* o = offsets + g.kept_start;
        int p = ch.param;
        uint64_t bits = 0;
        switch (ch.coding) {
          case kWireFixed:
            bits = uint64_t(g.kept) * uint64_t(offset_bits(g.size));
            break;
          case kWireRiceChunk:
            p = chunk_param[c - T.chunk_begin];
            bits = 4 + chunk_rice[c - T.chunk_begin];
            break;
          case kWireRiceTensor:
            bits = rice_cost_at(o, g.kept, p);
            break;
          case kWireBitmap:
            bits = g.size;
            break;
        }
        write_chunk_offsets(stream, pos, ch.coding, p, o, g.kept, g.size);
        pos += bits;
      }
    }
    // Value stream.
    uint8_t* values = stream + index_bytes;
    for (uint32_t i = 0; i < T.kept; ++i)
      or_bits(values, uint64_t(i) * uint64_t(opt.value_bits), codes[T.kept_begin + i],
              opt.value_bits);
    at += kSectionHeaderBytes + 4 * uint64_t(T.table_entries) + index_bytes + value_bytes;
  }
  layout[nt] = uint32_t(at);
  layout[nt + 1] = uint32_t(at >> 32);
}

}  // namespace loco::ops
