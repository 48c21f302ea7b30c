// The outer-sync pipeline shared by every low-communication method (docs/algorithms.md §2, §5):
//
//   inner optimizer (H steps) → pseudo-gradient Δ = θ_global − θ_local → [error feedback →
//   selector → quantiser: identity for DiLoCo] → collective (all-reduce mean) → aggregate →
//   outer optimizer (SGD, optional Nesterov momentum) → θ_local ← θ_global
//
// DDP is the same pipeline with the gradient as the payload and no outer step (see
// Topology/GradientSync below); DiLoCo is this class with the dense path.
//
// Two paths (distributed.compression):
//  - dense: selector "none" and quantizer "none" (error feedback is then a no-op: D(Ĉ) = e,
//    nothing is ever left behind): the pseudo-gradient is all-reduced (mean), in f32 or in
//    bf16 (outer.wire_dtype).
//  - compressed (SparseLoCo, compressed MuLoCo/DiLoCo; loco/compress/compress.hpp): each rank
//    packs its payload on the host (EF state on the host too), the ranks exchange payload
//    sizes (all_gather_host: 8 bytes each, control traffic), then all-gather the payloads
//    padded to the largest size rounded up to 4 bytes: one piece of P bytes per rank, so the
//    wire carries and the accounting counts ring_allgather_bytes(P, K) — padding included.
//    Every rank decodes every payload in rank order and aggregates (mean_selected or
//    mean_all), so every rank applies the same update and θ stays bitwise identical.
//    (A variable-size all-gather would save the padding, a few per cent with Rice-coded
//    indices; NCCL has none, so its communicator would pad anyway.)
//
// Overlap (Streaming DiLoCo, docs/algorithms.md §7; outer.overlap_steps = τ > 0): the trainer calls
// start() at the due step t — Δ from θ_local(t), packing, and the collective is *started* —
// then poll() after each of the next τ inner steps (MPI progresses only inside MPI calls), and
// finish() at step t + τ: wait, aggregate, outer step on θ_global exactly as sync() does, then
// the local parameters, which moved on for τ steps, are merged:
//     θ_local ← α·θ_local + (1 − α)·θ_global          (α = outer.merge_alpha)
// While in flight, θ_global, the momentum, Δ and the payload buffers belong to the sync: the
// inner steps touch only θ_local and the inner optimizer state. sync() (the blocking path,
// τ = 0 and the final sync) is unchanged: θ_local ← θ_global, no merge.
//
// Fragments (Streaming DiLoCo, outer.fragments = p > 1; partition and schedule in
// loco/dist/fragments.hpp): every sync above runs over one fragment's elements only. θ_global,
// the momentum and θ_local stay flat buffers, of which a fragment is a set of ranges: the
// pseudo-gradient is computed straight into a packed staging buffer (delta_, one backend
// copy + axpby per range), the collective runs over those fragment elements, and the outer
// step and the merge write back range by range. With compression each fragment has its own
// plan (make_plan over the fragment's tensors, offsets relative to the packed buffer) and
// error-feedback state, so the state stays one value per element. One sync (of any fragment)
// is in flight at a time: τ < H/p makes a fragment's sync complete before the next one is
// due. sync() syncs every fragment in turn (the final sync); p = 1 is one fragment of every
// element, [0, N), and runs exactly the operations of plain DiLoCo.
#pragma once
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/backend/owned_buf.hpp"
#include "loco/config/config.hpp"
#include "loco/dist/communicator.hpp"
#include "loco/dist/fragments.hpp"
#include "loco/model/param_layout.hpp"

namespace loco {

// How the world's ranks are grouped. Ranks of one replica DDP among themselves every step
// (replica group); the replicas exchange pseudo-gradients every H steps (cross group: one
// rank of each replica with the same position). DDP is one replica of every rank. Built by
// the composition root (loco/runtime/runtime.hpp).
struct Topology {
  int world_rank = 0, world_size = 1;
  int replica_size = 1;   // ranks per replica
  int replica_index = 0;  // which replica this rank belongs to
  int num_replicas = 1;
  int rank_in_replica = 0;
  std::unique_ptr<Communicator> replica;  // DDP group (size 1 when replica_size == 1)
  std::unique_ptr<Communicator> cross;    // outer-sync group (size 1 with one replica)
};

namespace compress {
class DeviceCompressor;
class DeviceAggregator;
}  // namespace compress

// What one outer sync put on the wire for this rank (the dense path: kept = elements).
struct OuterSyncStats {
  bool compressed = false;
  uint64_t elements = 0;       // pseudo-gradient elements
  uint64_t kept = 0;           // elements this rank sent
  uint64_t payload_bytes = 0;  // this rank's packed payload (headers and tables included)
  uint64_t piece_bytes = 0;    // what the collective moved per rank (padded to the max)
  uint64_t header_bytes = 0, table_bytes = 0, index_bytes = 0, value_bytes = 0;
  double ef_norm = -1.0;  // ‖e‖ after the sync; < 0 without error feedback

  OuterSyncStats& operator+=(const OuterSyncStats& o);
  // {"density", "kept", "elements", "payload_bytes", "piece_bytes", "bits_per_kept_element",
  //  "wire_bits_per_kept_element", "value_bits_per_kept_element", "index_bits_per_kept_element",
  //  "overhead_bits_per_kept_element", ...}
  nlohmann::json to_json() const;
};

// Timings of overlapped syncs (one sync, or the sum over several).
struct OverlapStats {
  int syncs = 0;
  double comm_seconds = 0.0;     // collective start → completion seen by poll() or finish()
  double blocked_seconds = 0.0;  // inside finish()'s wait for the collective
  // 1 − blocked / comm: the share of the communication time spent computing inner steps.
  // 1 when nothing was measured (comm_seconds = 0).
  double hidden_fraction() const;
  OverlapStats& operator+=(const OverlapStats& o);
  // {"syncs", "comm_seconds", "blocked_seconds", "hidden_fraction" (null when syncs = 0)}
  nlohmann::json to_json() const;
};

class OuterSync {
 public:
  // Snapshots θ_global from `params` (identical on every rank at construction). Dense path,
  // one fragment (cfg.fragments must be 1: fragments need the layout).
  OuterSync(const OuterConfig& cfg, Backend& backend, Communicator& cross, Buf params);
  // With compression and/or fragments; `layout` gives the tensors (chunking, and the layers
  // of the fragments) of the flat parameter buffer.
  OuterSync(const OuterConfig& cfg, const CompressionConfig& compression, const ParamLayout& layout,
            Backend& backend, Communicator& cross, Buf params);
  ~OuterSync();
  OuterSync(const OuterSync&) = delete;
  OuterSync& operator=(const OuterSync&) = delete;

  // The fragment due after `steps_done` completed inner steps, −1 when none (fragments.hpp).
  int due_fragment(int steps_done) const;
  bool due(int steps_done) const { return due_fragment(steps_done) >= 0; }
  int fragments() const { return int(frags_.size()); }
  const Fragment& fragment(int j) const { return frags_.at(size_t(j)).part; }

  // One blocking outer step of every fragment, in fragment order (p = 1: the DiLoCo sync):
  // reads θ_local from `params`, writes the new θ_global back into it. Returns the L2 norm
  // of the averaged pseudo-gradient (for the metrics line); last_stats() is then the sum
  // over the fragments' syncs, last_fragment() is −1 when p > 1 ("all").
  double sync(Buf params);
  // One blocking outer step of fragment j: only its elements of `params` change.
  double sync_fragment(Buf params, int j);

  // Overlapped outer step of fragment j, in three calls (see the top of this file). start()
  // reads θ_local from `params` and starts the collective; poll() progresses it (cheap; call
  // it between inner steps); finish() completes it, applies the outer step and merges
  // θ_global into the fragment's elements of `params` with merge_alpha. Returns what sync()
  // returns. sync(), sync_fragment() and start() refuse to run while a sync is in flight.
  void start(Buf params, int j = 0);
  void poll();
  double finish(Buf params);
  bool in_flight() const { return request_ != nullptr; }
  int overlap_steps() const { return cfg_.overlap_steps; }
  // Timings of the last finished overlapped sync and of all of them.
  const OverlapStats& last_overlap() const { return last_overlap_; }
  const OverlapStats& total_overlap() const { return total_overlap_; }
  // For the run summary: {"enabled", "overlap_steps", "merge_alpha", + total_overlap()}.
  nlohmann::json overlap_json() const;

  // The fragment of the last completed sync (−1: every fragment, the final sync with p > 1).
  int last_fragment() const { return last_fragment_; }
  // Completed syncs per fragment (sync() counts one for each fragment).
  std::vector<int> fragment_syncs() const;
  // Checkpoint resume: the per-fragment counts (reporting only; the schedule is a function
  // of the step). Ignored when the size is not fragments() (a checkpoint of another p).
  void set_fragment_syncs(const std::vector<int>& n);
  // Bytes this rank sent in the outer-sync collectives (cross group, ring formulas): the last
  // completed sync's (sync(): the sum over its fragments), and the largest single fragment
  // sync's — with p fragments about 1/p of the whole model's (the final sync() counts as p
  // syncs, one per fragment).
  uint64_t last_sync_sent_bytes() const { return last_sent_; }
  uint64_t peak_sync_sent_bytes() const { return peak_sent_; }
  // For the run summary: {"fragments", "rule", "schedule", "per_fragment": [{"index",
  // "layers", "elements", "syncs"}], "peak_sync_sent_bytes", "sync_sent_bytes"}.
  nlohmann::json fragments_json() const;

  Buf global_params() const { return global_; }
  Buf momentum() const { return momentum_; }
  int syncs_done() const { return syncs_; }
  bool compressed() const { return compressed_; }
  // The last sync's figures, and their sum over every sync so far (ef_norm: the last one).
  const OuterSyncStats& last_stats() const { return last_; }
  const OuterSyncStats& total_stats() const { return total_; }
  // For the run summary: settings + total_stats() (bits per kept element, density, ...).
  nlohmann::json summary_json() const;
  // The error-feedback accumulator (host, flat layout: every fragment's state at its
  // elements' places); empty without error feedback.
  std::vector<float> error_feedback() const;  // downloaded from the backend
  // Checkpoint resume: the accumulator (per rank, flat layout) and, with it, syncs_done()
  // (random_k's indices derive from the sync number) must be restored for an exact
  // continuation.
  void restore_error_feedback(const std::vector<float>& e);
  // Checkpoint resume: the number of syncs done so far (θ_global and the momentum are
  // restored by uploading into global_params() / momentum()).
  void set_syncs_done(int n) { syncs_ = n; }

 private:
  using Clock = std::chrono::steady_clock;

  // One fragment and its own compression state (null on the dense path).
  struct FragmentState {
    Fragment part;
    std::unique_ptr<compress::DeviceCompressor> compressor;
    std::unique_ptr<compress::DeviceAggregator> aggregator;  // reads compressor's plan
    int syncs = 0;
  };

  // Allocates θ_global (a copy of `params`), the momentum and the staging for `parts`.
  void init(Buf params, std::vector<Fragment> parts);
  // The pieces of a sync of fragment active_, shared by sync() and start()/finish():
  void begin(int j, const char* what);  // checks, selects fragment j, snapshots the bytes
  void pseudo_gradient(Buf params);     // delta() = θ_global − θ_local, packed, checked finite
  // Compressed path: pack → (collective on send_/recv_ or their device copies) → aggregate.
  // On the backend: only the kept elements visit the host (loco/compress/device_compressor.hpp).
  void pack_payload();          // compress delta(), exchange sizes, stage the padded piece
  bool gather_on_host() const;  // the communicator takes host memory: no device staging
  Buf gather_send();            // where the collective reads this rank's piece (I32 words)
  Buf gather_recv();            // where it writes all K pieces
  void aggregate_payloads();    // decode every piece, aggregate into delta(), fill last_
  Buf delta() const;            // the active fragment's packed pseudo-gradient (delta_ prefix)
  Buf dense_wire() const;       // what the dense all-reduce reduces: delta() or its bf16 copy
  void dense_stats();
  // Outer step on the fragment's θ_global from the averaged delta(), then its θ_local: a
  // copy of θ_global, or (merge) α·θ_local + (1 − α)·θ_global. Returns ‖Δ‖.
  double apply(Buf params, bool merge);
  uint64_t outer_sent_bytes() const;  // cross_'s model-collective bytes sent so far
  void check_not_in_flight(const char* what) const;

  OuterConfig cfg_;
  CompressionConfig ccfg_;
  Backend& backend_;
  Communicator& cross_;
  // θ_global and v: F32, flat. delta_ (F32) and wire_ (BF16 when wire_dtype = bf16): the
  // packed staging of one fragment, as large as the largest fragment.
  OwnedBuf global_, momentum_, delta_, wire_;
  std::vector<FragmentState> frags_;
  int active_ = 0;         // the fragment of the sync in progress
  int last_fragment_ = 0;  // the fragment of the last completed sync (−1: all)
  bool compressed_ = false;
  int syncs_ = 0;  // fragment syncs done (random_k's key)
  OuterSyncStats last_, total_;
  uint64_t sent_at_begin_ = 0, last_sent_ = 0, peak_sent_ = 0, total_sent_ = 0;
  // Compressed path: the staged pieces (host memory).
  std::vector<uint8_t> send_, recv_;
  OwnedBuf dev_send_, dev_recv_;       // I32 staging when the communicator takes device memory only
  std::vector<uint64_t> piece_sizes_;  // this sync's payload size per rank
  uint64_t piece_ = 0;                 // this sync's padded piece size
  // Overlap: the collective in flight (null when none) and its timings.
  std::unique_ptr<CommRequest> request_;
  Clock::time_point started_at_, completed_at_;
  bool completion_seen_ = false;
  OverlapStats last_overlap_, total_overlap_;
};

// Applies one outer SGD step to θ_global given the averaged pseudo-gradient Δ:
//   v ← μ·v + Δ;  θ ← θ − η·(Δ + μ·v) with Nesterov, θ ← θ − η·v without.
void outer_sgd_step(Backend& backend, Buf global, Buf momentum, Buf delta, double lr, double mu,
                    bool nesterov);

}  // namespace loco
