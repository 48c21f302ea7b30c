// MPI communicator: values, ordering, sub-groups and accounting. Runs under mpirun -np 2 and
// -np 4 (and as a 1-rank world without mpirun). Every expected value is computed here from the
// rank count, independently of the library's formulas.
#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "loco/comm/communicator.hpp"
#include "loco/ops/bf16.hpp"
#include "support/catch.hpp"

using namespace loco;

namespace {

constexpr double kTimeout = 60.0;  // generous: 4 ranks share 2 cores in CI

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int k = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &k);
  return k;
}

Buf host_buf(std::vector<float>& v) { return Buf{v.data(), DType::F32, v.size()}; }
Buf host_buf(std::vector<uint16_t>& v) { return Buf{v.data(), DType::BF16, v.size()}; }
Buf host_buf(std::vector<int32_t>& v) { return Buf{v.data(), DType::I32, v.size()}; }

// Ring all-reduce bytes, computed here independently: 2(K-1)/K·S to the nearest byte.
uint64_t ring_ar(uint64_t S, int K) {
  return uint64_t(std::llround(2.0 * (K - 1) * double(S) / K));
}

uint16_t bf(float x) { return ops::float_to_bf16_bits(x); }
float unbf(uint16_t b) { return ops::bf16_bits_to_float(b); }

}  // namespace

TEST_CASE("world communicator matches MPI_COMM_WORLD", "[comm][mpi]") {
  MpiRuntime runtime;  // MPI already initialised by the test main: must neither re-init nor
  CHECK_FALSE(runtime.initialised_here());  // finalise
  auto comm = make_mpi_world(kTimeout);
  CHECK(comm->rank() == world_rank());
  CHECK(comm->size() == world_size());
  CHECK(comm->accepts(MemSpace::Host));
  CHECK_FALSE(comm->accepts(MemSpace::Device));
  CHECK(comm->name() == "mpi:world");
  CHECK(comm->timeout_s() == kTimeout);
  const int local = node_local_rank();
  CHECK(local >= 0);
  CHECK(local < node_local_size());
  CHECK(node_local_size() <= world_size());
}

TEST_CASE("all_reduce f32 sum, mean, max, min are exact", "[comm][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  const int r = comm->rank(), K = comm->size();
  const size_t n = 1000;

  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = float((r + 1) * (int(i) + 1));
  comm->all_reduce(host_buf(v), ReduceOp::Sum);
  for (size_t i = 0; i < n; ++i) REQUIRE(v[i] == float(K * (K + 1) / 2 * (int(i) + 1)));

  // mean of 2r + i over r = 0..K-1 is (K-1) + i: exact
  for (size_t i = 0; i < n; ++i) v[i] = float(2 * r + int(i));
  comm->all_reduce(host_buf(v), ReduceOp::Mean);
  for (size_t i = 0; i < n; ++i) REQUIRE(v[i] == float(K - 1 + int(i)));

  for (size_t i = 0; i < n; ++i) v[i] = float((i % 2 ? 1 : -1) * r) - 0.5f;
  std::vector<float> w = v;
  comm->all_reduce(host_buf(v), ReduceOp::Max);
  comm->all_reduce(host_buf(w), ReduceOp::Min);
  for (size_t i = 0; i < n; ++i) {
    REQUIRE(v[i] == (i % 2 ? float(K - 1) - 0.5f : -0.5f));
    REQUIRE(w[i] == (i % 2 ? -0.5f : -float(K - 1) - 0.5f));
  }
}

TEST_CASE("all_reduce bf16 reduces bf16 values, not their bit patterns", "[comm][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  const int r = comm->rank(), K = comm->size();
  const size_t n = 513;  // odd: no hidden 4-byte assumptions

  std::vector<uint16_t> v(n);
  // (r+1)*(i%8+1) and sums up to 10*8 = 80 are integers below 256: exact in bf16.
  for (size_t i = 0; i < n; ++i) v[i] = bf(float((r + 1) * (int(i % 8) + 1)));
  comm->all_reduce(host_buf(v), ReduceOp::Sum);
  for (size_t i = 0; i < n; ++i) REQUIRE(unbf(v[i]) == float(K * (K + 1) / 2 * (int(i % 8) + 1)));

  // mean of 2r + i%16 is (K-1) + i%16, exact; also fractional: mean of (r + 0.5) = K/2.
  for (size_t i = 0; i < n; ++i) v[i] = bf(float(2 * r + int(i % 16)));
  comm->all_reduce(host_buf(v), ReduceOp::Mean);
  for (size_t i = 0; i < n; ++i) REQUIRE(unbf(v[i]) == float(K - 1 + int(i % 16)));
  for (size_t i = 0; i < n; ++i) v[i] = bf(float(r) + 0.5f);
  comm->all_reduce(host_buf(v), ReduceOp::Mean);
  for (size_t i = 0; i < n; ++i) REQUIRE(unbf(v[i]) == float(K) / 2.0f);

  // Negative values: an integer add of bit patterns would get these wrong.
  for (size_t i = 0; i < n; ++i) v[i] = bf(r % 2 ? -1.5f : 0.25f);
  comm->all_reduce(host_buf(v), ReduceOp::Sum);
  const float expected = float(K / 2) * -1.5f + float(K - K / 2) * 0.25f;
  for (size_t i = 0; i < n; ++i) REQUIRE(unbf(v[i]) == expected);

  for (size_t i = 0; i < n; ++i) v[i] = bf(-float(r));
  comm->all_reduce(host_buf(v), ReduceOp::Max);
  for (size_t i = 0; i < n; ++i) REQUIRE(unbf(v[i]) == 0.0f);
  for (size_t i = 0; i < n; ++i) v[i] = bf(-float(r));
  comm->all_reduce(host_buf(v), ReduceOp::Min);
  for (size_t i = 0; i < n; ++i) REQUIRE(unbf(v[i]) == -float(K - 1));
}

TEST_CASE("all_reduce i32 sum and max; mean is refused", "[comm][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  const int r = comm->rank(), K = comm->size();
  std::vector<int32_t> v{r, -r, 1000 * r};
  comm->all_reduce(host_buf(v), ReduceOp::Sum);
  CHECK(v == std::vector<int32_t>{K * (K - 1) / 2, -K * (K - 1) / 2, 1000 * K * (K - 1) / 2});
  std::vector<int32_t> m{r};
  comm->all_reduce(host_buf(m), ReduceOp::Max);
  CHECK(m[0] == K - 1);
  // Refused before any communication on every rank alike, so the ranks stay in step.
  CHECK_THROWS_AS(comm->all_reduce(host_buf(m), ReduceOp::Mean), Error);
}

TEST_CASE("all_gather puts pieces in rank order", "[comm][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  const int r = comm->rank(), K = comm->size();
  const size_t piece = 3;

  std::vector<float> send(piece), recv(piece * size_t(K), -1.0f);
  for (size_t j = 0; j < piece; ++j) send[j] = float(10 * r + int(j));
  comm->all_gather(host_buf(send), host_buf(recv));
  for (int q = 0; q < K; ++q)
    for (size_t j = 0; j < piece; ++j)
      REQUIRE(recv[size_t(q) * piece + j] == float(10 * q + int(j)));

  // In place: the send piece is this rank's own slot of the receive buffer.
  std::vector<float> all(piece * size_t(K), -1.0f);
  for (size_t j = 0; j < piece; ++j) all[size_t(r) * piece + j] = float(7 * r + int(j));
  Buf all_buf = host_buf(all);
  comm->all_gather(all_buf.slice(size_t(r) * piece, piece), all_buf);
  for (int q = 0; q < K; ++q)
    for (size_t j = 0; j < piece; ++j) REQUIRE(all[size_t(q) * piece + j] == float(7 * q + int(j)));

  // Mismatched shapes are refused locally.
  std::vector<float> small(piece);
  if (K > 1) {
    CHECK_THROWS_AS(comm->all_gather(host_buf(send), host_buf(small)), Error);
  }
  std::vector<int32_t> wrong_type(piece * size_t(K));
  CHECK_THROWS_AS(comm->all_gather(host_buf(send), host_buf(wrong_type)), Error);
}

TEST_CASE("all_gather carries odd-sized packed payloads (u8)", "[comm][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  const int r = comm->rank(), K = comm->size();
  const size_t piece = 13;
  std::vector<unsigned char> send(piece), recv(piece * size_t(K), 0);
  for (size_t j = 0; j < piece; ++j)
    send[j] = static_cast<unsigned char>(31 * r + 7 * int(j) + 200);
  comm->all_gather(host_bytes(send.data(), piece), host_bytes(recv.data(), piece * size_t(K)));
  for (int q = 0; q < K; ++q)
    for (size_t j = 0; j < piece; ++j)
      REQUIRE(recv[size_t(q) * piece + j] == static_cast<unsigned char>(31 * q + 7 * int(j) + 200));

  // Empty pieces are legal (a rank with nothing selected still takes part).
  comm->all_gather(host_bytes(send.data(), 0), host_bytes(recv.data(), 0));
  CHECK(comm->stats()[CommKind::AllGather].calls == 2);
}

TEST_CASE("broadcast from the last rank reaches everyone", "[comm][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  const int r = comm->rank(), K = comm->size();
  const int root = K - 1;  // non-zero whenever K > 1
  std::vector<float> v(257, float(-r - 1));
  if (r == root)
    for (size_t i = 0; i < v.size(); ++i) v[i] = float(i) * 0.5f + 3.0f;
  comm->broadcast(host_buf(v), root);
  for (size_t i = 0; i < v.size(); ++i) REQUIRE(v[i] == float(i) * 0.5f + 3.0f);

  uint64_t seed = r == root ? 0xDEADBEEFCAFEull : uint64_t(r);
  comm->broadcast_host(&seed, sizeof seed, root);
  CHECK(seed == 0xDEADBEEFCAFEull);

  CHECK_THROWS_AS(comm->broadcast(host_buf(v), K), Error);  // not a rank: refused locally
}

TEST_CASE("split into groups by rank%2 and rank/2, reduce within each", "[comm][mpi]") {
  auto world = make_mpi_world(kTimeout);
  const int r = world->rank(), K = world->size();

  // Color r%2 ("cross-replica" style): members are r%2, r%2+2, ...
  auto parity = world->split(r % 2, r);
  REQUIRE(parity);
  int members = 0, rank_sum = 0;
  for (int q = 0; q < K; ++q)
    if (q % 2 == r % 2) ++members, rank_sum += q;
  CHECK(parity->size() == members);
  CHECK(parity->rank() == r / 2);  // keys = world rank keep the order
  CHECK(parity->name() == "mpi:world/split(color=" + std::to_string(r % 2) + ")");
  std::vector<float> v{float(r), 1.0f};
  parity->all_reduce(host_buf(v), ReduceOp::Sum);
  CHECK(v[0] == float(rank_sum));
  CHECK(v[1] == float(members));

  // Color r/2 ("replica" style): consecutive pairs.
  auto pairs = world->split(r / 2, r);
  REQUIRE(pairs);
  members = 0, rank_sum = 0;
  for (int q = 0; q < K; ++q)
    if (q / 2 == r / 2) ++members, rank_sum += q;
  CHECK(pairs->size() == members);
  CHECK(pairs->rank() == r % 2);
  std::vector<double> d{double(r)};
  pairs->all_reduce_host(d, ReduceOp::Sum);
  CHECK(d[0] == double(rank_sum));

  // Reversed keys reverse the order within the group.
  auto reversed = world->split(0, K - r);
  REQUIRE(reversed);
  CHECK(reversed->rank() == K - 1 - r);

  // A negative color leaves the rank out.
  auto odd_only = world->split(r % 2 == 1 ? 0 : -1, r);
  CHECK((odd_only != nullptr) == (r % 2 == 1));
  if (odd_only) CHECK(odd_only->size() == K / 2);

  // Groups of one: the K = 1 case, everything works and nothing goes on the wire.
  auto alone = world->split(r, 0);
  REQUIRE(alone);
  CHECK(alone->size() == 1);
  CHECK(alone->rank() == 0);
  std::vector<float> x{2.5f, -1.0f};
  alone->all_reduce(host_buf(x), ReduceOp::Mean);
  CHECK(x == std::vector<float>{2.5f, -1.0f});
  std::vector<float> g(2);
  alone->all_gather(host_buf(x), host_buf(g));
  CHECK(g == x);
  alone->barrier();
  CHECK(alone->stats().total().calls == 3);
  CHECK(alone->stats().total().sent_bytes == 0);
  CHECK(alone->stats().total().recv_bytes == 0);
}

TEST_CASE("accounting follows the ring formulas", "[comm][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  const int r = comm->rank(), K = comm->size();
  CHECK(comm->stats().total().calls == 0);

  std::vector<float> v(4096, 1.0f);  // S = 16384 bytes
  comm->all_reduce(host_buf(v), ReduceOp::Sum);
  const uint64_t S = 16384;
  const auto& ar = comm->stats()[CommKind::AllReduce];
  CHECK(ar.calls == 1);
  CHECK(ar.payload_bytes == S);
  CHECK(ar.sent_bytes == ring_ar(S, K));  // K=2: 16384, K=4: 24576
  CHECK(ar.recv_bytes == ar.sent_bytes);
  CHECK(ar.seconds > 0.0);

  const CommStats before = comm->stats();

  std::vector<uint16_t> h(1000);  // bf16: counted at 2 bytes per element
  comm->all_reduce(host_buf(h), ReduceOp::Sum);

  std::vector<unsigned char> piece(100), all(100 * size_t(K));
  comm->all_gather(host_bytes(piece.data(), piece.size()), host_bytes(all.data(), all.size()));

  std::vector<float> b(64);  // 256 bytes from root 0: chain 0 -> 1 -> ... -> K-1
  comm->broadcast(host_buf(b), 0);
  comm->barrier();
  std::vector<double> loss{1.0, 2.0};
  comm->all_reduce_host(loss, ReduceOp::Mean);
  (void)comm->all_gather_host(42);

  const CommStats d = comm->stats() - before;
  CHECK(d[CommKind::AllReduce].calls == 1);
  CHECK(d[CommKind::AllReduce].payload_bytes == 2000);
  CHECK(d[CommKind::AllReduce].sent_bytes == ring_ar(2000, K));
  CHECK(d[CommKind::AllGather].calls == 1);
  CHECK(d[CommKind::AllGather].payload_bytes == 100);
  CHECK(d[CommKind::AllGather].sent_bytes == uint64_t(K - 1) * 100);
  CHECK(d[CommKind::AllGather].recv_bytes == uint64_t(K - 1) * 100);
  CHECK(d[CommKind::Broadcast].calls == 1);
  CHECK(d[CommKind::Broadcast].sent_bytes == (r < K - 1 ? 256u : 0u));
  CHECK(d[CommKind::Broadcast].recv_bytes == (r > 0 ? 256u : 0u));
  CHECK(d[CommKind::Barrier].calls == 1);
  CHECK(d[CommKind::Barrier].sent_bytes == 0);
  CHECK(d[CommKind::HostAllReduce].calls == 1);
  CHECK(d[CommKind::HostAllReduce].sent_bytes == ring_ar(16, K));
  CHECK(d[CommKind::HostAllGather].calls == 1);
  CHECK(d[CommKind::HostAllGather].sent_bytes == uint64_t(K - 1) * 8);
  CHECK(d.total().calls == 6);
  // The earlier all-reduce is not in the delta, but is in the cumulative figures.
  CHECK(comm->stats()[CommKind::AllReduce].calls == 2);

  // Broadcast bytes over all ranks: sent == received == (K-1)·S.
  std::vector<double> totals{double(d[CommKind::Broadcast].sent_bytes),
                             double(d[CommKind::Broadcast].recv_bytes)};
  comm->all_reduce_host(totals, ReduceOp::Sum);
  CHECK(totals[0] == double((K - 1) * 256));
  CHECK(totals[1] == double((K - 1) * 256));

  comm->reset_stats();
  CHECK(comm->stats().total().calls == 0);
}

TEST_CASE("host reductions and gathers", "[comm][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  const int r = comm->rank(), K = comm->size();

  std::vector<double> d{double(r), -double(r), 0.25 * r + 1.0};
  std::vector<double> mx = d, mn = d, mean = d;
  comm->all_reduce_host(d, ReduceOp::Sum);
  CHECK(d ==
        std::vector<double>{K * (K - 1) / 2.0, -K * (K - 1) / 2.0, 0.25 * K * (K - 1) / 2.0 + K});
  comm->all_reduce_host(mx, ReduceOp::Max);
  CHECK(mx == std::vector<double>{double(K - 1), 0.0, 0.25 * (K - 1) + 1.0});
  comm->all_reduce_host(mn, ReduceOp::Min);
  CHECK(mn == std::vector<double>{0.0, -double(K - 1), 1.0});
  comm->all_reduce_host(mean, ReduceOp::Mean);
  CHECK(mean[0] == (K - 1) / 2.0);
  CHECK(comm->all_reduce_host(double(r + 1), ReduceOp::Sum) == K * (K + 1) / 2.0);

  // uint64 values above 2^53: doubles could not carry them.
  const uint64_t big = (uint64_t(1) << 60) + 1;
  std::vector<uint64_t> u{big + uint64_t(r), uint64_t(r)};
  std::vector<uint64_t> umax = u, umin = u;
  comm->all_reduce_host(u, ReduceOp::Sum);
  CHECK(u[0] == big * uint64_t(K) + uint64_t(K * (K - 1) / 2));
  comm->all_reduce_host(umax, ReduceOp::Max);
  CHECK(umax[0] == big + uint64_t(K - 1));
  comm->all_reduce_host(umin, ReduceOp::Min);
  CHECK(umin[1] == 0);
  CHECK_THROWS_AS(comm->all_reduce_host(u, ReduceOp::Mean), Error);

  // Gather per-rank hashes; one rank disagreeing is named by every rank.
  const std::vector<uint64_t> all = comm->all_gather_host(1000 + uint64_t(r) * 3);
  REQUIRE(all.size() == size_t(K));
  for (int q = 0; q < K; ++q) CHECK(all[size_t(q)] == 1000 + uint64_t(q) * 3);
  const uint64_t hash = (K > 2 && r == 2) ? 0xBAD : 0x600D;
  const std::vector<uint64_t> hashes = comm->all_gather_host(hash);
  if (K > 2)
    CHECK(mismatching_ranks(hashes) == std::vector<int>{2});
  else
    CHECK(mismatching_ranks(hashes).empty());

  std::vector<double> empty;
  comm->all_reduce_host(empty, ReduceOp::Sum);  // zero-length is fine
  CHECK(empty.empty());
}

TEST_CASE("communicators are independent of each other and of MPI_COMM_WORLD", "[comm][mpi]") {
  auto a = make_mpi_world(kTimeout);
  auto b = make_mpi_world(kTimeout);
  const int r = a->rank(), K = a->size();
  std::vector<float> x{float(r)}, y{1.0f};
  a->all_reduce(host_buf(x), ReduceOp::Sum);
  MPI_Barrier(MPI_COMM_WORLD);  // plain MPI traffic in between does not match ours
  b->all_reduce(host_buf(y), ReduceOp::Sum);
  CHECK(x[0] == float(K * (K - 1) / 2));
  CHECK(y[0] == float(K));
  CHECK(a->stats().total().calls == 1);
  CHECK(b->stats().total().calls == 1);
}
