#include "loco/comm/simulated_link.hpp"

#include <cstdio>
#include <thread>

namespace loco {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

Clock::time_point after(Clock::time_point t0, double seconds) {
  return t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

std::string format_number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

}  // namespace

// ------------------------------------------------------------------ the link model

double LinkModel::seconds(uint64_t wire_bytes, int group_size) const {
  if (group_size <= 1) return 0.0;  // nothing leaves the process
  double s = latency_ms / 1e3;
  if (bandwidth_mbps > 0.0) s += 8.0 * double(wire_bytes) / (bandwidth_mbps * 1e6);
  return s;
}

std::string LinkModel::describe() const {
  const std::string bw =
      bandwidth_mbps > 0.0 ? format_number(bandwidth_mbps) + " Mbit/s" : "unlimited bandwidth";
  return bw + ", " + format_number(latency_ms) + " ms latency";
}

// ------------------------------------------------------------------ started requests

// Completes once the wrapped request has and the simulated completion time has passed.
class SimulatedLinkCommunicator::Request final : public CommRequest {
 public:
  Request(SimulatedLinkCommunicator& comm, std::unique_ptr<CommRequest> inner, CommKind kind,
          uint64_t payload_bytes, Clock::time_point t0, double delay)
      : comm_(comm),
        inner_(std::move(inner)),
        kind_(kind),
        payload_bytes_(payload_bytes),
        due_(after(t0, delay)),
        seconds_(since(t0)) {}

  bool test() override {
    if (done_) return true;
    const auto t0 = Clock::now();
    const bool real_done = inner_->test();  // progress, as the wrapped transport needs it
    seconds_ += since(t0);
    if (real_done && Clock::now() >= due_) complete();
    return done_;
  }

  void wait() override {
    if (done_) return;
    const auto t0 = Clock::now();
    inner_->wait();  // bounded by timeout_s; the simulated remainder below is not
    std::this_thread::sleep_until(due_);
    seconds_ += since(t0);
    complete();
  }

  bool done() const override { return done_; }

 private:
  void complete() {
    comm_.account(kind_, payload_bytes_, seconds_);
    done_ = true;
  }

  SimulatedLinkCommunicator& comm_;
  std::unique_ptr<CommRequest> inner_;  // destroyed in flight: the wrapped comm is abandoned
  CommKind kind_;
  uint64_t payload_bytes_;
  Clock::time_point due_;
  double seconds_;  // spent inside this request's calls (start, test()s, wait())
  bool done_ = false;
};

// ------------------------------------------------------------------ the communicator

SimulatedLinkCommunicator::SimulatedLinkCommunicator(std::unique_ptr<Communicator> inner,
                                                     LinkModel link)
    : Communicator(inner ? inner->timeout_s() : 0.0),
      owned_(std::move(inner)),
      inner_(owned_.get()),
      link_(link) {
  if (!inner_) throw Error("SimulatedLinkCommunicator: no communicator to wrap");
}

SimulatedLinkCommunicator::SimulatedLinkCommunicator(Communicator& inner, LinkModel link)
    : Communicator(inner.timeout_s()), inner_(&inner), link_(link) {}

template <typename F>
void SimulatedLinkCommunicator::throttled(F&& call) {
  const auto t0 = Clock::now();
  const CommStats before = inner_->stats();
  call();
  const CommStats delta = inner_->stats() - before;
  const double delay = link_.seconds(delta.total().sent_bytes, size());
  std::this_thread::sleep_until(after(t0, delay));
  const double seconds = since(t0);
  // One call, of one kind: it gets the delay and the whole time spent.
  for (size_t k = 0; k < kNumCommKinds; ++k) {
    CommCounters c = delta[CommKind(k)];
    if (c.calls == 0) continue;
    c.seconds = seconds;
    stats_.add(CommKind(k), c);
    simulated_[k] += delay;
    break;
  }
}

std::string SimulatedLinkCommunicator::name() const {
  return inner_->name() + " [simulated link: " + link_.describe() + "]";
}

double SimulatedLinkCommunicator::delay_for(CommKind kind, uint64_t payload_bytes) const {
  // The bytes this rank sends, exactly as CommStats::account counts them.
  const int K = size();
  const uint64_t wire = kind == CommKind::AllReduce ? ring_allreduce_bytes(payload_bytes, K)
                                                    : ring_allgather_bytes(payload_bytes, K);
  return link_.seconds(wire, K);
}

void SimulatedLinkCommunicator::account(CommKind kind, uint64_t payload_bytes, double seconds) {
  stats_.account(kind, payload_bytes, size(), rank(), 0, seconds);
  simulated_[size_t(kind)] += delay_for(kind, payload_bytes);
}

void SimulatedLinkCommunicator::do_all_reduce(Buf buf, ReduceOp op) {
  const auto t0 = Clock::now();
  inner_->all_reduce(buf, op);
  std::this_thread::sleep_until(after(t0, delay_for(CommKind::AllReduce, buf.bytes())));
  account(CommKind::AllReduce, buf.bytes(), since(t0));
}

void SimulatedLinkCommunicator::do_all_gather(Buf send_piece, Buf recv_all) {
  const size_t piece_bytes = send_piece.bytes();
  const auto t0 = Clock::now();
  inner_->all_gather(send_piece, recv_all);
  std::this_thread::sleep_until(after(t0, delay_for(CommKind::AllGather, piece_bytes)));
  account(CommKind::AllGather, piece_bytes, since(t0));
}

std::unique_ptr<CommRequest> SimulatedLinkCommunicator::do_start_all_reduce(Buf buf, ReduceOp op) {
  const auto t0 = Clock::now();
  auto inner = inner_->start_all_reduce(buf, op);
  return std::make_unique<Request>(*this, std::move(inner), CommKind::AllReduce, buf.bytes(), t0,
                                   delay_for(CommKind::AllReduce, buf.bytes()));
}

std::unique_ptr<CommRequest> SimulatedLinkCommunicator::do_start_all_gather(Buf send_piece,
                                                                            Buf recv_all) {
  const size_t piece_bytes = send_piece.bytes();
  const auto t0 = Clock::now();
  auto inner = inner_->start_all_gather(send_piece, recv_all);
  return std::make_unique<Request>(*this, std::move(inner), CommKind::AllGather, piece_bytes, t0,
                                   delay_for(CommKind::AllGather, piece_bytes));
}

// Broadcasts, barriers and the host collectives cross the same link: throttled, blocking.
void SimulatedLinkCommunicator::do_broadcast(Buf buf, int root) {
  throttled([&] { inner_->broadcast(buf, root); });
}

void SimulatedLinkCommunicator::barrier() {
  throttled([&] { inner_->barrier(); });
}

std::unique_ptr<Communicator> SimulatedLinkCommunicator::split(int color, int key) {
  const CommStats before = inner_->stats();
  auto child = inner_->split(color, key);
  add_inner_since(before);
  if (!child) return nullptr;
  return std::make_unique<SimulatedLinkCommunicator>(std::move(child), link_);
}

void SimulatedLinkCommunicator::all_reduce_host(std::vector<double>& values, ReduceOp op) {
  throttled([&] { inner_->all_reduce_host(values, op); });
}

void SimulatedLinkCommunicator::all_reduce_host(std::vector<uint64_t>& values, ReduceOp op) {
  throttled([&] { inner_->all_reduce_host(values, op); });
}

std::vector<uint64_t> SimulatedLinkCommunicator::all_gather_host(
    const std::vector<uint64_t>& values) {
  std::vector<uint64_t> out;
  throttled([&] { out = inner_->all_gather_host(values); });
  return out;
}

void SimulatedLinkCommunicator::broadcast_host(void* data, size_t bytes, int root) {
  throttled([&] { inner_->broadcast_host(data, bytes, root); });
}

double SimulatedLinkCommunicator::simulated_seconds() const {
  double s = 0.0;
  for (double x : simulated_) s += x;
  return s;
}

nlohmann::json SimulatedLinkCommunicator::to_json() const {
  return {{"simulated", true},
          {"bandwidth_mbps", link_.bandwidth_mbps},
          {"latency_ms", link_.latency_ms},
          {"description", "simulated link: " + link_.describe()},
          {"simulated_seconds", simulated_seconds()},
          {"note",
           "every collective between replicas (the outer syncs and the small host exchanges) "
           "was slowed down to this link's speed on one "
           "machine; the times are not those of a real network"}};
}

}  // namespace loco
