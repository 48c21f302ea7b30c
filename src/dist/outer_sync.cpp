#include "loco/dist/outer_sync.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "loco/compress/compress.hpp"
#include "loco/compress/device_compressor.hpp"

namespace loco {

Topology make_topology(const DistributedConfig& cfg, Communicator& world) {
  Topology t;
  t.world_rank = world.rank();
  t.world_size = world.size();
  t.replica_size = cfg.method == "ddp" ? t.world_size : cfg.replica_size;
  if (t.world_size % t.replica_size != 0)
    throw Error("distributed.replica_size = " + std::to_string(cfg.replica_size) +
                ": must divide the number of ranks (" + std::to_string(t.world_size) + ")");
  t.num_replicas = t.world_size / t.replica_size;
  t.replica_index = t.world_rank / t.replica_size;
  t.rank_in_replica = t.world_rank % t.replica_size;
  // split() is collective over the world: every rank makes both calls.
  auto replica = world.split(t.replica_index, t.rank_in_replica);
  auto cross = world.split(t.rank_in_replica, t.replica_index);
  t.replica = std::move(replica);
  t.cross = std::move(cross);
  return t;
}

void outer_sgd_step(Backend& backend, Buf global, Buf momentum, Buf delta, double lr, double mu,
                    bool nesterov) {
  backend.axpby(momentum, 1.0f, delta, static_cast<float>(mu));  // v = Δ + μ·v
  if (nesterov) {
    backend.axpby(global, static_cast<float>(-lr), delta, 1.0f);          // θ -= η·Δ
    backend.axpby(global, static_cast<float>(-lr * mu), momentum, 1.0f);  // θ -= η·μ·v
  } else {
    backend.axpby(global, static_cast<float>(-lr), momentum, 1.0f);  // θ -= η·v
  }
}

// ------------------------------------------------------------------ stats

OuterSyncStats& OuterSyncStats::operator+=(const OuterSyncStats& o) {
  compressed = o.compressed;
  elements += o.elements;
  kept += o.kept;
  payload_bytes += o.payload_bytes;
  piece_bytes += o.piece_bytes;
  header_bytes += o.header_bytes;
  table_bytes += o.table_bytes;
  index_bytes += o.index_bytes;
  value_bytes += o.value_bytes;
  ef_norm = o.ef_norm;
  return *this;
}

nlohmann::json OuterSyncStats::to_json() const {
  auto per_kept = [&](uint64_t bytes) -> nlohmann::json {
    if (kept == 0) return nullptr;
    return 8.0 * double(bytes) / double(kept);
  };
  return {{"compressed", compressed},
          {"elements", elements},
          {"kept", kept},
          {"density", elements ? double(kept) / double(elements) : 0.0},
          {"payload_bytes", payload_bytes},
          {"piece_bytes", piece_bytes},
          {"bits_per_kept_element", per_kept(payload_bytes)},
          {"wire_bits_per_kept_element", per_kept(piece_bytes)},
          {"value_bits_per_kept_element", per_kept(value_bytes)},
          {"index_bits_per_kept_element", per_kept(index_bytes)},
          {"overhead_bits_per_kept_element", per_kept(header_bytes + table_bytes)},
          {"ef_norm", ef_norm >= 0 ? nlohmann::json(ef_norm) : nlohmann::json(nullptr)}};
}

// ------------------------------------------------------------------ OuterSync

OuterSync::OuterSync(const OuterConfig& cfg, Backend& backend, Communicator& cross, Buf params)
    : cfg_(cfg), backend_(backend), cross_(cross) {
  global_ = backend_.alloc(params.numel, DType::F32);
  momentum_ = backend_.alloc(params.numel, DType::F32);
  delta_ = backend_.alloc(params.numel, DType::F32);
  if (cfg_.wire_dtype == "bf16") wire_ = backend_.alloc(params.numel, DType::BF16);
  backend_.copy(global_, params);
}

OuterSync::OuterSync(const OuterConfig& cfg, const CompressionConfig& compression,
                     const ParamLayout& layout, Backend& backend, Communicator& cross, Buf params)
    : OuterSync(cfg, backend, cross, params) {
  ccfg_ = compression;
  if (!ccfg_.compressed()) return;
  if (wire_.data)
    throw Error(
        "distributed.outer.wire_dtype = \"bf16\" applies to the dense all-reduce; "
        "with compression use distributed.compression.quantizer");
  if (layout.total != params.numel)
    throw Error("outer sync: the parameter layout has " + std::to_string(layout.total) +
                " elements but the parameter buffer " + std::to_string(params.numel));
  compress::Plan plan = compress::make_plan(compress::shapes_from_layout(layout),
                                            compress::settings_from_config(ccfg_));
  compressor_ = std::make_unique<compress::DeviceCompressor>(std::move(plan), backend_);
  aggregator_ = std::make_unique<compress::DeviceAggregator>(
      compressor_->plan(), compressor_->plan().settings.aggregation, backend_);
}

OuterSync::~OuterSync() {
  // A sync still in flight (an error unwound the trainer) is abandoned before its buffers go.
  request_.reset();
  for (Buf* b : {&global_, &momentum_, &delta_, &wire_, &dev_send_, &dev_recv_})
    if (b->data) backend_.release(*b);
}

std::vector<float> OuterSync::error_feedback() const {
  return compressor_ ? compressor_->download_error() : std::vector<float>{};
}

void OuterSync::restore_error_feedback(const std::vector<float>& e) {
  if (!compressor_) throw Error("outer sync: no compression, so no error-feedback state");
  compressor_->set_error(e);
}

nlohmann::json OuterSync::summary_json() const {
  nlohmann::json j = total_.to_json();
  j["syncs"] = syncs_;
  j["selector"] = ccfg_.selector;
  j["quantizer"] = compressor_ ? ccfg_.quantizer : cfg_.wire_dtype;
  j["error_feedback"] = compressor_ ? ccfg_.error_feedback : false;
  j["aggregation"] = compressor_ ? ccfg_.aggregation : "mean_all";
  j["collective"] = compressor_ ? "all_gather" : "all_reduce";
  j["note"] = compressor_
                  ? "this rank's packed payloads (headers and quantiser tables included) over "
                    "every sync; wire = the all-gather pieces, padded to the largest payload"
                  : "dense all-reduce of every element";
  return j;
}

// ------------------------------------------------------------------ the pieces of a sync

void OuterSync::pseudo_gradient(Buf params) {
  // Pseudo-gradient: old minus new, so it points like a gradient (ALGORITHMS.md §2).
  backend_.copy(delta_, global_);
  backend_.axpby(delta_, -1.0f, params, 1.0f);
  // A NaN or inf here would reach θ_global on every rank through the collective: stop first.
  if (!backend_.all_finite(delta_))
    throw Error("non-finite pseudo-gradient at outer step " + std::to_string(syncs_ + 1) +
                " on rank " + std::to_string(cross_.rank()) + " of the outer group: the local " +
                "model diverged during its inner steps (lower optimizer.lr)");
}

// Compressed path, step 1: compress this rank's Δ (delta_, on the backend), exchange payload
// sizes (blocking, control traffic), and stage the piece padded to the largest payload.
void OuterSync::pack_payload() {
  const std::vector<uint8_t>& payload = compressor_->compress(delta_, uint64_t(syncs_));
  const int K = cross_.size();
  piece_sizes_ = cross_.all_gather_host(uint64_t(payload.size()));
  const uint64_t largest = *std::max_element(piece_sizes_.begin(), piece_sizes_.end());
  piece_ = (largest + 3) / 4 * 4;  // whole i32 words for device staging
  send_.assign(size_t(piece_), 0);
  std::memcpy(send_.data(), payload.data(), payload.size());
  recv_.resize(size_t(piece_) * size_t(K));
  if (!cross_.device_memory()) return;
  const size_t words = size_t(piece_ / 4);
  if (dev_send_.numel < words) {
    if (dev_send_.data) backend_.release(dev_send_);
    if (dev_recv_.data) backend_.release(dev_recv_);
    dev_send_ = backend_.alloc(words, DType::I32);
    dev_recv_ = backend_.alloc(words * size_t(K), DType::I32);
  }
  backend_.upload(dev_send_.slice(0, words), send_.data());
}

void* OuterSync::gather_send() {
  return cross_.device_memory() ? dev_send_.data : static_cast<void*>(send_.data());
}

void* OuterSync::gather_recv() {
  return cross_.device_memory() ? dev_recv_.data : static_cast<void*>(recv_.data());
}

// Compressed path, step 3: decode every rank's payload in rank order and aggregate; delta_
// holds the aggregate on exit.
void OuterSync::aggregate_payloads() {
  const size_t N = delta_.numel;
  const int K = cross_.size();
  if (cross_.device_memory())
    backend_.download(recv_.data(), dev_recv_.slice(0, size_t(piece_ / 4) * size_t(K)));
  aggregator_->reset();
  for (int r = 0; r < K; ++r) {
    try {
      aggregator_->add(recv_.data() + size_t(r) * size_t(piece_), size_t(piece_sizes_[size_t(r)]));
    } catch (const Error& e) {
      throw Error("outer sync " + std::to_string(syncs_ + 1) + ": the payload of rank " +
                  std::to_string(r) + " of " + std::to_string(K) + " [" + cross_.name() +
                  "] is invalid: " + e.what());
    }
  }
  aggregator_->finish(delta_, K);

  const compress::EncodeStats& es = compressor_->stats();
  last_ = OuterSyncStats{};
  last_.compressed = true;
  last_.elements = N;
  last_.kept = es.kept;
  last_.payload_bytes = es.bytes;
  last_.piece_bytes = piece_;
  last_.header_bytes = es.header_bytes;
  last_.table_bytes = es.table_bytes;
  last_.index_bytes = es.index_bytes;
  last_.value_bytes = es.value_bytes;
  if (ccfg_.error_feedback) last_.ef_norm = compressor_->error_norm();
}

void OuterSync::dense_stats() {
  const uint64_t bytes = delta_.numel * (wire_.data ? 2u : 4u);
  last_ = OuterSyncStats{};
  last_.elements = last_.kept = delta_.numel;
  last_.payload_bytes = last_.piece_bytes = last_.value_bytes = bytes;
}

double OuterSync::apply(Buf params, bool merge) {
  total_ += last_;
  const double norm = std::sqrt(backend_.sum_squares(delta_));
  outer_sgd_step(backend_, global_, momentum_, delta_, cfg_.lr, cfg_.momentum, cfg_.nesterov);
  if (merge) {
    // θ_local ← α·θ_local + (1 − α)·θ_global (lerp(θ_global, θ_local, α), ALGORITHMS.md §7).
    const float a = static_cast<float>(cfg_.merge_alpha);
    backend_.axpby(params, 1.0f - a, global_, a);
  } else {
    backend_.copy(params, global_);
  }
  ++syncs_;
  return norm;
}

void OuterSync::check_not_in_flight(const char* what) const {
  if (request_)
    throw Error(std::string("outer sync: ") + what + " while outer sync " +
                std::to_string(syncs_ + 1) + " is in flight (finish() it first)");
}

// ------------------------------------------------------------------ blocking sync

double OuterSync::sync(Buf params) {
  check_not_in_flight("sync()");
  pseudo_gradient(params);
  if (compressor_) {
    pack_payload();
    cross_.all_gather_bytes(gather_send(), size_t(piece_), gather_recv());
    aggregate_payloads();
  } else if (wire_.data) {
    // Collective: dense all-reduce mean (optionally in bf16 on the wire).
    backend_.copy(wire_, delta_);
    cross_.all_reduce(wire_, ReduceOp::Mean);
    backend_.copy(delta_, wire_);
    dense_stats();
  } else {
    cross_.all_reduce(delta_, ReduceOp::Mean);
    dense_stats();
  }
  return apply(params, /*merge=*/false);
}

// ------------------------------------------------------------------ overlapped sync

void OuterSync::start(Buf params) {
  check_not_in_flight("start()");
  pseudo_gradient(params);
  if (compressor_) {
    pack_payload();
    request_ = cross_.start_all_gather_bytes(gather_send(), size_t(piece_), gather_recv());
  } else {
    if (wire_.data) backend_.copy(wire_, delta_);
    request_ = cross_.start_all_reduce(dense_wire(), ReduceOp::Mean);
  }
  started_at_ = Clock::now();
  completion_seen_ = false;
  poll();  // a transport that completed at once (or a fast one) is seen done right away
}

void OuterSync::poll() {
  if (!request_ || completion_seen_) return;
  if (request_->test()) {
    completed_at_ = Clock::now();
    completion_seen_ = true;
  }
}

double OuterSync::finish(Buf params) {
  if (!request_) throw Error("outer sync: finish() without a started sync");
  const auto t0 = Clock::now();
  request_->wait();
  const auto t1 = Clock::now();
  if (!completion_seen_) completed_at_ = t1;
  request_.reset();
  last_overlap_ = OverlapStats{};
  last_overlap_.syncs = 1;
  last_overlap_.blocked_seconds = std::chrono::duration<double>(t1 - t0).count();
  last_overlap_.comm_seconds = std::chrono::duration<double>(completed_at_ - started_at_).count();
  total_overlap_ += last_overlap_;
  if (compressor_) {
    aggregate_payloads();
  } else {
    if (wire_.data) backend_.copy(delta_, wire_);
    dense_stats();
  }
  return apply(params, /*merge=*/true);
}

// ------------------------------------------------------------------ overlap figures

double OverlapStats::hidden_fraction() const {
  if (comm_seconds <= 0.0) return 1.0;
  return std::clamp(1.0 - blocked_seconds / comm_seconds, 0.0, 1.0);
}

OverlapStats& OverlapStats::operator+=(const OverlapStats& o) {
  syncs += o.syncs;
  comm_seconds += o.comm_seconds;
  blocked_seconds += o.blocked_seconds;
  return *this;
}

nlohmann::json OverlapStats::to_json() const {
  // No overlapped sync, no fraction (null rather than a made-up 1).
  return {{"syncs", syncs},
          {"comm_seconds", comm_seconds},
          {"blocked_seconds", blocked_seconds},
          {"hidden_fraction", syncs > 0 ? nlohmann::json(hidden_fraction()) : nullptr}};
}

nlohmann::json OuterSync::overlap_json() const {
  nlohmann::json j = total_overlap_.to_json();
  j["enabled"] = cfg_.overlap_steps > 0;
  j["overlap_steps"] = cfg_.overlap_steps;
  j["merge_alpha"] = cfg_.merge_alpha;
  j["note"] = cfg_.overlap_steps > 0
                  ? "overlapped syncs only (the final sync blocks): comm_seconds from the "
                    "collective's start to the completion seen between inner steps, "
                    "blocked_seconds waiting for it; hidden_fraction = 1 - blocked / comm"
                  : "overlap off (distributed.outer.overlap_steps = 0): every outer sync blocks";
  return j;
}

}  // namespace loco
