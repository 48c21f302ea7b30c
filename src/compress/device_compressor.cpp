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

void release_all(Backend& backend, std::initializer_list<Buf*> bufs) {
  for (Buf* b : bufs)
    if (b->data != nullptr) backend.release(*b);
}

}  // namespace

// ------------------------------------------------------------------ DeviceCompressor

DeviceCompressor::DeviceCompressor(Plan plan, Backend& backend)
    : plan_(std::move(plan)), backend_(backend) {
  check_addressable(plan_);
  try {
    if (plan_.settings.error_feedback) error_ = backend_.alloc(plan_.total, DType::F32);
    const size_t kept = max_kept(plan_);
    offsets_ = backend_.alloc(kept, DType::I32);
    flat_ = backend_.alloc(kept, DType::I32);
    values_ = backend_.alloc(kept, DType::F32);
    if (plan_.settings.selector == Selector::ChunkedTopK) {
      std::vector<int32_t> table(plan_.chunks.size() * ops::kChunkRowInts);
      for (size_t c = 0; c < plan_.chunks.size(); ++c) {
        ops::pack_chunk_row(plan_.chunks[c].row(plan_.k_start[c]),
                            table.data() + c * ops::kChunkRowInts);
      }
      chunk_table_ = backend_.alloc(table.size(), DType::I32);
      backend_.upload(chunk_table_, table.data());
    }
  } catch (...) {
    release_all(backend_, {&error_, &chunk_table_, &offsets_, &flat_, &values_});
    throw;
  }
}

DeviceCompressor::~DeviceCompressor() {
  release_all(backend_, {&error_, &chunk_table_, &offsets_, &flat_, &values_});
}

std::vector<float> DeviceCompressor::download_error() const {
  std::vector<float> e(error_.numel);
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
  auto lap = [t = Clock::now()](double& into) mutable {
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
    case Selector::ChunkedTopK: {
      backend_.chunked_topk(offsets_, flat_, x, chunk_table_, plan_.max_chunk);
      sel_.start.assign(plan_.k_start.begin(), plan_.k_start.end());
      const size_t kept = size_t(plan_.k_start.back());
      sel_.offset.resize(kept);
      static_assert(sizeof(uint32_t) == sizeof(int32_t));
      if (kept > 0) backend_.download(sel_.offset.data(), offsets_.slice(0, kept));
      break;
    }
    case Selector::None:
    case Selector::RandomK:  // neither reads the values
      select_on_host(nullptr, key);
      break;
    case Selector::GlobalTopK:
      host_dense_.resize(plan_.total);
      backend_.download(host_dense_.data(), x);
      select_on_host(host_dense_.data(), key);
      break;
  }
  backend_.synchronize();
  lap(timings_.select_s);
  const size_t kept = sel_.kept();
  q_.value.resize(kept);
  const Buf values = values_.slice(0, kept), flat = flat_.slice(0, kept);
  if (kept > 0) {
    backend_.gather(values, x, flat);
    backend_.download(q_.value.data(), values);
  }
  lap(timings_.gather_s);
  quantize_gathered(plan_, sel_, q_);  // q_.value becomes D, what every receiver decodes
  lap(timings_.quantize_s);
  if (kept > 0 && !error_.empty()) {
    backend_.upload(values, q_.value.data());
    backend_.scatter_subtract(error_, flat, values);  // e = t − D at the kept elements
    backend_.synchronize();
  }
  lap(timings_.ef_update_s);
  encode_into(plan_, sel_, q_, key, payload_, &stats_);
  lap(timings_.pack_s);
  return payload_;
}

// ------------------------------------------------------------------ DeviceAggregator

DeviceAggregator::DeviceAggregator(const Plan& plan, Aggregation how, Backend& backend)
    : plan_(plan), how_(how), backend_(backend) {
  check_addressable(plan_);
  try {
    sum_ = backend_.alloc(plan_.total, DType::F32);
    if (how_ == Aggregation::MeanSelected) count_ = backend_.alloc(plan_.total, DType::I32);
    const size_t kept = std::max<size_t>(1, max_kept(plan_));
    flat_ = backend_.alloc(kept, DType::I32);
    values_ = backend_.alloc(kept, DType::F32);
  } catch (...) {
    release_all(backend_, {&sum_, &count_, &flat_, &values_});
    throw;
  }
}

DeviceAggregator::~DeviceAggregator() { release_all(backend_, {&sum_, &count_, &flat_, &values_}); }

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
  if (n > flat_.numel) {  // a payload keeps at most max_kept() elements per plan; be safe
    backend_.release(flat_);
    backend_.release(values_);
    flat_ = backend_.alloc(n, DType::I32);
    values_ = backend_.alloc(n, DType::F32);
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
