// Communication accounting (docs/algorithms.md §9). Every Communicator call records, per kind of
// collective: calls, the logical payload, the bytes this rank put on the wire (sent) and took
// off it (received) as the collective's algorithm moves them, and the wall time spent in the
// call (waiting for slow peers included). A started (non-blocking) collective is counted once,
// at completion, with the same bytes; its time is what this rank spent inside the calls (the
// start, the test()s and the wait()), not the computation it overlapped.
//
// Formulas (S = payload bytes of this rank's buffer, K = ranks in the communicator; K = 1
// moves nothing):
//   all_reduce  (ring: reduce-scatter + all-gather)   sent = recv = 2(K-1)/K · S
//   all_gather  (ring, one S-byte piece per rank)     sent = recv = (K-1) · S
//               payload = S, the piece this rank contributes (it receives K·S in all)
//   broadcast   (pipelined chain in ring order, as NCCL's ring broadcast moves data:
//               root -> root+1 -> ... -> root-1)
//               root:                   sent = S, recv = 0
//               every other rank:       sent = S, recv = S
//               the last one (root-1):  sent = 0, recv = S
//               Over all ranks, sent = recv = (K-1) · S.
//   barrier     no payload: calls and time only
// The host_* kinds are the same collectives on small host vectors (hashes, checksums, loss
// averages, rank names); they are counted apart so that the model-sync figures stay clean,
// and included in total().
// Fractional byte counts (2(K-1)·S not divisible by K) are rounded to the nearest byte.
// The figures depend only on the call, never on the transport: MPI and NCCL report the same.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace loco {

enum class CommKind : uint8_t {
  AllReduce,
  AllGather,
  Broadcast,
  Barrier,
  HostAllReduce,
  HostAllGather,
  HostBroadcast,
};
inline constexpr size_t kNumCommKinds = 7;
const char* comm_kind_name(CommKind kind);  // "all_reduce", "host_all_gather", ...

struct CommCounters {
  uint64_t calls = 0;
  uint64_t payload_bytes = 0;
  uint64_t sent_bytes = 0;
  uint64_t recv_bytes = 0;
  double seconds = 0.0;

  CommCounters& operator+=(const CommCounters& o);
  CommCounters& operator-=(const CommCounters& o);
  nlohmann::json to_json() const;
  bool operator==(const CommCounters& o) const = default;
};

// Per-kind counters of one communicator. A value type: copy it to take a snapshot, subtract
// two snapshots for the figures of an interval (one outer step), add the stats of several
// communicators (world + sub-groups) for a rank's total.
class CommStats {
 public:
  // Records one call; sent/recv follow the formulas above. `root` matters for broadcasts only.
  void account(CommKind kind, uint64_t payload_bytes, int world_size, int rank, int root,
               double seconds);
  // Records one call with explicit figures.
  void add(CommKind kind, const CommCounters& counters);

  const CommCounters& operator[](CommKind kind) const { return by_kind_[size_t(kind)]; }
  CommCounters total() const;  // sum over every kind
  void reset() { by_kind_ = {}; }

  CommStats& operator+=(const CommStats& o);
  CommStats& operator-=(const CommStats& o);
  friend CommStats operator+(CommStats a, const CommStats& b) { return a += b; }
  friend CommStats operator-(CommStats a, const CommStats& b) { return a -= b; }
  bool operator==(const CommStats& o) const = default;

  // {"all_reduce": {"calls", "payload_bytes", "sent_bytes", "recv_bytes", "seconds"}, ...,
  //  "total": {...}}: every kind is always present, so metric lines have a fixed schema.
  nlohmann::json to_json() const;
  // {"all_reduce": "ring: sent = recv = 2(K-1)/K * S", ...}: the formula behind each figure,
  // for a run's header / summary.
  static nlohmann::json formulas_json();

 private:
  std::array<CommCounters, kNumCommKinds> by_kind_{};
};

// ------------------------------------------------------------------ pure formulas
// Bytes one rank sends (= receives) in a ring all-reduce of an S-byte buffer: 2(K-1)/K · S.
uint64_t ring_allreduce_bytes(uint64_t S, int K);
// Bytes one rank sends (= receives) in a ring all-gather of one S-byte piece per rank.
uint64_t ring_allgather_bytes(uint64_t S, int K);
// Pipelined chain broadcast of S bytes from `root`, as described above.
uint64_t chain_broadcast_sent_bytes(uint64_t S, int K, int rank, int root);
uint64_t chain_broadcast_recv_bytes(uint64_t S, int K, int rank, int root);
// What DDP would have sent per rank (each way) over `steps` steps for the same tokens:
// steps · 2(K-1)/K · N · b, computed exactly and rounded once.
uint64_t ddp_equivalent_bytes(uint64_t n_params, uint64_t bytes_per_elem, int K, uint64_t steps);

}  // namespace loco
