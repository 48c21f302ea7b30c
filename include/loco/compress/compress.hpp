// Pseudo-gradient compression (docs/algorithms.md §4, §5): error feedback → selector → quantiser,
// shared by SparseLoCo and compressed MuLoCo/DiLoCo.
//
//   with EF:     t = β·e + Δ ;  Ĉ = Q(S(t)) ;  e ← t − D(Ĉ)
//   without EF:  Ĉ = Q(S(Δ)) and nothing is kept
//
// Everything here is a plain function over host float arrays (the CPU reference; a CUDA port
// replaces the loops one by one and must produce the same selections and the same packed
// bytes). The packed wire format is in loco/compress/wire.hpp.
//
// Chunks (the unit of selection and of index coding). Tensors are taken in layout order;
// each is cut into tiles and the tiles are numbered row-major over the tile grid:
//  - 2-D tensor (rows, cols): tiles of th × tw where th = the largest divisor of rows that is
//    <= `chunk` (64), tw likewise for cols; all tiles of a tensor have the same size.
//  - 1-D tensor (n): tiles of 1 × chunk, the last one shorter when chunk does not divide n.
// An element's in-chunk offset is r·w + c for its row r and column c inside its tile (w = the
// tile's width). A full chunk holds chunk² = 4096 elements; a chunk of C elements keeps
//   k(C) = clamp(round(topk · C / chunk²), 1, C)      (round half up)
// elements, so every chunk has the density topk / chunk² up to rounding, and at least one.
// Settings::rules = Templar replaces k(C), the 1-D tiling, the b-bit level rule and the
// aggregation with the SparseLoCo reference's (loco/compress/templar_rules.hpp).
//
// Selectors (what S keeps; offsets are always reported sorted ascending per chunk):
//  - none:          every element.
//  - chunked_topk:  per chunk, the k(C) elements of largest |x|; ties go to the lower offset.
//                   Ordering is on the IEEE bits of |x|, so a NaN counts as larger than ∞
//                   (any order would do; it only has to be total and fixed).
//  - global_topk:   the B largest |x| of the whole buffer, B = Σ_chunks k(C) (the same budget
//                   as chunked_topk); ties go to the lower flat index. Counts per chunk vary.
//  - random_k:      per chunk, k(C) offsets drawn uniformly without replacement (Floyd's
//                   algorithm) from Rng(chunk_seed(key, chunk)), key = random_key(seed, step).
//                   Every rank with the same seed draws the same offsets, so the wire carries
//                   only the key, never the indices.
//
// Quantisers (per tensor, over that tensor's kept values v₁..v_n):
//  - none (f32): D(v) = v.      bf16: D(v) = bf16(v) (round to nearest even), widened.
//  - 8bit/4bit/2bit, L = 2^bits levels ("statistical"): μ = mean(v), σ = std(v) (population,
//    both in double; every sum is taken in segments of 1024 kept values, each summed in
//    order, then the segment sums in order: loco/ops/compress_quantize.hpp, the one
//    definition the host, the CPU backend and the CUDA kernels share); step = 6σ/L (the
//    levels span μ ± 3σ); level q(v) = clamp(⌊(v−μ)/step + L/2⌋, 0, L−1) (σ = 0: q = L/2
//    for all). D(v) = table[q(v)] where the table, sent with
//    the payload, is either
//      means:   table[q] = fp32(mean of the v with level q)  (empty level: the bin centre)
//      uniform: two fp32 numbers (shift = fp32(μ), step = fp32(step)); table[q] =
//               fp32(shift + (q + 0.5 − L/2)·step) evaluated in double by uniform_table().
//    The encoder sends `means` when L <= 16 or n >= 16·L (the L·32 table bits then cost at
//    most 2 bits per kept element), else `uniform` (8-bit on small tensors).
//
// Error feedback, exactly: t = β·e + Δ is computed once (fp32, two roundings: β·e, then + Δ)
// and stored in e; then e[i] = t[i] − D[i] (one fp32 subtraction) at the kept elements and
// e[i] = t[i] elsewhere. Hence e_new + D == t holds
//  - bitwise at every element that was not kept (D = 0; t = −0 comes back as +0, == holds);
//  - bitwise at every kept element where t − D is exactly representable in fp32, which
//    includes: quantizer none (D = t, e_new = 0), bf16 (t − bf16(t) always is), and the
//    b-bit levels whenever D/2 <= t <= 2D (Sterbenz);
//  - otherwise (a b-bit level far from t: |t| and |D| more than a factor 2 apart or of
//    opposite sign), e_new is t − D correctly rounded, so (as real numbers)
//    |e_new + D − t| <= 2^-24·|e_new|: the accumulator loses at most half an ulp of the
//    residual, as every fp32 accumulation does. tests/test_compress.cpp checks all three.
#pragma once
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loco/config/config.hpp"
#include "loco/core/error.hpp"
#include "loco/ops/chunk_topk.hpp"
#include "loco/ops/compress_quantize.hpp"

namespace loco {
struct ParamLayout;
}

namespace loco::compress {

enum class Selector : uint8_t { None = 0, ChunkedTopK = 1, GlobalTopK = 2, RandomK = 3 };
enum class Quantizer : uint8_t { F32 = 0, BF16 = 1, Q8 = 2, Q4 = 3, Q2 = 4 };
// Auto picks, per tensor, whichever of the others is smallest for that payload.
enum class IndexCoding : uint8_t { Auto = 0, Fixed = 1, Rice = 2, Bitmap = 3 };
enum class Aggregation : uint8_t { MeanSelected = 0, MeanAll = 1 };
// Whose rules: loco's (this file) or the SparseLoCo reference's (templar_rules.hpp: absolute k
// per chunk, rounded levels with the sample σ, peers clipped to the median norm).
enum class Rules : uint8_t { Loco = 0, Templar = 1 };

const char* selector_name(Selector s);         // "none", "chunked_topk", ...
const char* quantizer_name(Quantizer q);       // "none", "bf16", "8bit", "4bit", "2bit"
const char* index_coding_name(IndexCoding c);  // "auto", "fixed", "rice", "bitmap"
const char* aggregation_name(Aggregation a);   // "mean_selected", "mean_all"
const char* rules_name(Rules r);               // "loco", "templar"
int value_bits(Quantizer q);                   // bits per value on the wire: 32, 16, 8, 4, 2
int quant_levels(Quantizer q);                 // 256, 16, 4 for b-bit; 0 otherwise

struct Settings {
  Selector selector = Selector::None;
  Quantizer quantizer = Quantizer::F32;
  IndexCoding index_coding = IndexCoding::Auto;
  Aggregation aggregation = Aggregation::MeanSelected;
  int chunk = 64;  // tile side
  int topk = 64;   // kept per full chunk (chunk² elements)
  bool error_feedback = false;
  float beta = 0.95f;
  uint64_t seed = 0;  // random_k
  Rules rules = Rules::Loco;
};
Settings settings_from_config(const CompressionConfig& c);  // names already validated

// One tensor of the flat buffer. rows = 1 for a 1-D tensor (matrix = false).
struct TensorShape {
  std::string name;
  size_t offset = 0;  // first element in the flat buffer
  int64_t rows = 1, cols = 1;
  bool matrix = false;
  size_t numel() const { return size_t(rows) * size_t(cols); }
};
std::vector<TensorShape> shapes_from_layout(const ParamLayout& layout);

// One chunk: a tile of h × w elements whose (0,0) element is at flat index `base`, rows
// `stride` apart. Element at offset p is at base + (p / w)·stride + p % w.
struct ChunkGeom {
  size_t base = 0;
  size_t stride = 0;
  uint32_t h = 0, w = 0;
  uint32_t k = 0;  // k(C): kept by chunked_topk / random_k
  uint32_t size() const { return h * w; }
  size_t flat(uint32_t p) const { return base + size_t(p / w) * stride + p % w; }
  // The same chunk as the backends read it (kept elements written from `kept_start` on).
  ops::ChunkRow row(uint64_t kept_start = 0) const {
    return ops::ChunkRow{base, uint32_t(stride), h, w, k, kept_start};
  }
};

// The chunking of a whole buffer for given settings: identical on every rank.
struct Plan {
  Settings settings;
  std::vector<TensorShape> tensors;
  std::vector<size_t> first_chunk;  // per tensor, size tensors + 1
  std::vector<ChunkGeom> chunks;
  std::vector<uint64_t> k_start;  // prefix sums of chunks[i].k, size chunks + 1
  size_t total = 0;               // elements (tensors must tile [0, total) exactly)
  uint32_t max_chunk = 0;         // largest chunk size
  uint64_t fingerprint = 0;       // hash of chunking + settings that shape the payload
};
Plan make_plan(std::vector<TensorShape> tensors, const Settings& settings);

int64_t largest_divisor_at_most(int64_t n, int64_t cap);
uint32_t chunk_k(uint32_t chunk_size, int topk, int chunk_side);  // k(C) above

// ------------------------------------------------------------------ selection
struct Selection {
  std::vector<uint64_t> start;   // per chunk, size chunks + 1: kept elements before it
  std::vector<uint32_t> offset;  // in-chunk offsets, ascending within each chunk
  size_t kept() const { return offset.size(); }
};
uint64_t random_key(uint64_t seed, uint64_t step);
uint64_t chunk_seed(uint64_t key, size_t chunk_index);
// Random-k offsets of one chunk (sorted): what select() and the decoder both use.
// `mark` is scratch of >= C zero bytes, left zeroed.
void random_k_offsets(uint64_t key, size_t chunk_index, uint32_t C, uint32_t k, uint32_t* out,
                      uint8_t* mark);
// Selects from x[0, plan.total). `key` is used by random_k only.
void select(const Plan& plan, const float* x, uint64_t key, Selection& out);

// ------------------------------------------------------------------ quantisation
enum class TableKind : uint8_t { None = 0, Means = 1, Uniform = 2 };

struct Quantized {
  std::vector<uint32_t> code;         // per kept element: level, bf16 bits or fp32 bits
  std::vector<float> value;           // per kept element: D, exactly what every receiver decodes
  std::vector<TableKind> table_kind;  // per tensor
  std::vector<float> table;           // per tensor: L level means, or (shift, step)
  std::vector<size_t> table_start;    // per tensor, size tensors + 1
};
void quantize(const Plan& plan, const float* x, const Selection& sel, Quantized& out);
// The same on values gathered already: on entry out.value[i] = x at the i-th kept element
// (what a backend's gather() returns), so the dense buffer need not be on the host.
void quantize_gathered(const Plan& plan, const Selection& sel, Quantized& out);
// The dequantisation table of a uniform tensor: L entries from (shift, step).
void uniform_table(float shift, float step, int L, float* table);
// Level of v for mean mu, level width step (double), L levels (the rule above).
int quant_level(double v, double mu, double step, int L);

// The quantiser's view of a selection, as Backend::quantize_values reads it
// (loco/ops/compress_quantize.hpp): per tensor its kept range, segments, table slot and kind.
// `chunk_start`: the kept elements before each chunk (Selection::start; plan.k_start for the
// selectors whose counts are fixed). quantize_gathered builds the same layout.
struct QuantLayout {
  std::vector<ops::QuantTensor> tensors;
  std::vector<ops::QuantSegment> segments;
  std::vector<TableKind> table_kind;  // per tensor
  std::vector<size_t> table_start;    // per tensor, size tensors + 1 (f32 entries)
};
QuantLayout quant_layout(const Plan& plan, const std::vector<uint64_t>& chunk_start);

// ------------------------------------------------------------------ error feedback
// e[i] = β·e[i] + Δ[i]  (t, stored in e)
void ef_accumulate(float* e, const float* delta, float beta, size_t n);
// e[flat(i)] = e[flat(i)] − value[i] at the kept elements
void ef_subtract(const Plan& plan, const Selection& sel, const float* value, float* e);

// ------------------------------------------------------------------ the send side
struct EncodeStats {
  uint64_t elements = 0, kept = 0;
  uint64_t bytes = 0;         // the whole payload
  uint64_t header_bytes = 0;  // payload header + per-tensor headers
  uint64_t table_bytes = 0;   // quantiser tables
  uint64_t index_bytes = 0;   // index streams (counts, offsets, padding to bytes)
  uint64_t value_bytes = 0;   // value streams (padding to bytes included)
};

// Owns the error-feedback accumulator; one compress() per outer sync.
class Compressor {
 public:
  explicit Compressor(Plan plan);
  const Plan& plan() const { return plan_; }
  // EF → select → quantise → EF update → pack. `step` (the sync number, same on every rank)
  // seeds random_k. The returned bytes stay valid until the next call.
  const std::vector<uint8_t>& compress(const float* delta, uint64_t step);
  const EncodeStats& stats() const { return stats_; }
  const std::vector<float>& error() const { return e_; }  // empty without EF
  // Restores the accumulator (a checkpoint resume); the size must be plan().total.
  void set_error(const std::vector<float>& e);
  const Selection& selection() const { return sel_; }
  const Quantized& quantized() const { return q_; }

 private:
  Plan plan_;
  std::vector<float> e_;
  Selection sel_;
  Quantized q_;
  std::vector<uint8_t> payload_;
  EncodeStats stats_;
};

// ------------------------------------------------------------------ the receive side
// Sums decoded payloads in the order they are added, then divides:
//   mean_selected: by the number of payloads that kept the element (0 when none did);
//   mean_all:      by K, the number of workers.
// Under rules = templar every payload's values are first clipped per tensor to the median
// norm of all payloads added since reset() (clip_to_median_norm), so the sums are formed in
// finish().
// Every rank adds the same payloads in rank order, so every rank gets the same bits.
class Aggregator {
 public:
  Aggregator(const Plan& plan, Aggregation how);
  void reset();
  // Decodes and accumulates one payload; loco::Error when it is malformed (see wire.hpp).
  void add(const uint8_t* payload, size_t bytes);
  // out[i] = the aggregate; `workers` = K (mean_all).
  void finish(float* out, int workers) const;

 private:
  const Plan& plan_;
  Aggregation how_;
  std::vector<float> sum_;
  std::vector<uint16_t> count_;
  int added_ = 0;
  // rules = templar: the decoded payloads, kept until finish() has seen them all.
  std::vector<std::vector<uint32_t>> pending_flat_;
  std::vector<std::vector<float>> pending_values_;
};

// Information limit of a kept index: log2(binom(C, k)) / k bits.
double index_entropy_bits(uint32_t C, uint32_t k);

}  // namespace loco::compress
