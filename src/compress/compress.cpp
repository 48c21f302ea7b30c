// Chunking, selectors, quantisers, error feedback and the send/receive drivers
// (loco/compress/compress.hpp for the exact rules).
#include "loco/compress/compress.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "loco/compress/templar_rules.hpp"
#include "loco/compress/wire.hpp"
#include "loco/core/error.hpp"
#include "loco/core/hash.hpp"
#include "loco/core/rng.hpp"
#include "loco/model/param_layout.hpp"
#include "loco/ops/bf16.hpp"
#include "loco/ops/chunk_topk.hpp"
#include "loco/ops/compress_quantize.hpp"

namespace loco::compress {

// ------------------------------------------------------------------ names

const char* selector_name(Selector s) {
  switch (s) {
    case Selector::None:
      return "none";
    case Selector::ChunkedTopK:
      return "chunked_topk";
    case Selector::GlobalTopK:
      return "global_topk";
    case Selector::RandomK:
      return "random_k";
  }
  return "unknown";
}

const char* quantizer_name(Quantizer q) {
  switch (q) {
    case Quantizer::F32:
      return "none";
    case Quantizer::BF16:
      return "bf16";
    case Quantizer::Q8:
      return "8bit";
    case Quantizer::Q4:
      return "4bit";
    case Quantizer::Q2:
      return "2bit";
  }
  return "unknown";
}

const char* index_coding_name(IndexCoding c) {
  switch (c) {
    case IndexCoding::Auto:
      return "auto";
    case IndexCoding::Fixed:
      return "fixed";
    case IndexCoding::Rice:
      return "rice";
    case IndexCoding::Bitmap:
      return "bitmap";
  }
  return "unknown";
}

const char* aggregation_name(Aggregation a) {
  return a == Aggregation::MeanAll ? "mean_all" : "mean_selected";
}

const char* rules_name(Rules r) { return r == Rules::Templar ? "templar" : "loco"; }

int value_bits(Quantizer q) {
  switch (q) {
    case Quantizer::F32:
      return 32;
    case Quantizer::BF16:
      return 16;
    case Quantizer::Q8:
      return 8;
    case Quantizer::Q4:
      return 4;
    case Quantizer::Q2:
      return 2;
  }
  return 32;
}

int quant_levels(Quantizer q) {
  switch (q) {
    case Quantizer::Q8:
      return 256;
    case Quantizer::Q4:
      return 16;
    case Quantizer::Q2:
      return 4;
    default:
      return 0;
  }
}

Settings settings_from_config(const CompressionConfig& c) {
  Settings s;
  if (c.selector == "none")
    s.selector = Selector::None;
  else if (c.selector == "chunked_topk")
    s.selector = Selector::ChunkedTopK;
  else if (c.selector == "global_topk")
    s.selector = Selector::GlobalTopK;
  else if (c.selector == "random_k")
    s.selector = Selector::RandomK;
  else
    throw Error("distributed.compression.selector = \"" + c.selector + "\": unknown selector");
  if (c.quantizer == "none")
    s.quantizer = Quantizer::F32;
  else if (c.quantizer == "bf16")
    s.quantizer = Quantizer::BF16;
  else if (c.quantizer == "8bit")
    s.quantizer = Quantizer::Q8;
  else if (c.quantizer == "4bit")
    s.quantizer = Quantizer::Q4;
  else if (c.quantizer == "2bit")
    s.quantizer = Quantizer::Q2;
  else
    throw Error("distributed.compression.quantizer = \"" + c.quantizer + "\": unknown quantizer");
  if (c.index_coding == "auto")
    s.index_coding = IndexCoding::Auto;
  else if (c.index_coding == "fixed")
    s.index_coding = IndexCoding::Fixed;
  else if (c.index_coding == "rice")
    s.index_coding = IndexCoding::Rice;
  else if (c.index_coding == "bitmap")
    s.index_coding = IndexCoding::Bitmap;
  else
    throw Error("distributed.compression.index_coding = \"" + c.index_coding +
                "\": unknown coding");
  if (c.aggregation == "mean_selected")
    s.aggregation = Aggregation::MeanSelected;
  else if (c.aggregation == "mean_all")
    s.aggregation = Aggregation::MeanAll;
  else
    throw Error("distributed.compression.aggregation = \"" + c.aggregation + "\": unknown");
  if (c.rules == "loco")
    s.rules = Rules::Loco;
  else if (c.rules == "templar")
    s.rules = Rules::Templar;
  else
    throw Error("distributed.compression.rules = \"" + c.rules + "\": unknown (loco, templar)");
  s.chunk = c.chunk;
  s.topk = c.topk;
  s.error_feedback = c.error_feedback;
  s.beta = static_cast<float>(c.beta);
  s.seed = c.seed;
  return s;
}

std::vector<TensorShape> shapes_from_layout(const ParamLayout& layout) {
  std::vector<TensorShape> out;
  out.reserve(layout.views.size());
  for (const auto& v : layout.views) {
    TensorShape t;
    t.name = v.name;
    t.offset = v.offset;
    t.matrix = v.shape.size() == 2;
    t.rows = t.matrix ? v.shape[0] : 1;
    t.cols = t.matrix ? v.shape[1] : static_cast<int64_t>(v.numel);
    out.push_back(std::move(t));
  }
  return out;
}

// ------------------------------------------------------------------ plan

int64_t largest_divisor_at_most(int64_t n, int64_t cap) {
  LOCO_CHECK(n >= 1 && cap >= 1, "largest_divisor_at_most needs n, cap >= 1");
  for (int64_t d = std::min(n, cap); d > 1; --d)
    if (n % d == 0) return d;
  return 1;
}

uint32_t chunk_k(uint32_t C, int topk, int chunk_side) {
  const uint64_t full = uint64_t(chunk_side) * uint64_t(chunk_side);
  uint64_t k = (uint64_t(topk) * C * 2 + full) / (2 * full);  // round half up
  k = std::clamp<uint64_t>(k, 1, C);
  return static_cast<uint32_t>(k);
}

Plan make_plan(std::vector<TensorShape> tensors, const Settings& s) {
  if (s.chunk < 1 || s.chunk > 256) throw Error("compression: chunk side must be in [1, 256]");
  if (s.topk < 1 || s.topk > s.chunk * s.chunk)
    throw Error("compression: topk = " + std::to_string(s.topk) +
                " must be in [1, chunk² = " + std::to_string(s.chunk * s.chunk) + "]");
  Plan p;
  p.settings = s;
  p.tensors = std::move(tensors);
  uint64_t h = hash_string("loco-compress-plan-v1");
  auto mixin = [&h](uint64_t v) { h = hash_bytes(&v, sizeof v, h); };
  mixin(uint64_t(s.selector));
  mixin(uint64_t(s.quantizer));
  mixin(uint64_t(s.chunk));
  mixin(uint64_t(s.topk));
  if (s.rules != Rules::Loco) mixin(uint64_t(s.rules));  // loco's fingerprints stay as they were
  const bool templar = s.rules == Rules::Templar;
  p.first_chunk.push_back(0);
  p.k_start.push_back(0);
  for (const TensorShape& t : p.tensors) {
    if (t.rows < 1 || t.cols < 1) throw Error("compression: tensor " + t.name + " is empty");
    if (t.offset != p.total)
      throw Error("compression: tensor " + t.name + " starts at " + std::to_string(t.offset) +
                  ", expected " + std::to_string(p.total) + " (tensors must tile the buffer)");
    mixin(t.offset);
    mixin(uint64_t(t.rows));
    mixin(uint64_t(t.cols));
    mixin(uint64_t(t.matrix));
    int64_t th, tw;
    if (t.matrix) {
      th = largest_divisor_at_most(t.rows, s.chunk);
      tw = largest_divisor_at_most(t.cols, s.chunk);
    } else {
      LOCO_CHECK(t.rows == 1, "a 1-D tensor has one row");
      th = 1;
      tw = templar ? largest_divisor_at_most(t.cols, s.chunk) : s.chunk;
    }
    for (int64_t r0 = 0; r0 < t.rows; r0 += th) {
      for (int64_t c0 = 0; c0 < t.cols; c0 += tw) {
        ChunkGeom g;
        g.base = t.offset + size_t(r0) * size_t(t.cols) + size_t(c0);
        g.stride = size_t(t.cols);
        g.h = uint32_t(std::min(th, t.rows - r0));
        g.w = uint32_t(std::min(tw, t.cols - c0));
        g.k = templar ? templar_chunk_k(g.size(), s.topk) : chunk_k(g.size(), s.topk, s.chunk);
        p.max_chunk = std::max(p.max_chunk, g.size());
        p.chunks.push_back(g);
        p.k_start.push_back(p.k_start.back() + g.k);
      }
    }
    p.first_chunk.push_back(p.chunks.size());
    p.total += t.numel();
  }
  mixin(p.total);
  p.fingerprint = h;
  return p;
}

// ------------------------------------------------------------------ selection

uint64_t random_key(uint64_t seed, uint64_t step) {
  uint64_t x = seed ^ 0x72616e646f6d6bULL;  // "randomk"
  const uint64_t a = Rng::splitmix64(x);
  x = a ^ (step * 0x9e3779b97f4a7c15ULL);
  return Rng::splitmix64(x);
}

uint64_t chunk_seed(uint64_t key, size_t chunk_index) {
  uint64_t x = key + (uint64_t(chunk_index) + 1) * 0xd1b54a32d192ed03ULL;
  return Rng::splitmix64(x);
}

void random_k_offsets(uint64_t key, size_t chunk_index, uint32_t C, uint32_t k, uint32_t* out,
                      uint8_t* mark) {
  if (k >= C) {
    for (uint32_t i = 0; i < C; ++i) out[i] = i;
    return;
  }
  Rng rng(chunk_seed(key, chunk_index));
  // Floyd: for j = C−k .. C−1 pick t in [0, j]; take j instead when t is taken already.
  uint32_t n = 0;
  for (uint32_t j = C - k; j < C; ++j) {
    uint32_t t = static_cast<uint32_t>(rng.below(uint64_t(j) + 1));
    if (mark[t]) t = j;
    mark[t] = 1;
    out[n++] = t;
  }
  for (uint32_t i = 0; i < n; ++i) mark[out[i]] = 0;
  std::sort(out, out + n);
}

namespace {

// Key ordering |x| descending, then offset ascending: larger key = kept first.
inline uint64_t magnitude_key(float v, uint32_t low) {
  const uint32_t a = std::bit_cast<uint32_t>(v) & 0x7fffffffu;
  return (uint64_t(a) << 32) | uint64_t(0xffffffffu - low);
}

void select_all(const Plan& plan, Selection& out) {
  const size_t nc = plan.chunks.size();
  out.start.resize(nc + 1);
  out.start[0] = 0;
  for (size_t c = 0; c < nc; ++c) out.start[c + 1] = out.start[c] + plan.chunks[c].size();
  out.offset.resize(out.start[nc]);
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < nc; ++c) {
    uint32_t* o = out.offset.data() + out.start[c];
    for (uint32_t i = 0, C = plan.chunks[c].size(); i < C; ++i) o[i] = i;
  }
}

void select_chunked_topk(const Plan& plan, const float* x, Selection& out) {
  const size_t nc = plan.chunks.size();
  out.start.assign(plan.k_start.begin(), plan.k_start.end());
  out.offset.resize(plan.k_start[nc]);
#pragma omp parallel
  {
    std::vector<uint32_t> mag(plan.max_chunk), scratch(plan.max_chunk);
#pragma omp for schedule(static)
    for (size_t c = 0; c < nc; ++c) {
      ops::chunk_topk(plan.chunks[c].row(), x, out.offset.data() + out.start[c], mag.data(),
                      scratch.data());
    }
  }
}

void select_global_topk(const Plan& plan, const float* x, Selection& out) {
  const size_t nc = plan.chunks.size(), N = plan.total;
  if (N > size_t(UINT32_MAX))
    throw Error("compression: global_topk supports buffers of up to 2^32 - 1 elements");
  const uint64_t budget = plan.k_start[nc];
  // Threshold: the budget-th largest key over the whole buffer (keys are unique).
  std::vector<uint64_t> keys(N);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < N; ++i) keys[i] = magnitude_key(x[i], uint32_t(i));
  uint64_t threshold = 0;
  if (budget > 0) {
    std::nth_element(keys.begin(), keys.begin() + (budget - 1), keys.end(),
                     std::greater<uint64_t>());
    threshold = keys[budget - 1];
  }
  keys.clear();
  keys.shrink_to_fit();
  auto kept = [&](size_t flat) { return magnitude_key(x[flat], uint32_t(flat)) >= threshold; };
  out.start.assign(nc + 1, 0);
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < nc; ++c) {
    const ChunkGeom& g = plan.chunks[c];
    uint64_t n = 0;
    for (uint32_t p = 0, C = g.size(); p < C; ++p) n += kept(g.flat(p));
    out.start[c + 1] = n;
  }
  for (size_t c = 0; c < nc; ++c) out.start[c + 1] += out.start[c];
  LOCO_CHECK(out.start[nc] == budget, "global top-k kept the budget");
  out.offset.resize(budget);
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < nc; ++c) {
    const ChunkGeom& g = plan.chunks[c];
    uint32_t* o = out.offset.data() + out.start[c];
    for (uint32_t p = 0, C = g.size(); p < C; ++p)
      if (kept(g.flat(p))) *o++ = p;
  }
}

void select_random_k(const Plan& plan, uint64_t key, Selection& out) {
  const size_t nc = plan.chunks.size();
  out.start.assign(plan.k_start.begin(), plan.k_start.end());
  out.offset.resize(plan.k_start[nc]);
#pragma omp parallel
  {
    std::vector<uint8_t> mark(plan.max_chunk, 0);
#pragma omp for schedule(static)
    for (size_t c = 0; c < nc; ++c)
      random_k_offsets(key, c, plan.chunks[c].size(), plan.chunks[c].k,
                       out.offset.data() + out.start[c], mark.data());
  }
}

}  // namespace

void select(const Plan& plan, const float* x, uint64_t key, Selection& out) {
  switch (plan.settings.selector) {
    case Selector::None:
      return select_all(plan, out);
    case Selector::ChunkedTopK:
      return select_chunked_topk(plan, x, out);
    case Selector::GlobalTopK:
      return select_global_topk(plan, x, out);
    case Selector::RandomK:
      return select_random_k(plan, key, out);
  }
}

// ------------------------------------------------------------------ quantisation

int quant_level(double v, double mu, double step, int L) {
  return ops::quant_level(v, mu, step, L);
}

void uniform_table(float shift, float step, int L, float* table) {
  for (int q = 0; q < L; ++q)
    table[q] = static_cast<float>(ops::quant_bin_centre(double(shift), double(step), q, L));
}

QuantLayout quant_layout(const Plan& plan, const std::vector<uint64_t>& chunk_start) {
  LOCO_CHECK(chunk_start.size() == plan.chunks.size() + 1, "quant_layout: one start per chunk");
  const int L = quant_levels(plan.settings.quantizer);
  const size_t nt = plan.tensors.size();
  QuantLayout out;
  out.tensors.resize(nt);
  out.table_kind.assign(nt, TableKind::None);
  out.table_start.assign(nt + 1, 0);
  for (size_t t = 0; t < nt; ++t) {
    const uint64_t k0 = chunk_start[plan.first_chunk[t]];
    const uint64_t n = chunk_start[plan.first_chunk[t + 1]] - k0;
    LOCO_CHECK(chunk_start.back() <= UINT32_MAX, "fewer than 2^32 kept elements");
    ops::QuantTensor& q = out.tensors[t];
    q.kept_begin = uint32_t(k0);
    q.kept = uint32_t(n);
    q.segment_begin = uint32_t(out.segments.size());
    for (uint64_t s = 0; s < n; s += ops::kQuantSegment)
      out.segments.push_back(ops::QuantSegment{
          uint32_t(k0 + s), uint32_t(std::min<uint64_t>(ops::kQuantSegment, n - s)), uint32_t(t)});
    q.segment_end = uint32_t(out.segments.size());
    q.table_begin = uint32_t(out.table_start[t]);
    size_t entries = 0;
    if (L > 0 && n > 0) {
      // rules = templar: always L level values (docs/algorithms.md, the reference's rules).
      const bool means =
          plan.settings.rules == Rules::Templar || ops::quant_uses_means(size_t(n), L);
      out.table_kind[t] = means ? TableKind::Means : TableKind::Uniform;
      entries = means ? size_t(L) : 2;
    }
    q.table_kind = uint32_t(out.table_kind[t]);
    out.table_start[t + 1] = out.table_start[t] + entries;
  }
  return out;
}

void quantize(const Plan& plan, const float* x, const Selection& sel, Quantized& out) {
  out.value.resize(sel.kept());
  const size_t nc = plan.chunks.size();
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < nc; ++c) {
    const ChunkGeom& g = plan.chunks[c];
    for (uint64_t i = sel.start[c]; i < sel.start[c + 1]; ++i)
      out.value[i] = x[g.flat(sel.offset[i])];
  }
  quantize_gathered(plan, sel, out);
}

void quantize_gathered(const Plan& plan, const Selection& sel, Quantized& out) {
  LOCO_CHECK(out.value.size() == sel.kept(), "quantize_gathered: one value per kept element");
  const QuantLayout layout = quant_layout(plan, sel.start);
  out.code.resize(sel.kept());
  out.table_kind = layout.table_kind;
  out.table_start = layout.table_start;
  out.table.assign(layout.table_start.back(), 0.0f);
  if (plan.settings.rules == Rules::Templar && quant_levels(plan.settings.quantizer) > 0) {
    templar_quantize_gathered(layout, quant_levels(plan.settings.quantizer), out.value.data(),
                              out.code.data(), out.table.data());
    return;
  }
  // The same function the CPU backend runs for Backend::quantize_values (and the CUDA
  // kernels follow): one definition of every sum and rounding.
  ops::quantize_values(out.code.data(), out.value.data(), out.table.data(), sel.kept(),
                       layout.tensors.data(), layout.tensors.size(),
                       value_bits(plan.settings.quantizer));
}

// ------------------------------------------------------------------ error feedback

void ef_accumulate(float* e, const float* delta, float beta, size_t n) {
  ops::ef_accumulate(e, delta, beta, n);  // two roundings, never fused: t is what is stored
}

void ef_subtract(const Plan& plan, const Selection& sel, const float* value, float* e) {
  const size_t nc = plan.chunks.size();
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < nc; ++c) {
    const ChunkGeom& g = plan.chunks[c];
    for (uint64_t i = sel.start[c]; i < sel.start[c + 1]; ++i) {
      float& slot = e[g.flat(sel.offset[i])];
      slot = slot - value[i];
    }
  }
}

// ------------------------------------------------------------------ drivers

Compressor::Compressor(Plan plan) : plan_(std::move(plan)) {
  if (plan_.settings.error_feedback) e_.assign(plan_.total, 0.0f);
}

void Compressor::set_error(const std::vector<float>& e) {
  if (!plan_.settings.error_feedback)
    throw Error("compression: no error-feedback accumulator to restore (error_feedback is off)");
  if (e.size() != plan_.total)
    throw Error("compression: error-feedback state has " + std::to_string(e.size()) +
                " elements, expected " + std::to_string(plan_.total));
  e_ = e;
}

const std::vector<uint8_t>& Compressor::compress(const float* delta, uint64_t step) {
  const float* x = delta;
  if (plan_.settings.error_feedback) {
    ef_accumulate(e_.data(), delta, plan_.settings.beta, plan_.total);
    x = e_.data();
  }
  const uint64_t key =
      plan_.settings.selector == Selector::RandomK ? random_key(plan_.settings.seed, step) : 0;
  select(plan_, x, key, sel_);
  quantize(plan_, x, sel_, q_);
  if (plan_.settings.error_feedback) ef_subtract(plan_, sel_, q_.value.data(), e_.data());
  encode_into(plan_, sel_, q_, key, payload_, &stats_);
  return payload_;
}

Aggregator::Aggregator(const Plan& plan, Aggregation how) : plan_(plan), how_(how) { reset(); }

void Aggregator::reset() {
  sum_.assign(plan_.total, 0.0f);
  if (how_ == Aggregation::MeanSelected) count_.assign(plan_.total, 0);
  added_ = 0;
  pending_flat_.clear();
  pending_values_.clear();
}

void Aggregator::add(const uint8_t* payload, size_t bytes) {
  if (added_ >= int(UINT16_MAX)) throw Error("compression: too many payloads to aggregate");
  if (plan_.settings.rules == Rules::Templar) {
    pending_flat_.emplace_back();
    pending_values_.emplace_back();
    try {
      decode_sparse(plan_, payload, bytes, pending_flat_.back(), pending_values_.back());
    } catch (...) {
      pending_flat_.pop_back();
      pending_values_.pop_back();
      throw;
    }
  } else {
    decode_accumulate(plan_, payload, bytes, sum_.data(),
                      how_ == Aggregation::MeanSelected ? count_.data() : nullptr);
  }
  ++added_;
}

void Aggregator::finish(float* out, int workers) const {
  const size_t n = plan_.total;
  std::vector<float> clipped_sum;
  std::vector<uint16_t> clipped_count;
  const float* sum = sum_.data();
  const uint16_t* count = count_.data();
  if (!pending_values_.empty()) {  // rules = templar: clip, then sum payload by payload
    std::vector<std::vector<float>> values = pending_values_;
    clip_to_median_norm(plan_, pending_flat_, values, values.size());
    clipped_sum.assign(n, 0.0f);
    clipped_count.assign(n, 0);
    for (size_t r = 0; r < values.size(); ++r) {
      for (size_t i = 0; i < values[r].size(); ++i) {
        clipped_sum[pending_flat_[r][i]] += values[r][i];
        ++clipped_count[pending_flat_[r][i]];
      }
    }
    sum = clipped_sum.data();
    count = clipped_count.data();
  }
  if (how_ == Aggregation::MeanSelected) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) out[i] = count[i] ? sum[i] / float(count[i]) : 0.0f;
  } else {
    LOCO_CHECK(workers >= 1, "mean_all needs the number of workers");
    const float k = float(workers);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) out[i] = sum[i] / k;
  }
}

double index_entropy_bits(uint32_t C, uint32_t k) {
  if (k == 0 || k >= C) return 0.0;
  const double lb =
      (std::lgamma(C + 1.0) - std::lgamma(k + 1.0) - std::lgamma(C - k + 1.0)) / std::log(2.0);
  return lb / k;
}

}  // namespace loco::compress
