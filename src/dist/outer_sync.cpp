#include "loco/dist/outer_sync.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "loco/compress/compress.hpp"
#include "loco/compress/device_compressor.hpp"

namespace loco {

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
  if (cfg_.fragments != 1)
    throw Error("outer sync: fragments = " + std::to_string(cfg_.fragments) +
                " needs the parameter layout (the layers); construct it with the ParamLayout");
  init(params, {whole_buffer_fragment(params.numel)});
}

OuterSync::OuterSync(const OuterConfig& cfg, const CompressionConfig& compression,
                     const ParamLayout& layout, Backend& backend, Communicator& cross, Buf params)
    : cfg_(cfg), ccfg_(compression), backend_(backend), cross_(cross) {
  if (layout.total != params.numel)
    throw Error("outer sync: the parameter layout has " + std::to_string(layout.total) +
                " elements but the parameter buffer " + std::to_string(params.numel));
  if (cfg_.fragments < 1 || cfg_.interval % cfg_.fragments != 0)
    throw Error("outer sync: fragments = " + std::to_string(cfg_.fragments) +
                " must be >= 1 and divide interval = " + std::to_string(cfg_.interval));
  if (ccfg_.compressed() && cfg_.wire_dtype == "bf16")
    throw Error(
        "distributed.outer.wire_dtype = \"bf16\" applies to the dense all-reduce; "
        "with compression use distributed.compression.quantizer");
  // p = 1 with the llama layout: one fragment of every view, one range [0, N).
  init(params, partition_fragments(layout, cfg_.fragments));
  if (!ccfg_.compressed()) return;
  compressed_ = true;
  for (FragmentState& f : frags_) {
    // Chunking per fragment: the plan tiles the fragment's packed buffer (with p = 1 it is
    // the whole layout, offsets unchanged).
    compress::Plan plan =
        compress::make_plan(compress::shapes_from_layout(f.part.packed_layout(layout)),
                            compress::settings_from_config(ccfg_));
    f.compressor = std::make_unique<compress::DeviceCompressor>(std::move(plan), backend_);
    f.aggregator = std::make_unique<compress::DeviceAggregator>(
        f.compressor->plan(), f.compressor->plan().settings.aggregation, backend_);
  }
}

void OuterSync::init(Buf params, std::vector<Fragment> parts) {
  size_t largest = 0;
  for (Fragment& part : parts) {
    largest = std::max(largest, part.numel);
    FragmentState f;
    f.part = std::move(part);
    frags_.push_back(std::move(f));
  }
  global_ = OwnedBuf(backend_, params.numel, DType::F32);
  momentum_ = OwnedBuf(backend_, params.numel, DType::F32);
  // The staging of one fragment's pseudo-gradient: with p = 1 the whole buffer, as before.
  delta_ = OwnedBuf(backend_, largest, DType::F32);
  if (cfg_.wire_dtype == "bf16") wire_ = OwnedBuf(backend_, largest, DType::BF16);
  backend_.copy(global_, params);
}

OuterSync::~OuterSync() {
  // A sync still in flight (an error unwound the trainer) is abandoned before its buffers go.
  request_.reset();
}

int OuterSync::due_fragment(int steps_done) const {
  return loco::due_fragment(steps_done, cfg_.interval, fragments());
}

std::vector<float> OuterSync::error_feedback() const {
  if (!compressed_) return {};
  // Each fragment's accumulator, scattered back to its elements' places in the flat layout.
  std::vector<float> flat(global_->numel);
  for (const FragmentState& f : frags_) {
    const std::vector<float> e = f.compressor->download_error();
    if (e.empty()) return {};  // no error feedback
    size_t at = 0;
    for (const FragmentRange& r : f.part.ranges) {
      std::copy_n(e.begin() + std::ptrdiff_t(at), r.numel, flat.begin() + std::ptrdiff_t(r.offset));
      at += r.numel;
    }
  }
  return flat;
}

void OuterSync::restore_error_feedback(const std::vector<float>& e) {
  if (!compressed_) throw Error("outer sync: no compression, so no error-feedback state");
  if (fragments() == 1) return frags_[0].compressor->set_error(e);
  if (e.size() != global_->numel)
    throw Error("outer sync: error-feedback state has " + std::to_string(e.size()) +
                " elements, expected " + std::to_string(global_->numel));
  for (FragmentState& f : frags_) {
    std::vector<float> packed;
    packed.reserve(f.part.numel);
    for (const FragmentRange& r : f.part.ranges)
      packed.insert(packed.end(), e.begin() + std::ptrdiff_t(r.offset),
                    e.begin() + std::ptrdiff_t(r.offset + r.numel));
    f.compressor->set_error(packed);
  }
}

std::vector<int> OuterSync::fragment_syncs() const {
  std::vector<int> n;
  for (const FragmentState& f : frags_) n.push_back(f.syncs);
  return n;
}

void OuterSync::set_fragment_syncs(const std::vector<int>& n) {
  if (n.size() != frags_.size()) return;
  for (size_t j = 0; j < n.size(); ++j) frags_[j].syncs = n[j];
}

nlohmann::json OuterSync::summary_json() const {
  nlohmann::json j = total_.to_json();
  j["syncs"] = syncs_;
  j["selector"] = ccfg_.selector;
  j["quantizer"] = compressed_ ? ccfg_.quantizer : cfg_.wire_dtype;
  j["error_feedback"] = compressed_ ? ccfg_.error_feedback : false;
  j["aggregation"] = compressed_ ? ccfg_.aggregation : "mean_all";
  j["collective"] = compressed_ ? "all_gather" : "all_reduce";
  j["note"] = compressed_
                  ? "this rank's packed payloads (headers and quantiser tables included) over "
                    "every sync; wire = the all-gather pieces, padded to the largest payload"
                  : "dense all-reduce of every element";
  return j;
}

nlohmann::json OuterSync::fragments_json() const {
  nlohmann::json per = nlohmann::json::array();
  for (const FragmentState& f : frags_)
    per.push_back({{"index", f.part.index},
                   {"layers", f.part.layers},
                   {"elements", f.part.numel},
                   {"syncs", f.syncs}});
  return {{"fragments", fragments()},
          {"interval", cfg_.interval},
          {"rule",
           "fragment j holds transformer layers j, j+p, j+2p, ...; the embedding is in "
           "fragment 0, the final norm and the LM head in fragment p-1"},
          {"schedule",
           "fragment j syncs after the steps t = j*H/p (mod H); every fragment at "
           "the last step"},
          {"per_fragment", per},
          {"syncs", syncs_},
          {"peak_sync_sent_bytes", peak_sent_},
          {"sync_sent_bytes", total_sent_},
          {"note",
           "bytes this rank sent in the outer-sync collectives (ring formulas): the "
           "largest single fragment sync, and the sum over every sync; the final sync "
           "of every fragment counts as one sync per fragment"}};
}

// ------------------------------------------------------------------ the pieces of a sync

void OuterSync::begin(int j, const char* what) {
  check_not_in_flight(what);
  if (j < 0 || j >= fragments())
    throw Error("outer sync: no fragment " + std::to_string(j) +
                " (fragments = " + std::to_string(fragments()) + ")");
  active_ = j;
  sent_at_begin_ = outer_sent_bytes();
}

Buf OuterSync::delta() const { return delta_.slice(0, frags_[size_t(active_)].part.numel); }

Buf OuterSync::dense_wire() const {
  return wire_->data ? wire_.slice(0, frags_[size_t(active_)].part.numel) : delta();
}

uint64_t OuterSync::outer_sent_bytes() const {
  const CommStats& s = cross_.stats();
  return s[CommKind::AllReduce].sent_bytes + s[CommKind::AllGather].sent_bytes;
}

void OuterSync::pseudo_gradient(Buf params) {
  // Pseudo-gradient: old minus new, so it points like a gradient (docs/algorithms.md §2), packed
  // range by range into the staging buffer (p = 1: one range, the whole buffer).
  const Buf d = delta();
  size_t at = 0;
  for (const FragmentRange& r : frags_[size_t(active_)].part.ranges) {
    const Buf dr = d.slice(at, r.numel);
    backend_.copy(dr, global_.slice(r.offset, r.numel));
    backend_.axpby(dr, -1.0f, params.slice(r.offset, r.numel), 1.0f);
    at += r.numel;
  }
  // A NaN or inf here would reach θ_global on every rank through the collective: stop first.
  if (!backend_.all_finite(d))
    throw Error("non-finite pseudo-gradient at outer step " + std::to_string(syncs_ + 1) +
                (fragments() > 1 ? " (fragment " + std::to_string(active_) + ")" : "") +
                " on rank " + std::to_string(cross_.rank()) + " of the outer group: the local " +
                "model diverged during its inner steps (lower optimizer.lr)");
}

// Compressed path, step 1: compress this rank's Δ (delta(), on the backend), exchange payload
// sizes (blocking, control traffic), and stage the piece padded to the largest payload.
void OuterSync::pack_payload() {
  const std::vector<uint8_t>& payload =
      frags_[size_t(active_)].compressor->compress(delta(), uint64_t(syncs_));
  const int K = cross_.size();
  piece_sizes_ = cross_.all_gather_host(uint64_t(payload.size()));
  const uint64_t largest = *std::max_element(piece_sizes_.begin(), piece_sizes_.end());
  piece_ = (largest + 3) / 4 * 4;  // whole i32 words for device staging
  send_.assign(size_t(piece_), 0);
  std::memcpy(send_.data(), payload.data(), payload.size());
  recv_.resize(size_t(piece_) * size_t(K));
  if (gather_on_host()) return;
  const size_t words = size_t(piece_ / 4);
  if (dev_send_->numel < words) {
    dev_send_.reset();  // the old staging goes before the larger one is allocated
    dev_recv_.reset();
    dev_send_ = OwnedBuf(backend_, words, DType::I32);
    dev_recv_ = OwnedBuf(backend_, words * size_t(K), DType::I32);
  }
  backend_.upload(dev_send_.slice(0, words), send_.data());
}

bool OuterSync::gather_on_host() const { return cross_.accepts(MemSpace::Host); }

Buf OuterSync::gather_send() {
  const size_t words = size_t(piece_ / 4);
  if (!gather_on_host()) return dev_send_.slice(0, words);
  return Buf{send_.data(), DType::I32, words, MemSpace::Host};
}

Buf OuterSync::gather_recv() {
  const size_t words = size_t(piece_ / 4) * size_t(cross_.size());
  if (!gather_on_host()) return dev_recv_.slice(0, words);
  return Buf{recv_.data(), DType::I32, words, MemSpace::Host};
}

// Compressed path, step 3: decode every rank's payload in rank order and aggregate; delta()
// holds the aggregate on exit.
void OuterSync::aggregate_payloads() {
  FragmentState& f = frags_[size_t(active_)];
  const int K = cross_.size();
  if (!gather_on_host()) backend_.download(recv_.data(), gather_recv());
  f.aggregator->reset();
  std::vector<compress::DeviceAggregator::Payload> pieces(static_cast<size_t>(K));
  for (int r = 0; r < K; ++r)
    pieces[size_t(r)] = {recv_.data() + size_t(r) * size_t(piece_),
                         size_t(piece_sizes_[size_t(r)])};
  try {
    f.aggregator->add_all(pieces);  // decoded in parallel, accumulated in rank order
  } catch (const compress::PayloadError& e) {
    throw Error("outer sync " + std::to_string(syncs_ + 1) + ": the payload of rank " +
                std::to_string(e.index) + " of " + std::to_string(K) + " [" + cross_.name() +
                "] is invalid: " + e.what());
  }
  f.aggregator->finish(delta(), K);

  const compress::EncodeStats& es = f.compressor->stats();
  last_ = OuterSyncStats{};
  last_.compressed = true;
  last_.elements = f.part.numel;
  last_.kept = es.kept;
  last_.payload_bytes = es.bytes;
  last_.piece_bytes = piece_;
  last_.header_bytes = es.header_bytes;
  last_.table_bytes = es.table_bytes;
  last_.index_bytes = es.index_bytes;
  last_.value_bytes = es.value_bytes;
  if (ccfg_.error_feedback) last_.ef_norm = f.compressor->error_norm();
}

void OuterSync::dense_stats() {
  const uint64_t bytes = delta().numel * (wire_->data ? 2u : 4u);
  last_ = OuterSyncStats{};
  last_.elements = last_.kept = delta().numel;
  last_.payload_bytes = last_.piece_bytes = last_.value_bytes = bytes;
}

double OuterSync::apply(Buf params, bool merge) {
  total_ += last_;
  const Buf d = delta();
  const double norm = std::sqrt(backend_.sum_squares(d));
  const float a = static_cast<float>(cfg_.merge_alpha);
  size_t at = 0;
  for (const FragmentRange& r : frags_[size_t(active_)].part.ranges) {
    const Buf g = global_.slice(r.offset, r.numel);
    outer_sgd_step(backend_, g, momentum_.slice(r.offset, r.numel), d.slice(at, r.numel), cfg_.lr,
                   cfg_.momentum, cfg_.nesterov);
    const Buf local = params.slice(r.offset, r.numel);
    if (merge)  // θ_local ← α·θ_local + (1 − α)·θ_global (lerp(θ_global, θ_local, α), §7)
      backend_.axpby(local, 1.0f - a, g, a);
    else
      backend_.copy(local, g);
    at += r.numel;
  }
  ++syncs_;
  ++frags_[size_t(active_)].syncs;
  last_fragment_ = active_;
  // The bytes of this fragment's collective (a started one is accounted at completion). A
  // caller that reset the communicator's stats meanwhile gets what was counted since.
  const uint64_t now = outer_sent_bytes();
  last_sent_ = now >= sent_at_begin_ ? now - sent_at_begin_ : now;
  peak_sent_ = std::max(peak_sent_, last_sent_);
  total_sent_ += last_sent_;
  return norm;
}

void OuterSync::check_not_in_flight(const char* what) const {
  if (request_)
    throw Error(std::string("outer sync: ") + what + " while outer sync " +
                std::to_string(syncs_ + 1) + " is in flight (finish() it first)");
}

// ------------------------------------------------------------------ blocking sync

double OuterSync::sync_fragment(Buf params, int j) {
  begin(j, "sync()");
  pseudo_gradient(params);
  if (compressed_) {
    pack_payload();
    cross_.all_gather(gather_send(), gather_recv());
    aggregate_payloads();
  } else if (wire_->data) {
    // Collective: dense all-reduce mean (optionally in bf16 on the wire).
    backend_.copy(dense_wire(), delta());
    cross_.all_reduce(dense_wire(), ReduceOp::Mean);
    backend_.copy(delta(), dense_wire());
    dense_stats();
  } else {
    cross_.all_reduce(delta(), ReduceOp::Mean);
    dense_stats();
  }
  return apply(params, /*merge=*/false);
}

double OuterSync::sync(Buf params) {
  if (fragments() == 1) return sync_fragment(params, 0);
  check_not_in_flight("sync()");
  // Every fragment in turn; the figures of the whole are the sums (‖Δ‖ and ‖e‖ over every
  // element).
  OuterSyncStats all;
  double delta_sq = 0.0, ef_sq = 0.0;
  uint64_t sent = 0;
  for (int j = 0; j < fragments(); ++j) {
    const double norm = sync_fragment(params, j);
    delta_sq += norm * norm;
    all += last_;
    sent += last_sent_;
    if (last_.ef_norm >= 0) ef_sq += last_.ef_norm * last_.ef_norm;
  }
  all.ef_norm = last_.ef_norm >= 0 ? std::sqrt(ef_sq) : -1.0;
  last_ = all;
  last_fragment_ = -1;
  last_sent_ = sent;  // the peak stays per fragment sync
  return std::sqrt(delta_sq);
}

// ------------------------------------------------------------------ overlapped sync

void OuterSync::start(Buf params, int j) {
  begin(j, "start()");
  pseudo_gradient(params);
  if (compressed_) {
    pack_payload();
    request_ = cross_.start_all_gather(gather_send(), gather_recv());
  } else {
    if (wire_->data) backend_.copy(dense_wire(), delta());
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
  if (compressed_) {
    aggregate_payloads();
  } else {
    if (wire_->data) backend_.copy(delta(), dense_wire());
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
