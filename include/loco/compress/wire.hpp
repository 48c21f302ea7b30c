// The packed wire format of a compressed pseudo-gradient (version 1). All integers are
// little-endian; bit streams are LSB-first (bit i of a stream is bit i%8 of byte i/8); every
// stream starts on a byte boundary and its last byte is padded with zero bits.
//
//   Header (48 bytes)
//     0  u8[4] magic "LCSP"
//     4  u16   version = 1
//     6  u16   header bytes = 48
//     8  u8    selector   (0 none, 1 chunked_topk, 2 global_topk, 3 random_k)
//     9  u8    quantizer  (0 f32, 1 bf16, 2 8bit, 3 4bit, 4 2bit)
//    10  u16   flags: bit 0 = indices implied (selector none: every element; random_k:
//                     derived from the key), bit 1 = per-chunk counts sent (global_topk).
//                     Every other bit must be 0.
//    12  u32   tensor count
//    16  u64   total bytes of the payload (header included)
//    24  u64   plan fingerprint (chunking, topk, selector, quantizer): the receiver's must match
//    32  u64   random-k key (0 for the other selectors)
//    40  u64   checksum = hash_bytes(bytes [48, total), seed = hash_bytes(bytes [0, 40)))
//   Then one section per tensor, in layout order:
//     0  u32   kept: elements of this tensor in the payload
//     4  u8    index coding (0 implied, 1 fixed, 2 rice with a parameter per chunk,
//              3 rice with one parameter for the tensor, 4 bitmap)
//     5  u8    rice parameter (coding 3; else 0), <= 15
//     6  u8    table kind (0 none: f32/bf16 values; 1 means: L f32 levels; 2 uniform:
//              f32 shift, f32 step — see compress.hpp)
//     7  u8    reserved = 0
//     8  u32   index stream bytes
//    12  table (0, L or 2 f32)
//     .  index stream
//     .  value stream: kept codes at value_bits() each (2/4/8-bit levels, bf16 bits, f32
//        bits), ceil(kept · bits / 8) bytes
//   The payload ends exactly after the last section.
//
// Index stream of a tensor, chunk by chunk (chunk sizes C and k(C) from the receiver's plan):
//   counts: global_topk only: one count per chunk first, each in bit_width(C) bits (0..C);
//           the other selectors keep k(C) per chunk (implied).
//   offsets of a chunk keeping n elements: nothing when n = 0 or n = C; otherwise
//     fixed:  n offsets of bit_width(C − 1) bits (12 for 4096), ascending;
//     rice:   gaps g₀ = o₀, gⱼ = oⱼ − oⱼ₋₁ − 1, each as ⌊g / 2^p⌋ one-bits, a zero bit, then
//             the p low bits of g; coding 2 sends p in 4 bits before the chunk's gaps;
//     bitmap: C bits, bit o set for each kept offset o (exactly n set).
//
// Decoding validates everything before it is used: sizes against the bytes actually there,
// the magic, version, enums, flags, the fingerprint, the checksum, every count (<= C, sum =
// kept), every offset (< C, strictly ascending), every unary run (bounded by C), the padding
// bits, table entries (finite; step >= 0) and f32/bf16 values (finite). A violation throws
// loco::Error naming the field, the tensor and the byte position; nothing is ever read
// outside [payload, payload + bytes).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "loco/compress/compress.hpp"
#include "loco/ops/compress_pack.hpp"

namespace loco::compress {

inline constexpr uint8_t kWireMagic[4] = {'L', 'C', 'S', 'P'};
inline constexpr uint16_t kWireVersion = 1;
inline constexpr size_t kWireHeaderBytes = 48;
inline constexpr size_t kWireTensorHeaderBytes = 12;
inline constexpr uint16_t kFlagIndicesImplied = 1;
inline constexpr uint16_t kFlagCountsExplicit = 2;

enum class WireIndexCoding : uint8_t {
  Implied = 0,
  Fixed = 1,
  RiceChunk = 2,
  RiceTensor = 3,
  Bitmap = 4
};
const char* wire_index_coding_name(WireIndexCoding c);

// Packs a selection and its quantised values. `key` = the random-k key (else ignored).
std::vector<uint8_t> encode(const Plan& plan, const Selection& sel, const Quantized& q,
                            uint64_t key, EncodeStats* stats = nullptr);
void encode_into(const Plan& plan, const Selection& sel, const Quantized& q, uint64_t key,
                 std::vector<uint8_t>& out, EncodeStats* stats = nullptr);

// Writes the 48-byte header of a payload of `total` bytes whose sections are in place at
// [48, total): the fields above, then the checksum over the sections. encode_into ends with
// it; DeviceCompressor calls it on the sections a backend packed.
void seal_payload(const Plan& plan, uint64_t key, uint8_t* payload, size_t total);

// What Backend::pack_sections reads to pack a selection (loco/ops/compress_pack.hpp): per
// tensor its chunks, kept range and table; per chunk its size, kept range and count position;
// the coding options; and a bound on the payload size to allocate. `chunk_start` as for
// quant_layout, whose result supplies the tables.
struct PackLayout {
  std::vector<ops::PackTensor> tensors;
  std::vector<ops::PackChunk> chunks;
  ops::PackOptions options;
  uint64_t max_bytes = 0;
};
PackLayout pack_layout(const Plan& plan, const std::vector<uint64_t>& chunk_start,
                       const QuantLayout& quant);

struct DecodeOptions {
  bool verify_checksum = true;  // tests turn it off to reach the structural checks
};

// Calls sink(flat_index, value) for every kept element, tensors and chunks in order,
// offsets ascending within a chunk. Validates the whole payload first (so a malformed payload
// throws before any sink call).
void decode(const Plan& plan, const uint8_t* payload, size_t bytes,
            const std::function<void(size_t, float)>& sink, DecodeOptions opt = {});
// The kept elements as (flat index, value) pairs in payload order (tensors, chunks, offsets
// ascending), replacing the vectors' contents; plan.total must be < 2^32. What a device
// aggregator uploads and scatters.
void decode_sparse(const Plan& plan, const uint8_t* payload, size_t bytes,
                   std::vector<uint32_t>& flat, std::vector<float>& values, DecodeOptions opt = {});
// out[0, plan.total) = the decoded values, 0 where nothing was kept.
void decode_dense(const Plan& plan, const uint8_t* payload, size_t bytes, float* out,
                  DecodeOptions opt = {});
// sum[i] += value; count[i] += 1 (count may be null).
void decode_accumulate(const Plan& plan, const uint8_t* payload, size_t bytes, float* sum,
                       uint16_t* count, DecodeOptions opt = {});

// What each index coding would cost for one tensor's selection, in bits (stream padding
// excluded). Rice costs include their parameters. For the benchmark and the tests.
struct IndexCost {
  uint64_t fixed = 0, rice_chunk = 0, rice_tensor = 0, bitmap = 0;
  int rice_tensor_param = 0;
};
IndexCost index_cost(const Plan& plan, const Selection& sel, size_t tensor);

}  // namespace loco::compress
