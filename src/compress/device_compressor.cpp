// The compression pipeline on backend memory (loco/compress/device_compressor.hpp).
#include "loco/compress/device_compressor.hpp"

#include <chrono>
#include <cmath>
#include <cstring>
#include <string>

#include "loco/compress/templar_rules.hpp"
#include "loco/compress/wire.hpp"
#include "loco/core/error.hpp"
#include "loco/ops/chunk_topk.hpp"

namespace loco::compress {

namespace {

void check_addressable(const Plan& plan) {
  if (plan.total > size_t(UINT32_MAX))
    throw Error(
        "compression: the device pipeline addresses buffers of up to 2^32 - 1 "
        "elements; this one has " +
        std::to_string(plan.total));
}

// The largest number of elements any selector keeps (the size of the kept arrays).
size_t max_kept(const Plan& plan) {
  return plan.settings.selector == Selector::None ? plan.total : size_t(plan.k_start.back());
}

}  // namespace

// ------------------------------------------------------------------ DeviceCompressor

namespace {

// The kept elements before each chunk when the counts do not depend on the data: every
// element (none), or k(C) per chunk (chunked_topk, random_k).
std::vector<uint64_t> fixed_chunk_start(const Plan& plan) {
  if (plan.settings.selector != Selector::None) return plan.k_start;
  std::vector<uint64_t> start(plan.chunks.size() + 1, 0);
  for (size_t c = 0; c < plan.chunks.size(); ++c) start[c + 1] = start[c] + plan.chunks[c].size();
  return start;
}

// Rows of a table as the i32 words a backend reads.
template <class Row, class Pack>
std::vector<int32_t> table_words(const std::vector<Row>& rows, int ints, Pack pack) {
  std::vector<int32_t> words(rows.size() * size_t(ints));
  for (size_t i = 0; i < rows.size(); ++i) pack(rows[i], words.data() + i * size_t(ints));
  return words;
}

}  // namespace

DeviceCompressor::DeviceCompressor(Plan plan, Backend& backend)
    : plan_(std::move(plan)), backend_(backend) {
  check_addressable(plan_);
  if (plan_.settings.error_feedback) error_ = OwnedBuf(backend_, plan_.total, DType::F32);
  const size_t kept = max_kept(plan_);
  offsets_ = OwnedBuf(backend_, kept, DType::I32);
  flat_ = OwnedBuf(backend_, kept, DType::I32);
  values_ = OwnedBuf(backend_, kept, DType::F32);
  codes_ = OwnedBuf(backend_, kept, DType::I32);
  layout_dev_ = OwnedBuf(backend_, plan_.tensors.size() + 2, DType::I32);
  const Selector selector = plan_.settings.selector;
  if (selector == Selector::ChunkedTopK) {
    std::vector<int32_t> table(plan_.chunks.size() * ops::kChunkRowInts);
    for (size_t c = 0; c < plan_.chunks.size(); ++c) {
      ops::pack_chunk_row(plan_.chunks[c].row(plan_.k_start[c]),
                          table.data() + c * ops::kChunkRowInts);
    }
    chunk_table_ = OwnedBuf(backend_, table.size(), DType::I32);
    backend_.upload(chunk_table_, table.data());
  }
  if (selector != Selector::GlobalTopK) set_layouts(fixed_chunk_start(plan_));
  if (selector == Selector::None) select_on_host(nullptr, 0);  // every element, once
}

DeviceCompressor::~DeviceCompressor() = default;

Buf DeviceCompressor::grown(OwnedBuf& buf, size_t numel, DType dtype) {
  if (buf->numel < numel || buf->dtype != dtype) {
    buf.reset();  // the old one goes before the larger one is allocated
    buf = OwnedBuf(backend_, numel, dtype);
  }
  return numel == 0 ? Buf{buf->data, dtype, 0} : buf.slice(0, numel);
}

void DeviceCompressor::set_layouts(const std::vector<uint64_t>& chunk_start) {
  quant_ = quant_layout(plan_, chunk_start);
  pack_ = pack_layout(plan_, chunk_start, quant_);
  kept_ = size_t(chunk_start.back());
  // The backends count rows by numel: each table is used as a slice of exactly its rows.
  auto upload = [&](OwnedBuf& dst, const std::vector<int32_t>& words) {
    const Buf b = grown(dst, words.size(), DType::I32);
    if (!words.empty()) backend_.upload(b, words.data());
    return b;
  };
  views_.quant_tensors = upload(
      quant_tensors_, table_words(quant_.tensors, ops::kQuantTensorInts, ops::pack_quant_tensor));
  views_.quant_segments =
      upload(quant_segments_,
             table_words(quant_.segments, ops::kQuantSegmentInts, ops::pack_quant_segment));
  views_.pack_tensors = upload(
      pack_tensors_, table_words(pack_.tensors, ops::kPackTensorInts, ops::pack_pack_tensor));
  views_.pack_chunks =
      upload(pack_chunks_, table_words(pack_.chunks, ops::kPackChunkInts, ops::pack_pack_chunk));
  grown(tables_, std::max<size_t>(1, quant_.table_start.back()), DType::F32);
  grown(payload_dev_, size_t((pack_.max_bytes + 3) / 4), DType::I32);
}

std::vector<float> DeviceCompressor::download_error() const {
  std::vector<float> e(error_->numel);
  if (!e.empty()) backend_.download(e.data(), error_);
  return e;
}

void DeviceCompressor::set_error(const std::vector<float>& e) {
  if (error_.empty())
    throw Error("compression: no error-feedback accumulator to restore (error_feedback is off)");
  if (e.size() != plan_.total)
    throw Error("compression: error-feedback state has " + std::to_string(e.size()) +
                " elements, expected " + std::to_string(plan_.total));
  backend_.upload(error_, e.data());
}

double DeviceCompressor::error_norm() const {
  return error_.empty() ? 0.0 : std::sqrt(backend_.sum_squares(error_));
}

void DeviceCompressor::select_on_host(const float* x_host, uint64_t key) {
  select(plan_, x_host, key, sel_);
  upload_flat_indices();
}

void DeviceCompressor::upload_flat_indices() {
  const size_t kept = sel_.kept();
  host_flat_.resize(kept);
  const size_t nc = plan_.chunks.size();
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < nc; ++c) {
    const ChunkGeom& g = plan_.chunks[c];
    for (uint64_t i = sel_.start[c]; i < sel_.start[c + 1]; ++i)
      host_flat_[i] = uint32_t(g.flat(sel_.offset[i]));
  }
  if (kept > 0) backend_.upload(flat_.slice(0, kept), host_flat_.data());
}

const std::vector<uint8_t>& DeviceCompressor::compress(Buf delta, uint64_t step) {
  if (delta.dtype != DType::F32 || delta.numel != plan_.total)
    throw Error("compression: the pseudo-gradient must be f32 with " + std::to_string(plan_.total) +
                " elements, got " + dtype_name(delta.dtype) + " with " +
                std::to_string(delta.numel));
  using Clock = std::chrono::steady_clock;
  auto lap = [this, t = Clock::now()](double& into) mutable {
    if (!phase_timing_) return;
    backend_.synchronize();
    const auto now = Clock::now();
    into = std::chrono::duration<double>(now - t).count();
    t = now;
  };
  timings_ = Timings{};
  Buf x = delta;
  if (!error_.empty()) {
    backend_.ef_accumulate(error_, delta, plan_.settings.beta);  // t = β·e + Δ, kept in e
    x = error_;
  }
  const Selector selector = plan_.settings.selector;
  const uint64_t key = selector == Selector::RandomK ? random_key(plan_.settings.seed, step) : 0;
  switch (selector) {
    case Selector::ChunkedTopK:
      backend_.chunked_topk(offsets_, flat_, x, chunk_table_, plan_.max_chunk);
      break;
    case Selector::None:  // the flat indices are uploaded once (constructor)
      break;
    case Selector::RandomK:  // offsets implied by the key: only the flat indices travel
      select_on_host(nullptr, key);
      break;
    case Selector::GlobalTopK:
      host_dense_.resize(plan_.total);
      backend_.download(host_dense_.data(), x);
      select_on_host(host_dense_.data(), key);
      static_assert(sizeof(uint32_t) == sizeof(int32_t));
      if (sel_.kept() > 0) backend_.upload(offsets_.slice(0, sel_.kept()), sel_.offset.data());
      set_layouts(sel_.start);
      break;
  }
  lap(timings_.select_s);
  const size_t kept = kept_;
  const Buf values = values_.slice(0, kept), flat = flat_.slice(0, kept);
  if (kept > 0) backend_.gather(values, x, flat);
  lap(timings_.gather_s);
  const int vbits = value_bits(plan_.settings.quantizer);
  const int levels = quant_levels(plan_.settings.quantizer);
  if (plan_.settings.rules == Rules::Templar && levels > 0) {
    // The reference's level rule has no kernel: quantise on the host, send the results back.
    host_values_.resize(kept);
    host_codes_.resize(kept);
    host_tables_.assign(quant_.table_start.back(), 0.0f);
    if (kept > 0) backend_.download(host_values_.data(), values);
    templar_quantize_gathered(quant_, levels, host_values_.data(), host_codes_.data(),
                              host_tables_.data());
    if (kept > 0) {
      backend_.upload(values, host_values_.data());
      backend_.upload(codes_.slice(0, kept), host_codes_.data());
    }
    if (!host_tables_.empty())
      backend_.upload(tables_.slice(0, host_tables_.size()), host_tables_.data());
  } else {
    backend_.quantize_values(codes_.slice(0, kept), values, tables_, views_.quant_tensors,
                             views_.quant_segments, vbits);  // values become D
  }
  lap(timings_.quantize_s);
  if (kept > 0 && !error_.empty())
    backend_.scatter_subtract(error_, flat, values);  // e = t − D at the kept elements
  lap(timings_.ef_update_s);
  // Sections on the backend; then their sizes, the bytes, and the header on the host.
  backend_.pack_sections(payload_dev_, layout_dev_, offsets_, codes_, tables_, views_.pack_tensors,
                         views_.pack_chunks, pack_.options);
  const size_t nt = plan_.tensors.size();
  layout_host_.resize(nt + 2);
  backend_.download(layout_host_.data(), layout_dev_.slice(0, nt + 2));
  const uint64_t total = uint64_t(layout_host_[nt]) | (uint64_t(layout_host_[nt + 1]) << 32);
  LOCO_CHECK(total >= kWireHeaderBytes && total <= pack_.max_bytes,
             "the packed payload fits its bound");
  const size_t words = size_t((total + 3) / 4);
  payload_.resize(words * 4);
  backend_.download(payload_.data(), payload_dev_.slice(0, words));
  payload_.resize(size_t(total));
  seal_payload(plan_, key, payload_.data(), payload_.size());
  stats_ = EncodeStats{};
  stats_.elements = plan_.total;
  stats_.kept = kept;
  stats_.bytes = total;
  stats_.header_bytes = kWireHeaderBytes + nt * kWireTensorHeaderBytes;
  for (size_t t = 0; t < nt; ++t) {
    const ops::PackTensor& T = pack_.tensors[t];
    stats_.table_bytes += 4 * uint64_t(T.table_entries);
    stats_.index_bytes += layout_host_[t];
    stats_.value_bytes += (uint64_t(T.kept) * uint64_t(vbits) + 7) / 8;
  }
  lap(timings_.pack_s);
  return payload_;
}

// ------------------------------------------------------------------ DeviceAggregator

DeviceAggregator::DeviceAggregator(const Plan& plan, Aggregation how, Backend& backend)
    : plan_(plan), how_(how), backend_(backend) {
  check_addressable(plan_);
  sum_ = OwnedBuf(backend_, plan_.total, DType::F32);
  if (how_ == Aggregation::MeanSelected) count_ = OwnedBuf(backend_, plan_.total, DType::I32);
  const size_t kept = std::max<size_t>(1, max_kept(plan_));
  flat_ = OwnedBuf(backend_, kept, DType::I32);
  values_ = OwnedBuf(backend_, kept, DType::F32);
}

DeviceAggregator::~DeviceAggregator() = default;

void DeviceAggregator::reset() {
  backend_.zero(sum_);
  if (!count_.empty()) backend_.zero(count_);
  added_ = 0;
  pending_ = 0;
}

void DeviceAggregator::add(const uint8_t* payload, size_t bytes) {
  add_all({Payload{payload, bytes}});
}

void DeviceAggregator::add_all(const std::vector<Payload>& payloads) {
  const size_t K = payloads.size();
  if (size_t(added_) + K > size_t(INT32_MAX))
    throw Error("compression: too many payloads to aggregate");
  // rules = templar: every payload of this sync is kept (decoded) until finish(), which clips
  // them to their median norm and only then accumulates; else slots are reused per call.
  const bool defer = plan_.settings.rules == Rules::Templar;
  const size_t first = defer ? pending_ : 0;
  if (host_flat_.size() < first + K) {
    host_flat_.resize(first + K);
    host_values_.resize(first + K);
  }
  // Decode (and validate) every payload first, in parallel: decode_sparse throws before it
  // yields anything from a malformed payload, and nothing is accumulated unless all are good.
  std::vector<std::string> errors(K);
#pragma omp parallel for schedule(dynamic, 1) if (K > 1)
  for (size_t r = 0; r < K; ++r) {
    try {
      decode_sparse(plan_, payloads[r].data, payloads[r].bytes, host_flat_[first + r],
                    host_values_[first + r]);
    } catch (const std::exception& e) {  // must not leave the OpenMP region
      errors[r] = e.what();
    }
  }
  for (size_t r = 0; r < K; ++r)
    if (!errors[r].empty()) throw PayloadError(r, errors[r]);
  if (defer) {
    pending_ += K;
    added_ += int(K);
    return;
  }
  for (size_t r = 0; r < K; ++r) {  // in order: every element's sum is formed payload by payload
    scatter(host_flat_[r], host_values_[r]);
    ++added_;
  }
}

void DeviceAggregator::scatter(const std::vector<uint32_t>& flat,
                               const std::vector<float>& values) {
  const size_t n = flat.size();
  if (n > flat_->numel) {  // a payload keeps at most max_kept() elements per plan; be safe
    flat_.reset();
    values_.reset();
    flat_ = OwnedBuf(backend_, n, DType::I32);
    values_ = OwnedBuf(backend_, n, DType::F32);
  }
  if (n == 0) return;
  const Buf f = flat_.slice(0, n), v = values_.slice(0, n);
  backend_.upload(f, flat.data());
  backend_.upload(v, values.data());
  backend_.scatter_accumulate(sum_, count_, f, v);
}

void DeviceAggregator::finish(Buf out, int workers) {
  if (out.dtype != DType::F32 || out.numel != plan_.total)
    throw Error("compression: the aggregate must be f32 with " + std::to_string(plan_.total) +
                " elements");
  if (pending_ > 0) {  // rules = templar: clip every payload of the sync, then sum in order
    clip_to_median_norm(plan_, host_flat_, host_values_, pending_);
    for (size_t r = 0; r < pending_; ++r) scatter(host_flat_[r], host_values_[r]);
    pending_ = 0;
  }
  if (how_ == Aggregation::MeanSelected) {
    backend_.divide(out, sum_, count_, 1.0f);
  } else {
    LOCO_CHECK(workers >= 1, "mean_all needs the number of workers");
    backend_.divide(out, sum_, Buf{}, float(workers));
  }
}

}  // namespace loco::compress
