// A simulated slow link (distributed.link): a Communicator that wraps another one and makes
// its collectives take as long as they would over a link of a given bandwidth and latency.
// All ranks of a run usually share one machine, where a collective finishes in microseconds,
// so what overlapping the outer sync buys (Streaming DiLoCo) cannot be seen; the runtime wraps
// every communicator that spans replicas (the cross group and the world) in this, so that all
// traffic between replicas, model and host alike, pays for the link.
//
// Semantics:
//  - Every call is forwarded to the wrapped communicator: values are its values, bit for bit.
//  - all_reduce, all_gather and their started forms complete no earlier than
//        start + latency + 8 · wire_bytes / bandwidth
//    where wire_bytes is what this rank sends for the call by the accounting's ring formulas
//    (ring_allreduce_bytes / ring_allgather_bytes, comm_stats.hpp). A 1-rank group sends
//    nothing and pays nothing (no latency either: no message leaves the process).
//    A blocking call runs the real collective, then sleeps for what is left. A started
//    request's test() says false until the real request is done and the simulated completion
//    time has passed; wait() waits for the real request, then sleeps until that time.
//    Each collective gets the whole link: concurrent calls are not queued behind each other
//    (the trainer has at most one outer sync in flight).
//  - broadcast, barrier and the small host collectives (loss averages, hashes, payload
//    sizes, stop flags) are throttled the same way, blocking: latency + 8 · the bytes this
//    rank sends for them by the accounting's formulas / bandwidth (a barrier: the latency).
//    Only split() (start-up) is forwarded unthrottled.
//  - Timeouts: the wrapped communicator bounds the real collective by timeout_s() as always;
//    the simulated delay is added after it and never counts against timeout_s (a slow link is
//    not a dead peer). Every rank of a group sleeps the same time for the same call, so a peer
//    is never left waiting in a later collective for more than the skew between the ranks.
//  - stats(): the same calls and bytes as the wrapped communicator would record (the same
//    CommStats::account), with seconds = the time this rank spent inside the calls, the
//    simulated delay included (as on a real slow link). The simulated delay alone is kept
//    apart, per kind, in simulated_seconds(): deterministic from the bytes, so it can be
//    checked without timing anything.
//  - split() wraps the child with the same link. set_timeout_s() on the wrapper does not reach
//    the wrapped communicator: set the timeout before wrapping.
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loco/comm/communicator.hpp"

namespace loco {

struct LinkModel {
  double bandwidth_mbps = 0.0;  // megabits (1e6 bits) per second; 0 = unlimited
  double latency_ms = 0.0;      // per collective

  bool enabled() const { return bandwidth_mbps > 0.0 || latency_ms > 0.0; }
  // latency + 8 · wire_bytes / bandwidth, in seconds; 0 for a group of one rank.
  double seconds(uint64_t wire_bytes, int group_size) const;
  // "100 Mbit/s, 50 ms latency" ("unlimited bandwidth" when bandwidth_mbps = 0).
  std::string describe() const;
};

class SimulatedLinkCommunicator final : public Communicator {
 public:
  SimulatedLinkCommunicator(std::unique_ptr<Communicator> inner, LinkModel link);
  // Wraps a communicator owned elsewhere (the MPI world), which must outlive this.
  SimulatedLinkCommunicator(Communicator& inner, LinkModel link);

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string name() const override;
  bool accepts(MemSpace space) const override { return inner_->accepts(space); }

  void barrier() override;
  std::unique_ptr<Communicator> split(int color, int key) override;

  void all_reduce_host(std::vector<double>& values, ReduceOp op) override;
  void all_reduce_host(std::vector<uint64_t>& values, ReduceOp op) override;
  std::vector<uint64_t> all_gather_host(const std::vector<uint64_t>& values) override;
  using Communicator::all_gather_host;
  void broadcast_host(void* data, size_t bytes, int root) override;
  using Communicator::all_reduce_host;

  const LinkModel& link() const { return link_; }
  Communicator& inner() { return *inner_; }
  // Simulated link seconds charged so far (accounted when a call completes), per kind.
  double simulated_seconds(CommKind kind) const { return simulated_[size_t(kind)]; }
  double simulated_seconds() const;  // over every kind
  // {"simulated": true, "bandwidth_mbps", "latency_ms", "description" ("simulated link: ..."),
  //  "simulated_seconds", "note"}: for the run's summary
  nlohmann::json to_json() const;

 protected:
  void do_all_reduce(Buf buf, ReduceOp op) override;
  void do_all_gather(Buf send_piece, Buf recv_all) override;
  std::unique_ptr<CommRequest> do_start_all_reduce(Buf buf, ReduceOp op) override;
  std::unique_ptr<CommRequest> do_start_all_gather(Buf send_piece, Buf recv_all) override;
  void do_broadcast(Buf buf, int root) override;

 private:
  class Request;
  using Clock = std::chrono::steady_clock;

  // After a forwarded (unthrottled) call: add what the wrapped communicator recorded for it.
  void add_inner_since(const CommStats& before) { stats_ += inner_->stats() - before; }
  // Runs a small blocking call on the wrapped communicator, then sleeps for what is left of
  // its simulated time, and accounts it (seconds: inside the call, the delay included).
  template <typename F>
  void throttled(F&& call);
  // Records a throttled call once it has completed.
  void account(CommKind kind, uint64_t payload_bytes, double seconds);
  // The simulated seconds of one throttled call of `payload_bytes` (this rank's buffer/piece).
  double delay_for(CommKind kind, uint64_t payload_bytes) const;

  std::unique_ptr<Communicator> owned_;  // null when wrapping a borrowed communicator
  Communicator* inner_ = nullptr;
  LinkModel link_;
  std::array<double, kNumCommKinds> simulated_{};
};

}  // namespace loco
