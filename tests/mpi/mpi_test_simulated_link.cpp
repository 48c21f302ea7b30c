// The simulated slow link (distributed.link): values forwarded bit for bit, the simulated
// seconds per call from the ring bytes, started requests that stay incomplete until the
// simulated time has passed, control traffic unthrottled, the timeout not charged with the
// simulated delay. Runs under mpirun -np 2 and -np 4 (the ring bytes differ). No assertion
// on measured wall-clock times: only the deterministic simulated seconds and the order of
// events are checked.
#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "loco/comm/simulated_link.hpp"
#include "loco/ops/bf16.hpp"
#include "support/catch.hpp"

using namespace loco;

namespace {

constexpr double kTimeout = 60.0;  // generous: 4 ranks share 2 cores in CI

Buf host_buf(std::vector<float>& v) { return Buf{v.data(), DType::F32, v.size()}; }
Buf host_buf(std::vector<uint16_t>& v) { return Buf{v.data(), DType::BF16, v.size()}; }

// Bytes one rank sends, computed here independently of comm_stats: ring all-reduce
// 2(K-1)/K·S to the nearest byte, ring all-gather (K-1)·S.
uint64_t ring_ar(uint64_t S, int K) {
  return uint64_t(std::llround(2.0 * (K - 1) * double(S) / K));
}
uint64_t ring_ag(uint64_t S, int K) { return uint64_t(K - 1) * S; }

// latency + 8·bytes/bandwidth; a 1-rank group sends nothing and pays nothing.
double expected_seconds(const LinkModel& l, uint64_t wire_bytes, int K) {
  if (K == 1) return 0.0;
  return l.latency_ms / 1e3 + 8.0 * double(wire_bytes) / (l.bandwidth_mbps * 1e6);
}

std::unique_ptr<SimulatedLinkCommunicator> wrap_world(LinkModel link, double timeout) {
  return std::make_unique<SimulatedLinkCommunicator>(make_mpi_world(timeout), link);
}

bool same_bits(const void* a, const void* b, size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

}  // namespace

TEST_CASE("LinkModel: seconds and description", "[link]") {
  const LinkModel l{100.0, 50.0};
  CHECK(l.enabled());
  CHECK(l.seconds(1'000'000, 2) == Approx(0.05 + 0.08).epsilon(1e-12));
  CHECK(l.seconds(1'000'000, 1) == 0.0);
  CHECK(l.describe() == "100 Mbit/s, 50 ms latency");
  const LinkModel latency_only{0.0, 20.0};
  CHECK(latency_only.enabled());
  CHECK(latency_only.seconds(1'000'000'000, 4) == Approx(0.02).epsilon(1e-12));
  CHECK(latency_only.describe() == "unlimited bandwidth, 20 ms latency");
  CHECK_FALSE(LinkModel{}.enabled());
}

TEST_CASE("simulated link: values bit for bit, simulated seconds from the ring bytes",
          "[link][mpi]") {
  auto plain = make_mpi_world(kTimeout);
  // Fast enough for a quick test, slow enough that the bandwidth term is not negligible.
  const LinkModel link{2000.0, 1.5};
  auto comm = wrap_world(link, kTimeout);
  const int r = comm->rank(), K = comm->size();
  CHECK(comm->rank() == plain->rank());
  CHECK(comm->size() == plain->size());
  CHECK(comm->name().find("[simulated link: 2000 Mbit/s, 1.5 ms latency]") != std::string::npos);
  CHECK(comm->simulated_seconds() == 0.0);

  const size_t n = 10007;  // odd: 2(K-1)·S/K is not a whole number of bytes for K = 4
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = std::sin(float(i) * 0.37f + float(r)) * float(r + 1);

  // Sum and mean: the wrapper's result equals the plain communicator's, bit for bit.
  double expected_ar = 0.0;
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean}) {
    std::vector<float> a = x, b = x;
    plain->all_reduce(host_buf(a), op);
    comm->all_reduce(host_buf(b), op);
    CHECK(same_bits(a.data(), b.data(), n * sizeof(float)));
    const double one = expected_seconds(link, ring_ar(n * sizeof(float), K), K);
    CHECK(comm->simulated_seconds(CommKind::AllReduce) - expected_ar == Approx(one).epsilon(1e-9));
    expected_ar += one;
  }
  // BF16 too (2 bytes per element on the wire: different bytes, different seconds).
  std::vector<uint16_t> h(n), h2;
  for (size_t i = 0; i < n; ++i) h[i] = ops::float_to_bf16_bits(x[i]);
  h2 = h;
  plain->all_reduce(host_buf(h), ReduceOp::Mean);
  comm->all_reduce(host_buf(h2), ReduceOp::Mean);
  CHECK(h == h2);
  expected_ar += expected_seconds(link, ring_ar(n * 2, K), K);
  CHECK(comm->simulated_seconds(CommKind::AllReduce) == Approx(expected_ar).epsilon(1e-9));

  // all_gather: every rank's piece in rank order.
  const size_t piece = 3001;
  std::vector<uint8_t> mine(piece), got_plain(piece * K), got(piece * K);
  for (size_t i = 0; i < piece; ++i) mine[i] = uint8_t((i * 7 + size_t(r) * 31) & 0xff);
  plain->all_gather(host_bytes(mine.data(), piece), host_bytes(got_plain.data(), got_plain.size()));
  comm->all_gather(host_bytes(mine.data(), piece), host_bytes(got.data(), got.size()));
  CHECK(got == got_plain);
  const double ag = expected_seconds(link, ring_ag(piece, K), K);
  CHECK(comm->simulated_seconds(CommKind::AllGather) == Approx(ag).epsilon(1e-9));
  CHECK(comm->simulated_seconds() == Approx(expected_ar + ag).epsilon(1e-9));

  // Accounting: the same calls and bytes as the plain communicator recorded.
  for (CommKind k : {CommKind::AllReduce, CommKind::AllGather}) {
    CHECK(comm->stats()[k].calls == plain->stats()[k].calls);
    CHECK(comm->stats()[k].payload_bytes == plain->stats()[k].payload_bytes);
    CHECK(comm->stats()[k].sent_bytes == plain->stats()[k].sent_bytes);
    CHECK(comm->stats()[k].recv_bytes == plain->stats()[k].recv_bytes);
  }
  CHECK(comm->stats()[CommKind::AllReduce].calls == 3);
  CHECK(comm->stats()[CommKind::AllReduce].sent_bytes == 2 * ring_ar(n * 4, K) + ring_ar(n * 2, K));
  CHECK(comm->stats()[CommKind::AllGather].sent_bytes == ring_ag(piece, K));
  // The seconds include the simulated delay (the time spent inside the calls).
  CHECK(comm->stats()[CommKind::AllReduce].seconds >= expected_ar);
}

TEST_CASE("simulated link: control traffic crosses the link too (throttled)", "[link][mpi]") {
  const LinkModel link{1000.0, 3.0};  // 1 Gbit/s, 3 ms per call
  auto comm = wrap_world(link, kTimeout);
  const int r = comm->rank(), K = comm->size();
  std::vector<double> d{double(r), 1.0};
  comm->all_reduce_host(d, ReduceOp::Sum);
  CHECK(d[0] == double(K * (K - 1) / 2));
  CHECK(d[1] == double(K));
  std::vector<uint64_t> u{uint64_t(r + 1)};
  comm->all_reduce_host(u, ReduceOp::Max);
  CHECK(u[0] == uint64_t(K));
  const auto all = comm->all_gather_host(uint64_t(100 + r));
  REQUIRE(all.size() == size_t(K));
  for (int i = 0; i < K; ++i) CHECK(all[size_t(i)] == uint64_t(100 + i));
  int v = r == 0 ? 42 : 0;
  comm->broadcast_host(&v, sizeof v, 0);
  CHECK(v == 42);
  std::vector<float> b(16, r == 0 ? 3.0f : 0.0f);
  comm->broadcast(host_buf(b), 0);
  CHECK(b[15] == 3.0f);
  comm->barrier();
  // Every call paid latency + 8·(its sent bytes)/bandwidth: summed, calls·latency +
  // 8·(all sent bytes)/bandwidth, from the wrapped communicator's own accounting.
  double expected = 0.0;
  for (CommKind k : {CommKind::HostAllReduce, CommKind::HostAllGather, CommKind::HostBroadcast,
                     CommKind::Broadcast, CommKind::Barrier}) {
    const CommCounters c = comm->inner().stats()[k];
    const double s = K > 1 ? double(c.calls) * link.latency_ms / 1e3 +
                                 8.0 * double(c.sent_bytes) / (link.bandwidth_mbps * 1e6)
                           : 0.0;
    CHECK(comm->simulated_seconds(k) == Approx(s).epsilon(1e-9));
    CHECK(comm->stats()[k].seconds >= s);
    expected += s;
  }
  CHECK(comm->simulated_seconds() == Approx(expected).epsilon(1e-9));
  if (K > 1) CHECK(comm->simulated_seconds(CommKind::Barrier) == Approx(0.003).epsilon(1e-9));
  // Forwarded stats: what the wrapped communicator recorded.
  for (CommKind k : {CommKind::HostAllReduce, CommKind::HostAllGather, CommKind::HostBroadcast,
                     CommKind::Broadcast, CommKind::Barrier}) {
    CHECK(comm->stats()[k].calls == comm->inner().stats()[k].calls);
    CHECK(comm->stats()[k].sent_bytes == comm->inner().stats()[k].sent_bytes);
  }
  CHECK(comm->stats()[CommKind::HostAllReduce].calls == 2);

  // A sub-group is over the same link.
  auto sub = comm->split(r % 2, r);
  REQUIRE(sub);
  auto* sub_link = dynamic_cast<SimulatedLinkCommunicator*>(sub.get());
  REQUIRE(sub_link);
  CHECK(sub_link->link().bandwidth_mbps == link.bandwidth_mbps);
  CHECK(sub_link->link().latency_ms == link.latency_ms);
  CHECK(sub->size() == (K + 1 - r % 2) / 2);
}

TEST_CASE("simulated link: a started request completes only after the simulated time",
          "[link][mpi]") {
  // 2 s of latency: far longer than the real collective on one machine, short enough for CI.
  const LinkModel link{1000.0, 2000.0};
  auto comm = wrap_world(link, kTimeout);
  const int r = comm->rank(), K = comm->size();
  const size_t n = 4096;
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = float(r + 1) * float(i % 13);

  std::vector<float> a = x;
  auto req = comm->start_all_reduce(host_buf(a), ReduceOp::Mean);
  if (K > 1) {
    // Right after the start the simulated link cannot have delivered 2 s worth of latency.
    CHECK_FALSE(req->test());
    CHECK_FALSE(req->done());
    // Accounted at completion only, as the transport's requests are.
    CHECK(comm->stats()[CommKind::AllReduce].calls == 0);
    CHECK(comm->simulated_seconds() == 0.0);
  }
  req->wait();
  CHECK(req->done());
  CHECK(req->test());
  const float mean_scale = float(K + 1) / 2.0f;  // mean of r + 1 over r = 0..K-1
  for (size_t i = 0; i < n; ++i) REQUIRE(a[i] == float(i % 13) * mean_scale);
  CHECK(comm->stats()[CommKind::AllReduce].calls == 1);
  CHECK(comm->stats()[CommKind::AllReduce].sent_bytes == (K > 1 ? ring_ar(n * 4, K) : 0));
  CHECK(comm->simulated_seconds(CommKind::AllReduce) ==
        Approx(expected_seconds(link, ring_ar(n * 4, K), K)).epsilon(1e-9));

  // A started all-gather: same order of events, values in rank order.
  const size_t piece = 1000;
  std::vector<uint8_t> mine(piece, uint8_t(r + 1)), got(piece * K);
  auto g =
      comm->start_all_gather(host_bytes(mine.data(), piece), host_bytes(got.data(), got.size()));
  if (K > 1) CHECK_FALSE(g->test());
  g->wait();
  CHECK(g->done());
  for (int k = 0; k < K; ++k) REQUIRE(got[size_t(k) * piece] == uint8_t(k + 1));
  CHECK(comm->simulated_seconds(CommKind::AllGather) ==
        Approx(expected_seconds(link, ring_ag(piece, K), K)).epsilon(1e-9));
}

TEST_CASE("simulated link: the simulated delay does not count against timeout_s", "[link][mpi]") {
  auto aligned = make_mpi_world(kTimeout);
  // 2.5 s of simulated time per collective against a 1 s timeout: charged to the timeout, the
  // calls would throw CommTimeoutError.
  const LinkModel link{0.0, 2500.0};
  auto comm = wrap_world(link, 1.0);
  const int K = comm->size();
  std::vector<float> a(64, 1.0f);
  aligned->barrier();  // start together: the real collective is then far within the 1 s
  REQUIRE_NOTHROW(comm->all_reduce(host_buf(a), ReduceOp::Sum));
  CHECK(a[0] == float(K));
  aligned->barrier();
  auto req = comm->start_all_reduce(host_buf(a), ReduceOp::Sum);
  REQUIRE_NOTHROW(req->wait());
  CHECK(a[0] == float(K * K));
  CHECK(comm->simulated_seconds() == Approx(K > 1 ? 5.0 : 0.0).epsilon(1e-12));
}
