#include "loco/comm/comm_stats.hpp"

#include "loco/core/error.hpp"

namespace loco {

namespace {

// round(num / den) for 128-bit intermediates: byte figures never overflow mid-computation.
uint64_t div_round(unsigned __int128 num, unsigned __int128 den) {
  const unsigned __int128 q = (num + den / 2) / den;
  LOCO_CHECK(q <= UINT64_MAX, "communication byte count overflows 64 bits");
  return static_cast<uint64_t>(q);
}

void check_world(int K) { LOCO_CHECK(K >= 1, "communicator size must be at least 1"); }

}  // namespace

const char* comm_kind_name(CommKind kind) {
  switch (kind) {
    case CommKind::AllReduce:
      return "all_reduce";
    case CommKind::AllGather:
      return "all_gather";
    case CommKind::Broadcast:
      return "broadcast";
    case CommKind::Barrier:
      return "barrier";
    case CommKind::HostAllReduce:
      return "host_all_reduce";
    case CommKind::HostAllGather:
      return "host_all_gather";
    case CommKind::HostBroadcast:
      return "host_broadcast";
  }
  return "unknown";
}

// ------------------------------------------------------------------ formulas

uint64_t ring_allreduce_bytes(uint64_t S, int K) {
  check_world(K);
  return div_round(static_cast<unsigned __int128>(S) * 2u * unsigned(K - 1), unsigned(K));
}

uint64_t ring_allgather_bytes(uint64_t S, int K) {
  check_world(K);
  return S * uint64_t(K - 1);
}

namespace {
// Position of `rank` along the chain that starts at `root`: 0 = root, K-1 = last.
int chain_position(int K, int rank, int root) {
  check_world(K);
  LOCO_CHECK(rank >= 0 && rank < K && root >= 0 && root < K, "rank or root out of range");
  return (rank - root + K) % K;
}
}  // namespace

uint64_t chain_broadcast_sent_bytes(uint64_t S, int K, int rank, int root) {
  const int p = chain_position(K, rank, root);
  return p < K - 1 ? S : 0;
}

uint64_t chain_broadcast_recv_bytes(uint64_t S, int K, int rank, int root) {
  const int p = chain_position(K, rank, root);
  return p > 0 ? S : 0;
}

uint64_t ddp_equivalent_bytes(uint64_t n_params, uint64_t bytes_per_elem, int K, uint64_t steps) {
  check_world(K);
  const unsigned __int128 num =
      static_cast<unsigned __int128>(steps) * n_params * bytes_per_elem * 2u * unsigned(K - 1);
  return div_round(num, unsigned(K));
}

// ------------------------------------------------------------------ counters

CommCounters& CommCounters::operator+=(const CommCounters& o) {
  calls += o.calls;
  payload_bytes += o.payload_bytes;
  sent_bytes += o.sent_bytes;
  recv_bytes += o.recv_bytes;
  seconds += o.seconds;
  return *this;
}

CommCounters& CommCounters::operator-=(const CommCounters& o) {
  calls -= o.calls;
  payload_bytes -= o.payload_bytes;
  sent_bytes -= o.sent_bytes;
  recv_bytes -= o.recv_bytes;
  seconds -= o.seconds;
  return *this;
}

nlohmann::json CommCounters::to_json() const {
  return nlohmann::json{{"calls", calls},
                        {"payload_bytes", payload_bytes},
                        {"sent_bytes", sent_bytes},
                        {"recv_bytes", recv_bytes},
                        {"seconds", seconds}};
}

void CommStats::account(CommKind kind, uint64_t payload_bytes, int world_size, int rank, int root,
                        double seconds) {
  CommCounters c;
  c.calls = 1;
  c.payload_bytes = payload_bytes;
  c.seconds = seconds;
  switch (kind) {
    case CommKind::AllReduce:
    case CommKind::HostAllReduce:
      c.sent_bytes = c.recv_bytes = ring_allreduce_bytes(payload_bytes, world_size);
      break;
    case CommKind::AllGather:
    case CommKind::HostAllGather:
      c.sent_bytes = c.recv_bytes = ring_allgather_bytes(payload_bytes, world_size);
      break;
    case CommKind::Broadcast:
    case CommKind::HostBroadcast:
      c.sent_bytes = chain_broadcast_sent_bytes(payload_bytes, world_size, rank, root);
      c.recv_bytes = chain_broadcast_recv_bytes(payload_bytes, world_size, rank, root);
      break;
    case CommKind::Barrier:
      c.payload_bytes = 0;
      break;
  }
  add(kind, c);
}

void CommStats::add(CommKind kind, const CommCounters& counters) {
  by_kind_[size_t(kind)] += counters;
}

CommCounters CommStats::total() const {
  CommCounters t;
  for (const auto& c : by_kind_) t += c;
  return t;
}

CommStats& CommStats::operator+=(const CommStats& o) {
  for (size_t i = 0; i < kNumCommKinds; ++i) by_kind_[i] += o.by_kind_[i];
  return *this;
}

CommStats& CommStats::operator-=(const CommStats& o) {
  for (size_t i = 0; i < kNumCommKinds; ++i) by_kind_[i] -= o.by_kind_[i];
  return *this;
}

nlohmann::json CommStats::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (size_t i = 0; i < kNumCommKinds; ++i) j[comm_kind_name(CommKind(i))] = by_kind_[i].to_json();
  j["total"] = total().to_json();
  return j;
}

nlohmann::json CommStats::formulas_json() {
  const char* ar = "ring all-reduce: sent = recv = 2(K-1)/K * S (S = buffer bytes)";
  const char* ag = "ring all-gather: sent = recv = (K-1) * S (S = this rank's piece)";
  const char* bc =
      "pipelined chain broadcast root -> root+1 -> ... -> root-1: root sent S recv 0, "
      "last rank sent 0 recv S, others sent S recv S";
  return nlohmann::json{{"all_reduce", ar},      {"all_gather", ag},
                        {"broadcast", bc},       {"barrier", "no payload"},
                        {"host_all_reduce", ar}, {"host_all_gather", ag},
                        {"host_broadcast", bc},  {"rounding", "nearest byte"}};
}

}  // namespace loco
