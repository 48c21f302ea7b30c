// Packing and validated unpacking of compressed payloads (format: loco/compress/wire.hpp).
#include "loco/compress/wire.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <exception>
#include <string>

#include "loco/core/error.hpp"
#include "loco/core/hash.hpp"
#include "loco/ops/bf16.hpp"

namespace loco::compress {

const char* wire_index_coding_name(WireIndexCoding c) {
  switch (c) {
    case WireIndexCoding::Implied:
      return "implied";
    case WireIndexCoding::Fixed:
      return "fixed";
    case WireIndexCoding::RiceChunk:
      return "rice (per chunk)";
    case WireIndexCoding::RiceTensor:
      return "rice (per tensor)";
    case WireIndexCoding::Bitmap:
      return "bitmap";
  }
  return "unknown";
}

namespace {

using ops::best_rice_param;
using ops::count_bits;
using ops::kMaxRiceParam;
using ops::needs_offsets;
using ops::offset_bits;
using ops::rice_costs;

inline uint64_t low_mask(int n) { return n >= 64 ? ~uint64_t(0) : (uint64_t(1) << n) - 1; }

// ------------------------------------------------------------------ bit streams

class BitWriter {
 public:
  explicit BitWriter(std::vector<uint8_t>& out) : out_(out) {}
  void put(uint64_t v, int n) {  // n <= 32
    acc_ |= (v & low_mask(n)) << fill_;
    fill_ += n;
    bits_ += uint64_t(n);
    while (fill_ >= 8) {
      out_.push_back(uint8_t(acc_));
      acc_ >>= 8;
      fill_ -= 8;
    }
  }
  void ones(uint64_t q) {
    while (q >= 32) {
      put(0xffffffffu, 32);
      q -= 32;
    }
    put(low_mask(int(q)), int(q));
  }
  void flush() {
    if (fill_ > 0) out_.push_back(uint8_t(acc_));
    acc_ = 0;
    fill_ = 0;
  }
  uint64_t bits() const { return bits_; }

 private:
  std::vector<uint8_t>& out_;
  uint64_t acc_ = 0;
  int fill_ = 0;
  uint64_t bits_ = 0;
};

// Where a decode failure happened, for messages.
struct Where {
  const Plan* plan = nullptr;
  size_t tensor = SIZE_MAX;
  size_t chunk = SIZE_MAX;  // chunk index within the tensor
  std::string prefix() const {
    std::string s = "compressed payload";
    if (plan && tensor < plan->tensors.size()) {
      s += ": tensor " + std::to_string(tensor) + " (" + plan->tensors[tensor].name + ")";
      if (chunk != SIZE_MAX) s += " chunk " + std::to_string(chunk);
    }
    return s;
  }
};

[[noreturn]] void fail(const Where& w, const std::string& what) {
  throw Error(w.prefix() + ": " + what);
}

// Reads bits from [data, data + nbytes); never touches a byte outside it.
class BitReader {
 public:
  BitReader(const uint8_t* data, size_t nbytes, size_t base, const char* name, const Where& where)
      : p_(data),
        nbytes_(nbytes),
        nbits_(uint64_t(nbytes) * 8),
        base_(base),
        name_(name),
        where_(where) {}

  uint64_t get(int n) {  // n <= 32
    if (n == 0) return 0;
    if (uint64_t(n) > nbits_ - pos_) truncated(n);
    const uint64_t v = peek64() & low_mask(n);
    pos_ += uint64_t(n);
    return v;
  }

  // Counts one-bits up to the terminating zero (consumed); throws past `max_run`.
  uint64_t unary(uint64_t max_run) {
    uint64_t run = 0;
    for (;;) {
      const uint64_t avail = std::min<uint64_t>(nbits_ - pos_, 56);
      if (avail == 0) truncated(1);
      const uint64_t w = peek64() & low_mask(int(avail));
      const uint64_t ones = std::min<uint64_t>(uint64_t(std::countr_one(w)), avail);
      run += ones;
      if (run > max_run)
        fail(where_, std::string(name_) + " stream: a Rice quotient exceeds " +
                         std::to_string(max_run) + " (byte " + std::to_string(byte_pos()) +
                         " of the payload): corrupt offsets");
      pos_ += ones;
      if (ones < avail) {
        ++pos_;  // the terminating zero
        return run;
      }
    }
  }

  // The stream must end here: whole bytes consumed, padding bits zero.
  void finish() {
    const uint64_t used_bytes = (pos_ + 7) / 8;
    if (used_bytes != nbytes_)
      fail(where_, std::string(name_) + " stream is " + std::to_string(nbytes_) +
                       " bytes but its contents end after " + std::to_string(used_bytes) +
                       " (at byte " + std::to_string(base_) + " of the payload)");
    const uint64_t pad = nbits_ - pos_;
    if (pad > 0 && get(int(pad)) != 0)
      fail(where_, std::string(name_) + " stream: non-zero padding bits (byte " +
                       std::to_string(base_ + nbytes_ - 1) + " of the payload)");
  }

  size_t byte_pos() const { return base_ + size_t(pos_ / 8); }

 private:
  // Up to 64 bits starting at pos_ (zeros past the end): the bytes read stay in bounds.
  uint64_t peek64() const {
    const size_t b = size_t(pos_ >> 3);
    const int shift = int(pos_ & 7);
    uint64_t w = 0;
    const size_t avail = nbytes_ - b;
    std::memcpy(&w, p_ + b, std::min<size_t>(8, avail));
    return w >> shift;
  }
  [[noreturn]] void truncated(int want) const {
    fail(where_, std::string(name_) + " stream ends early: " + std::to_string(want) +
                     " more bits needed at byte " + std::to_string(byte_pos()) +
                     " of the payload (stream of " + std::to_string(nbytes_) + " bytes)");
  }

  const uint8_t* p_;
  size_t nbytes_;
  uint64_t nbits_;
  uint64_t pos_ = 0;
  size_t base_;
  const char* name_;
  const Where& where_;
};

// Little-endian scalar I/O.
template <class T>
void put_le(std::vector<uint8_t>& out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // x86/ARM hosts are little-endian
  out.insert(out.end(), b, b + sizeof(T));
}
template <class T>
void patch_le(std::vector<uint8_t>& out, size_t at, T v) {
  std::memcpy(out.data() + at, &v, sizeof(T));
}
template <class T>
T get_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
static_assert(std::endian::native == std::endian::little, "the wire format is little-endian");

}  // namespace

IndexCost index_cost(const Plan& plan, const Selection& sel, size_t t) {
  IndexCost ic;
  std::array<uint64_t, kMaxRiceParam + 1> tensor_cost{};
  std::array<uint64_t, kMaxRiceParam + 1> cost{};
  for (size_t c = plan.first_chunk[t]; c < plan.first_chunk[t + 1]; ++c) {
    const uint32_t C = plan.chunks[c].size();
    const uint32_t n = uint32_t(sel.start[c + 1] - sel.start[c]);
    if (!needs_offsets(n, C)) continue;
    ic.fixed += uint64_t(n) * offset_bits(C);
    ic.bitmap += C;
    rice_costs(sel.offset.data() + sel.start[c], n, cost);
    ic.rice_chunk += 4 + cost[best_rice_param(cost, std::min(kMaxRiceParam, offset_bits(C)))];
    for (int p = 0; p <= kMaxRiceParam; ++p) tensor_cost[p] += cost[p];
  }
  ic.rice_tensor_param = best_rice_param(tensor_cost, kMaxRiceParam);
  ic.rice_tensor = tensor_cost[ic.rice_tensor_param];
  return ic;
}

// ------------------------------------------------------------------ encode

namespace {

// One tensor's section (header, table, index stream, value stream), appended to `out`, which
// holds nothing else: sections are independent, so encode_into builds them in parallel.
void encode_section(const Plan& plan, const Selection& sel, const Quantized& q, size_t t,
                    bool implied, bool explicit_counts, int vbits, std::vector<uint8_t>& out,
                    EncodeStats& st) {
  const Settings& s = plan.settings;
  const int L = quant_levels(s.quantizer);
  const size_t c0 = plan.first_chunk[t], c1 = plan.first_chunk[t + 1];
  const uint64_t k0 = sel.start[c0], kept = sel.start[c1] - k0;
  // Index coding for this tensor.
  WireIndexCoding coding = WireIndexCoding::Implied;
  int tensor_param = 0;
  if (!implied) {
    const IndexCost ic = index_cost(plan, sel, t);
    const uint64_t rice = std::min(ic.rice_chunk, ic.rice_tensor);
    const WireIndexCoding rice_kind =
        ic.rice_tensor <= ic.rice_chunk ? WireIndexCoding::RiceTensor : WireIndexCoding::RiceChunk;
    switch (s.index_coding) {
      case IndexCoding::Fixed:
        coding = WireIndexCoding::Fixed;
        break;
      case IndexCoding::Rice:
        coding = rice_kind;
        break;
      case IndexCoding::Bitmap:
        coding = WireIndexCoding::Bitmap;
        break;
      case IndexCoding::Auto: {
        coding = WireIndexCoding::Fixed;
        uint64_t best = ic.fixed;
        if (rice < best) coding = rice_kind, best = rice;
        if (ic.bitmap < best) coding = WireIndexCoding::Bitmap, best = ic.bitmap;
        break;
      }
    }
    if (coding == WireIndexCoding::RiceTensor) tensor_param = ic.rice_tensor_param;
  }
  const TableKind tk = q.table_kind.empty() ? TableKind::None : q.table_kind[t];
  const size_t tsz = q.table_start.empty() ? 0 : q.table_start[t + 1] - q.table_start[t];

  LOCO_CHECK(kept <= UINT32_MAX, "a tensor keeps fewer than 2^32 elements");
  const size_t section = out.size();
  put_le<uint32_t>(out, uint32_t(kept));
  out.push_back(uint8_t(coding));
  out.push_back(uint8_t(tensor_param));
  out.push_back(uint8_t(tk));
  out.push_back(0);
  put_le<uint32_t>(out, 0);  // index bytes, patched below
  st.header_bytes += kWireTensorHeaderBytes;
  for (size_t i = 0; i < tsz; ++i) put_le<float>(out, q.table[q.table_start[t] + i]);
  st.table_bytes += tsz * 4;

  // Index stream.
  const size_t index_begin = out.size();
  if (!implied) {
    BitWriter bw(out);
    if (explicit_counts)
      for (size_t c = c0; c < c1; ++c)
        bw.put(sel.start[c + 1] - sel.start[c], count_bits(plan.chunks[c].size()));
    std::array<uint64_t, kMaxRiceParam + 1> cost{};
    for (size_t c = c0; c < c1; ++c) {
      const uint32_t C = plan.chunks[c].size();
      const uint32_t n = uint32_t(sel.start[c + 1] - sel.start[c]);
      if (!needs_offsets(n, C)) continue;
      const uint32_t* o = sel.offset.data() + sel.start[c];
      switch (coding) {
        case WireIndexCoding::Fixed: {
          const int w = offset_bits(C);
          for (uint32_t j = 0; j < n; ++j) bw.put(o[j], w);
          break;
        }
        case WireIndexCoding::RiceChunk:
        case WireIndexCoding::RiceTensor: {
          int p = tensor_param;
          if (coding == WireIndexCoding::RiceChunk) {
            rice_costs(o, n, cost);
            p = best_rice_param(cost, std::min(kMaxRiceParam, offset_bits(C)));
            bw.put(uint64_t(p), 4);
          }
          uint32_t prev = 0;
          for (uint32_t j = 0; j < n; ++j) {
            const uint32_t g = j == 0 ? o[0] : o[j] - prev - 1;
            prev = o[j];
            bw.ones(g >> p);
            bw.put(0, 1);
            bw.put(g, p);
          }
          break;
        }
        case WireIndexCoding::Bitmap: {
          uint32_t j = 0;
          for (uint32_t pos = 0; pos < C; pos += 32) {
            const uint32_t end = std::min<uint32_t>(pos + 32, C);
            uint32_t word = 0;
            while (j < n && o[j] < end) word |= 1u << (o[j++] - pos);
            bw.put(word, int(end - pos));
          }
          break;
        }
        case WireIndexCoding::Implied:
          break;
      }
    }
    bw.flush();
  }
  const size_t index_bytes = out.size() - index_begin;
  LOCO_CHECK(index_bytes <= UINT32_MAX, "index stream fits 32 bits");
  patch_le<uint32_t>(out, section + 8, uint32_t(index_bytes));
  st.index_bytes += index_bytes;

  // Value stream.
  const size_t value_begin = out.size();
  {
    BitWriter bw(out);
    const uint32_t* code = q.code.data() + k0;
    for (uint64_t i = 0; i < kept; ++i) bw.put(code[i], vbits);
    bw.flush();
  }
  st.value_bytes += out.size() - value_begin;
  (void)L;
}

}  // namespace

void seal_payload(const Plan& plan, uint64_t key, uint8_t* payload, size_t total) {
  const Settings& s = plan.settings;
  LOCO_CHECK(total >= kWireHeaderBytes, "a payload holds at least its header");
  const bool implied = s.selector == Selector::None || s.selector == Selector::RandomK;
  const bool explicit_counts = s.selector == Selector::GlobalTopK;
  uint8_t* p = payload;
  auto put = [&p](const auto v) {
    std::memcpy(p, &v, sizeof v);
    p += sizeof v;
  };
  std::memcpy(p, kWireMagic, 4);
  p += 4;
  put(kWireVersion);
  put(uint16_t(kWireHeaderBytes));
  put(uint8_t(s.selector));
  put(uint8_t(s.quantizer));
  put(uint16_t((implied ? kFlagIndicesImplied : 0) | (explicit_counts ? kFlagCountsExplicit : 0)));
  put(uint32_t(plan.tensors.size()));
  put(uint64_t(total));
  put(uint64_t(plan.fingerprint));
  put(uint64_t(s.selector == Selector::RandomK ? key : 0));
  const uint64_t seed = hash_bytes(payload, 40);
  put(hash_bytes(payload + kWireHeaderBytes, total - kWireHeaderBytes, seed));
}

PackLayout pack_layout(const Plan& plan, const std::vector<uint64_t>& chunk_start,
                       const QuantLayout& quant) {
  const Settings& s = plan.settings;
  const size_t nt = plan.tensors.size(), nc = plan.chunks.size();
  LOCO_CHECK(chunk_start.size() == nc + 1, "pack_layout: one start per chunk");
  LOCO_CHECK(quant.tensors.size() == nt, "pack_layout: the quantiser layout of this plan");
  PackLayout out;
  out.options.index_coding = int(s.index_coding);
  out.options.implied = s.selector == Selector::None || s.selector == Selector::RandomK;
  out.options.explicit_counts = s.selector == Selector::GlobalTopK;
  out.options.value_bits = value_bits(s.quantizer);
  out.options.first_byte = kWireHeaderBytes;
  out.chunks.resize(nc);
  out.tensors.resize(nt);
  for (size_t t = 0; t < nt; ++t) {
    ops::PackTensor& T = out.tensors[t];
    T.chunk_begin = uint32_t(plan.first_chunk[t]);
    T.chunk_end = uint32_t(plan.first_chunk[t + 1]);
    T.kept_begin = quant.tensors[t].kept_begin;
    T.kept = quant.tensors[t].kept;
    T.table_begin = uint32_t(quant.table_start[t]);
    T.table_entries = uint32_t(quant.table_start[t + 1] - quant.table_start[t]);
    T.table_kind = quant.tensors[t].table_kind;
    uint32_t count_pos = 0;
    for (size_t c = T.chunk_begin; c < T.chunk_end; ++c) {
      ops::PackChunk& g = out.chunks[c];
      g.size = plan.chunks[c].size();
      g.kept_start = uint32_t(chunk_start[c]);
      g.kept = uint32_t(chunk_start[c + 1] - chunk_start[c]);
      g.count_pos = count_pos;
      if (out.options.explicit_counts) count_pos += uint32_t(count_bits(g.size));
    }
    T.count_bits = count_pos;
    out.options.max_chunks_per_tensor =
        std::max(out.options.max_chunks_per_tensor, T.chunk_end - T.chunk_begin);
    out.options.max_value_bytes = std::max<uint64_t>(
        out.options.max_value_bytes, (uint64_t(T.kept) * uint64_t(out.options.value_bits) + 7) / 8);
  }
  out.max_bytes = ops::pack_bound(out.tensors.data(), nt, out.chunks.data(), out.options);
  return out;
}

void encode_into(const Plan& plan, const Selection& sel, const Quantized& q, uint64_t key,
                 std::vector<uint8_t>& out, EncodeStats* stats) {
  const Settings& s = plan.settings;
  const size_t nt = plan.tensors.size();
  LOCO_CHECK(sel.start.size() == plan.chunks.size() + 1, "selection matches the plan");
  LOCO_CHECK(q.code.size() == sel.kept(), "one code per kept element");
  const bool implied = s.selector == Selector::None || s.selector == Selector::RandomK;
  const bool explicit_counts = s.selector == Selector::GlobalTopK;
  const int vbits = value_bits(s.quantizer);
  EncodeStats st;
  st.elements = plan.total;
  st.kept = sel.kept();

  out.assign(kWireHeaderBytes, 0);  // the header: written by seal_payload at the end
  out.reserve(kWireHeaderBytes + nt * (kWireTensorHeaderBytes + 64) +
              size_t(double(sel.kept()) * (vbits + 12) / 8.0) + 64);
  st.header_bytes += kWireHeaderBytes;

  // Sections in parallel (each into its own buffer; the bytes do not depend on the thread
  // count), then concatenated in tensor order.
  std::vector<std::vector<uint8_t>> sections(nt);
  std::vector<EncodeStats> section_stats(nt);
  std::exception_ptr error;  // an exception must not leave an OpenMP region
#pragma omp parallel for schedule(dynamic, 1) if (sel.kept() >= 65536)
  for (size_t t = 0; t < nt; ++t) {
    try {
      encode_section(plan, sel, q, t, implied, explicit_counts, vbits, sections[t],
                     section_stats[t]);
    } catch (...) {
#pragma omp critical(loco_encode_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  size_t total = out.size();
  for (const auto& sec : sections) total += sec.size();
  out.reserve(total);
  for (size_t t = 0; t < nt; ++t) {
    out.insert(out.end(), sections[t].begin(), sections[t].end());
    st.header_bytes += section_stats[t].header_bytes;
    st.table_bytes += section_stats[t].table_bytes;
    st.index_bytes += section_stats[t].index_bytes;
    st.value_bytes += section_stats[t].value_bytes;
  }
  seal_payload(plan, key, out.data(), out.size());
  st.bytes = out.size();
  if (stats) *stats = st;
}

std::vector<uint8_t> encode(const Plan& plan, const Selection& sel, const Quantized& q,
                            uint64_t key, EncodeStats* stats) {
  std::vector<uint8_t> out;
  encode_into(plan, sel, q, key, out, stats);
  return out;
}

// ------------------------------------------------------------------ decode

namespace {

// One pass over the payload. kApply = false validates only (no sink calls, random-k offsets
// not regenerated); kApply = true decodes a payload that already passed validation.
template <bool kApply, class Sink>
void parse(const Plan& plan, const uint8_t* p, size_t bytes, Sink&& sink,
           const DecodeOptions& opt) {
  const Settings& s = plan.settings;
  Where where;
  where.plan = &plan;
  auto need = [&](size_t pos, size_t n, const char* what) {
    if (n > bytes || pos > bytes - n)
      fail(where, std::string(what) + " needs " + std::to_string(n) + " bytes at byte " +
                      std::to_string(pos) + " but the payload has " + std::to_string(bytes) +
                      " bytes (truncated?)");
  };

  // Header.
  need(0, kWireHeaderBytes, "the header");
  if (std::memcmp(p, kWireMagic, 4) != 0)
    fail(where, "bad magic (expected \"LCSP\"): not a loco compressed payload");
  const uint16_t version = get_le<uint16_t>(p + 4);
  if (version != kWireVersion)
    fail(where, "unsupported version " + std::to_string(version) + " (this build reads " +
                    std::to_string(kWireVersion) + ")");
  const uint16_t hbytes = get_le<uint16_t>(p + 6);
  if (hbytes != kWireHeaderBytes)
    fail(where, "header size " + std::to_string(hbytes) + ", expected " +
                    std::to_string(kWireHeaderBytes));
  const uint8_t selector = p[8], quantizer = p[9];
  if (selector > 3) fail(where, "unknown selector code " + std::to_string(selector));
  if (quantizer > 4) fail(where, "unknown quantizer code " + std::to_string(quantizer));
  if (selector != uint8_t(s.selector) || quantizer != uint8_t(s.quantizer))
    fail(where, std::string("payload is ") + selector_name(Selector(selector)) + " / " +
                    quantizer_name(Quantizer(quantizer)) + " but this rank expects " +
                    selector_name(s.selector) + " / " + quantizer_name(s.quantizer));
  const uint16_t flags = get_le<uint16_t>(p + 10);
  const bool implied = s.selector == Selector::None || s.selector == Selector::RandomK;
  const bool explicit_counts = s.selector == Selector::GlobalTopK;
  const uint16_t want_flags =
      uint16_t((implied ? kFlagIndicesImplied : 0) | (explicit_counts ? kFlagCountsExplicit : 0));
  if (flags != want_flags)
    fail(where, "flags " + std::to_string(flags) + " do not match the selector (expected " +
                    std::to_string(want_flags) + ")");
  const uint32_t nt = get_le<uint32_t>(p + 12);
  if (nt != plan.tensors.size())
    fail(where, "tensor count " + std::to_string(nt) + ", this model has " +
                    std::to_string(plan.tensors.size()));
  const uint64_t total = get_le<uint64_t>(p + 16);
  if (total != bytes)
    fail(where, "header says " + std::to_string(total) + " bytes but " + std::to_string(bytes) +
                    " arrived (truncated or padded payload)");
  if (get_le<uint64_t>(p + 24) != plan.fingerprint)
    fail(where,
         "plan fingerprint differs: the sender chunks a different model or uses "
         "different chunk/topk settings");
  const uint64_t key = get_le<uint64_t>(p + 32);
  if (s.selector != Selector::RandomK && key != 0)
    fail(where, "random-k key set for a non-random selector");
  if (opt.verify_checksum) {
    const uint64_t seed = hash_bytes(p, 40);
    if (hash_bytes(p + kWireHeaderBytes, bytes - kWireHeaderBytes, seed) !=
        get_le<uint64_t>(p + 40))
      fail(where, "checksum mismatch: the payload was corrupted");
  }

  const int vbits = value_bits(s.quantizer);
  const int L = quant_levels(s.quantizer);
  std::vector<uint32_t> offs(plan.max_chunk);
  std::vector<uint8_t> mark(kApply && s.selector == Selector::RandomK ? plan.max_chunk : 0, 0);
  std::vector<float> table(size_t(std::max(L, 1)));
  size_t pos = kWireHeaderBytes;

  for (size_t t = 0; t < nt; ++t) {
    where.tensor = t;
    where.chunk = SIZE_MAX;
    const size_t c0 = plan.first_chunk[t], c1 = plan.first_chunk[t + 1];
    need(pos, kWireTensorHeaderBytes, "the tensor header");
    const uint32_t kept = get_le<uint32_t>(p + pos);
    const uint8_t coding = p[pos + 4], rparam = p[pos + 5], tkind = p[pos + 6],
                  reserved = p[pos + 7];
    const uint32_t index_bytes = get_le<uint32_t>(p + pos + 8);
    pos += kWireTensorHeaderBytes;
    const size_t numel = plan.tensors[t].numel();
    if (kept > numel)
      fail(where, "kept " + std::to_string(kept) + " > elements " + std::to_string(numel));
    if (reserved != 0) fail(where, "reserved byte is " + std::to_string(reserved) + ", not 0");
    if (coding > 4) fail(where, "unknown index coding " + std::to_string(coding));
    if (implied != (coding == uint8_t(WireIndexCoding::Implied)))
      fail(where, std::string("index coding ") + wire_index_coding_name(WireIndexCoding(coding)) +
                      " does not fit selector " + selector_name(s.selector));
    if (rparam > kMaxRiceParam || (coding != uint8_t(WireIndexCoding::RiceTensor) && rparam != 0))
      fail(where, "rice parameter " + std::to_string(rparam) + " is invalid for this coding");
    if (implied && index_bytes != 0)
      fail(where,
           "implied indices but an index stream of " + std::to_string(index_bytes) + " bytes");
    uint64_t implied_kept = 0;
    if (s.selector == Selector::None)
      implied_kept = numel;
    else if (s.selector != Selector::GlobalTopK)
      implied_kept = plan.k_start[c1] - plan.k_start[c0];
    if (s.selector != Selector::GlobalTopK && kept != implied_kept)
      fail(where,
           "kept " + std::to_string(kept) + ", the selector keeps " + std::to_string(implied_kept));

    // Table.
    TableKind want = TableKind::None;
    size_t tsz = 0;
    if (L > 0 && kept > 0) {
      if (tkind == uint8_t(TableKind::Means))
        want = TableKind::Means, tsz = size_t(L);
      else if (tkind == uint8_t(TableKind::Uniform))
        want = TableKind::Uniform, tsz = 2;
      else
        fail(where, "table kind " + std::to_string(tkind) + " is invalid for b-bit values");
    } else if (tkind != uint8_t(TableKind::None)) {
      fail(where, "table kind " + std::to_string(tkind) + " where no table belongs");
    }
    need(pos, tsz * 4, "the quantiser table");
    for (size_t i = 0; i < tsz; ++i) {
      const float v = get_le<float>(p + pos + 4 * i);
      if (!std::isfinite(v))
        fail(where, "quantiser table entry " + std::to_string(i) +
                        " is not finite (the sender's pseudo-gradient is not finite?)");
      table[i] = v;
    }
    if (want == TableKind::Uniform) {
      if (table[1] < 0.0f) fail(where, "uniform quantiser step is negative");
      uniform_table(table[0], table[1], L, table.data());
      for (int i = 0; i < L; ++i)
        if (!std::isfinite(table[i])) fail(where, "uniform quantiser level is not finite");
    }
    pos += tsz * 4;

    // Streams.
    need(pos, index_bytes, "the index stream");
    const size_t index_pos = pos;
    pos += index_bytes;
    const uint64_t value_bytes = (uint64_t(kept) * uint64_t(vbits) + 7) / 8;
    need(pos, size_t(value_bytes), "the value stream");
    BitReader ir(p + index_pos, index_bytes, index_pos, "index", where);
    BitReader vr(p + pos, size_t(value_bytes), pos, "value", where);
    auto next_value = [&]() -> float {
      const uint32_t code = uint32_t(vr.get(vbits));
      float v;
      if (L > 0) return table[code];
      if (vbits == 16)
        v = ops::bf16_bits_to_float(uint16_t(code));
      else
        v = std::bit_cast<float>(code);
      if (!std::isfinite(v))
        fail(where, "value at byte " + std::to_string(vr.byte_pos()) +
                        " is not finite (the sender's pseudo-gradient is not finite?)");
      return v;
    };

    if (implied) {
      for (size_t c = c0; c < c1; ++c) {
        const ChunkGeom& g = plan.chunks[c];
        const uint32_t C = g.size();
        const uint32_t n = s.selector == Selector::None ? C : g.k;
        if constexpr (kApply) {
          if (s.selector == Selector::RandomK)
            random_k_offsets(key, c, C, n, offs.data(), mark.data());
          else
            for (uint32_t j = 0; j < n; ++j) offs[j] = j;
        }
        for (uint32_t j = 0; j < n; ++j) {
          const float v = next_value();
          if constexpr (kApply) sink(g.flat(offs[j]), v);
        }
      }
    } else {
      // Counts (explicit, or k(C)), checked against `kept` as they come.
      std::vector<uint32_t> counts(c1 - c0);
      uint64_t sum = 0;
      for (size_t c = c0; c < c1; ++c) {
        where.chunk = c - c0;
        const uint32_t C = plan.chunks[c].size();
        const uint32_t n = explicit_counts ? uint32_t(ir.get(count_bits(C))) : plan.chunks[c].k;
        if (n > C) fail(where, "count " + std::to_string(n) + " > chunk size " + std::to_string(C));
        sum += n;
        if (sum > kept)
          fail(where, "chunk counts add up to more than kept = " + std::to_string(kept));
        counts[c - c0] = n;
      }
      where.chunk = SIZE_MAX;
      if (sum != kept)
        fail(where,
             "chunk counts add up to " + std::to_string(sum) + ", kept = " + std::to_string(kept));
      for (size_t c = c0; c < c1; ++c) {
        where.chunk = c - c0;
        const ChunkGeom& g = plan.chunks[c];
        const uint32_t C = g.size(), n = counts[c - c0];
        if (n == 0) continue;
        if (n == C) {
          for (uint32_t j = 0; j < C; ++j) offs[j] = j;
        } else {
          switch (WireIndexCoding(coding)) {
            case WireIndexCoding::Fixed: {
              const int w = offset_bits(C);
              for (uint32_t j = 0; j < n; ++j) {
                const uint32_t o = uint32_t(ir.get(w));
                if (o >= C || (j > 0 && o <= offs[j - 1]))
                  fail(where, "offset " + std::to_string(o) + " out of range or not ascending " +
                                  "(chunk size " + std::to_string(C) + ", byte " +
                                  std::to_string(ir.byte_pos()) + ")");
                offs[j] = o;
              }
              break;
            }
            case WireIndexCoding::RiceChunk:
            case WireIndexCoding::RiceTensor: {
              int rp = rparam;
              if (WireIndexCoding(coding) == WireIndexCoding::RiceChunk) {
                rp = int(ir.get(4));
                if (rp > offset_bits(C))
                  fail(where, "rice parameter " + std::to_string(rp) +
                                  " too large for chunk size " + std::to_string(C));
              }
              const uint64_t max_q = uint64_t(C - 1) >> rp;
              uint64_t next = 0;  // smallest admissible offset
              for (uint32_t j = 0; j < n; ++j) {
                const uint64_t qv = ir.unary(max_q);
                const uint64_t gap = (qv << rp) | ir.get(rp);
                const uint64_t o = next + gap;
                if (o >= C)
                  fail(where, "offset " + std::to_string(o) + " >= chunk size " +
                                  std::to_string(C) + " (byte " + std::to_string(ir.byte_pos()) +
                                  ")");
                offs[j] = uint32_t(o);
                next = o + 1;
              }
              break;
            }
            case WireIndexCoding::Bitmap: {
              uint32_t j = 0;
              for (uint32_t base = 0; base < C; base += 32) {
                const int nb = int(std::min<uint32_t>(32, C - base));
                uint32_t word = uint32_t(ir.get(nb));
                while (word) {
                  if (j == n)
                    fail(where, "bitmap has more than " + std::to_string(n) + " bits set");
                  offs[j++] = base + uint32_t(std::countr_zero(word));
                  word &= word - 1;
                }
              }
              if (j != n)
                fail(where, "bitmap has " + std::to_string(j) + " bits set, count is " +
                                std::to_string(n));
              break;
            }
            case WireIndexCoding::Implied:
              break;
          }
        }
        for (uint32_t j = 0; j < n; ++j) {
          const float v = next_value();
          if constexpr (kApply) sink(g.flat(offs[j]), v);
        }
      }
      where.chunk = SIZE_MAX;
    }
    ir.finish();
    vr.finish();
    pos += size_t(value_bytes);
  }
  where.tensor = SIZE_MAX;
  if (pos != bytes)
    fail(where, std::to_string(bytes - pos) + " unexpected bytes after the last tensor");
}

template <class Sink>
void decode_impl(const Plan& plan, const uint8_t* payload, size_t bytes, Sink&& sink,
                 const DecodeOptions& opt) {
  if (payload == nullptr && bytes > 0) throw Error("compressed payload: null data");
  parse<false>(
      plan, payload, bytes, [](size_t, float) {}, opt);
  // Validated: the second pass cannot fail (checksum already checked).
  DecodeOptions again = opt;
  again.verify_checksum = false;
  parse<true>(plan, payload, bytes, sink, again);
}

}  // namespace

void decode(const Plan& plan, const uint8_t* payload, size_t bytes,
            const std::function<void(size_t, float)>& sink, DecodeOptions opt) {
  decode_impl(
      plan, payload, bytes, [&](size_t i, float v) { sink(i, v); }, opt);
}

void decode_sparse(const Plan& plan, const uint8_t* payload, size_t bytes,
                   std::vector<uint32_t>& flat, std::vector<float>& values, DecodeOptions opt) {
  LOCO_CHECK(plan.total <= size_t(UINT32_MAX), "decode_sparse: flat indices are uint32");
  flat.clear();
  values.clear();
  const size_t most =
      plan.settings.selector == Selector::None ? plan.total : size_t(plan.k_start.back());
  flat.reserve(most);
  values.reserve(most);
  decode_impl(
      plan, payload, bytes,
      [&](size_t i, float v) {
        flat.push_back(uint32_t(i));
        values.push_back(v);
      },
      opt);
}

void decode_dense(const Plan& plan, const uint8_t* payload, size_t bytes, float* out,
                  DecodeOptions opt) {
  // Validate before touching `out`.
  parse<false>(
      plan, payload, bytes, [](size_t, float) {}, opt);
  std::fill(out, out + plan.total, 0.0f);
  DecodeOptions again = opt;
  again.verify_checksum = false;
  parse<true>(
      plan, payload, bytes, [out](size_t i, float v) { out[i] = v; }, again);
}

void decode_accumulate(const Plan& plan, const uint8_t* payload, size_t bytes, float* sum,
                       uint16_t* count, DecodeOptions opt) {
  if (count)
    decode_impl(
        plan, payload, bytes,
        [sum, count](size_t i, float v) {
          sum[i] += v;
          ++count[i];
        },
        opt);
  else
    decode_impl(
        plan, payload, bytes, [sum](size_t i, float v) { sum[i] += v; }, opt);
}

}  // namespace loco::compress
