// Communication accounting: the §9 formulas, snapshots/deltas, JSON. No MPI.
#include <cstdint>
#include <string>
#include <vector>

#include "loco/comm/comm_stats.hpp"
#include "loco/comm/communicator.hpp"
#include "support/catch.hpp"

using namespace loco;

TEST_CASE("ring all-reduce moves 2(K-1)/K of the buffer each way", "[comm]") {
  CHECK(ring_allreduce_bytes(1000, 1) == 0);
  CHECK(ring_allreduce_bytes(1000, 2) == 1000);
  CHECK(ring_allreduce_bytes(1000, 4) == 1500);
  CHECK(ring_allreduce_bytes(4096, 8) == 7168);
  CHECK(ring_allreduce_bytes(0, 8) == 0);
  // Not divisible: 2*2*10/3 = 13.33 -> 13; 2*2*11/3 = 14.67 -> 15 (nearest byte).
  CHECK(ring_allreduce_bytes(10, 3) == 13);
  CHECK(ring_allreduce_bytes(11, 3) == 15);
  // Large: 7e9 params in fp32 across 64 ranks, no overflow.
  CHECK(ring_allreduce_bytes(28'000'000'000ull, 64) == 55'125'000'000ull);
}

TEST_CASE("ring all-gather moves (K-1) pieces each way", "[comm]") {
  CHECK(ring_allgather_bytes(100, 1) == 0);
  CHECK(ring_allgather_bytes(100, 2) == 100);
  CHECK(ring_allgather_bytes(100, 8) == 700);
  CHECK(ring_allgather_bytes(0, 8) == 0);
}

TEST_CASE("chain broadcast: root sends, the last rank only receives", "[comm]") {
  // K = 4, root 2: chain 2 -> 3 -> 0 -> 1.
  CHECK(chain_broadcast_sent_bytes(64, 4, 2, 2) == 64);
  CHECK(chain_broadcast_recv_bytes(64, 4, 2, 2) == 0);
  CHECK(chain_broadcast_sent_bytes(64, 4, 3, 2) == 64);
  CHECK(chain_broadcast_recv_bytes(64, 4, 3, 2) == 64);
  CHECK(chain_broadcast_sent_bytes(64, 4, 0, 2) == 64);
  CHECK(chain_broadcast_recv_bytes(64, 4, 0, 2) == 64);
  CHECK(chain_broadcast_sent_bytes(64, 4, 1, 2) == 0);
  CHECK(chain_broadcast_recv_bytes(64, 4, 1, 2) == 64);
  // Conservation: over all ranks sent == received == (K-1)·S, for every root.
  for (int K : {1, 2, 3, 5}) {
    for (int root = 0; root < K; ++root) {
      uint64_t sent = 0, recv = 0;
      for (int r = 0; r < K; ++r) {
        sent += chain_broadcast_sent_bytes(10, K, r, root);
        recv += chain_broadcast_recv_bytes(10, K, r, root);
      }
      CHECK(sent == uint64_t(10 * (K - 1)));
      CHECK(recv == uint64_t(10 * (K - 1)));
    }
  }
  CHECK(chain_broadcast_sent_bytes(64, 1, 0, 0) == 0);
  CHECK(chain_broadcast_recv_bytes(64, 1, 0, 0) == 0);
}

TEST_CASE("DDP-equivalent volume is steps * 2(K-1)/K * N * b", "[comm]") {
  CHECK(ddp_equivalent_bytes(1000, 4, 1, 100) == 0);
  CHECK(ddp_equivalent_bytes(1000, 4, 2, 1) == 4000);
  CHECK(ddp_equivalent_bytes(1000, 4, 4, 10) == 60000);
  CHECK(ddp_equivalent_bytes(1000, 2, 8, 3) == 10500);
  // Rounded once over all steps, not per step: 2*2*1*1/3 = 1.33 per step, 100 steps -> 133.
  CHECK(ddp_equivalent_bytes(1, 1, 3, 100) == 133);
  // 1B params, bf16, K=8, 100k steps: 3.5e14, exact.
  CHECK(ddp_equivalent_bytes(1'000'000'000ull, 2, 8, 100'000) == 350'000'000'000'000ull);
}

TEST_CASE("CommStats accounts each kind with its formula", "[comm]") {
  CommStats s;
  s.account(CommKind::AllReduce, 4000, 4, 1, 0, 0.5);
  s.account(CommKind::AllReduce, 4000, 4, 1, 0, 0.25);
  s.account(CommKind::AllGather, 100, 4, 1, 0, 0.125);
  s.account(CommKind::Broadcast, 64, 4, 1, 2, 0.0);  // rank 1 is last in 2->3->0->1
  s.account(CommKind::Barrier, 999, 4, 1, 0, 0.0);   // barriers carry no payload
  s.account(CommKind::HostAllReduce, 16, 4, 1, 0, 0.0);

  const auto& ar = s[CommKind::AllReduce];
  CHECK(ar.calls == 2);
  CHECK(ar.payload_bytes == 8000);
  CHECK(ar.sent_bytes == 12000);
  CHECK(ar.recv_bytes == 12000);
  CHECK(ar.seconds == 0.75);
  CHECK(s[CommKind::AllGather].sent_bytes == 300);
  CHECK(s[CommKind::AllGather].recv_bytes == 300);
  CHECK(s[CommKind::AllGather].payload_bytes == 100);
  CHECK(s[CommKind::Broadcast].sent_bytes == 0);
  CHECK(s[CommKind::Broadcast].recv_bytes == 64);
  CHECK(s[CommKind::Barrier].calls == 1);
  CHECK(s[CommKind::Barrier].payload_bytes == 0);
  CHECK(s[CommKind::Barrier].sent_bytes == 0);
  CHECK(s[CommKind::HostAllReduce].sent_bytes == 24);
  CHECK(s[CommKind::HostAllGather].calls == 0);

  const CommCounters t = s.total();
  CHECK(t.calls == 6);
  CHECK(t.sent_bytes == 12000 + 300 + 0 + 24);
  CHECK(t.recv_bytes == 12000 + 300 + 64 + 24);
  CHECK(t.payload_bytes == 8000 + 100 + 64 + 16);
}

TEST_CASE("CommStats with one rank counts calls but no bytes on the wire", "[comm]") {
  CommStats s;
  s.account(CommKind::AllReduce, 4000, 1, 0, 0, 0.0);
  s.account(CommKind::AllGather, 4000, 1, 0, 0, 0.0);
  s.account(CommKind::Broadcast, 4000, 1, 0, 0, 0.0);
  CHECK(s.total().calls == 3);
  CHECK(s.total().payload_bytes == 12000);
  CHECK(s.total().sent_bytes == 0);
  CHECK(s.total().recv_bytes == 0);
}

TEST_CASE("CommStats snapshots subtract to the interval's figures", "[comm]") {
  CommStats s;
  s.account(CommKind::AllReduce, 800, 2, 0, 0, 1.0);
  const CommStats before = s;  // snapshot
  s.account(CommKind::AllReduce, 400, 2, 0, 0, 0.5);
  s.account(CommKind::AllGather, 10, 2, 0, 0, 0.25);
  const CommStats delta = s - before;
  CHECK(delta[CommKind::AllReduce].calls == 1);
  CHECK(delta[CommKind::AllReduce].payload_bytes == 400);
  CHECK(delta[CommKind::AllReduce].sent_bytes == 400);
  CHECK(delta[CommKind::AllReduce].seconds == 0.5);
  CHECK(delta[CommKind::AllGather].sent_bytes == 10);
  CHECK(delta.total().calls == 2);
  CHECK(before + delta == s);

  CommStats reset = s;
  reset.reset();
  CHECK(reset.total().calls == 0);
  CHECK(reset == CommStats{});
}

TEST_CASE("CommStats JSON has every kind, the total and the counters", "[comm]") {
  CommStats s;
  s.account(CommKind::AllGather, 100, 3, 0, 0, 0.5);
  const nlohmann::json j = s.to_json();
  for (const char* kind : {"all_reduce", "all_gather", "broadcast", "barrier", "host_all_reduce",
                           "host_all_gather", "host_broadcast", "total"}) {
    INFO(kind);
    REQUIRE(j.contains(kind));
    CHECK(j[kind].contains("calls"));
    CHECK(j[kind].contains("payload_bytes"));
    CHECK(j[kind].contains("sent_bytes"));
    CHECK(j[kind].contains("recv_bytes"));
    CHECK(j[kind].contains("seconds"));
  }
  CHECK(j["all_gather"]["calls"].get<uint64_t>() == 1);
  CHECK(j["all_gather"]["sent_bytes"].get<uint64_t>() == 200);
  CHECK(j["total"]["recv_bytes"].get<uint64_t>() == 200);
  CHECK(j["all_gather"]["seconds"].get<double>() == 0.5);
  CHECK(j["all_reduce"]["calls"].get<uint64_t>() == 0);

  const nlohmann::json f = CommStats::formulas_json();
  CHECK(f["all_reduce"].get<std::string>().find("2(K-1)/K") != std::string::npos);
  CHECK(f["all_gather"].get<std::string>().find("(K-1) * S") != std::string::npos);
  CHECK(std::string(comm_kind_name(CommKind::HostBroadcast)) == "host_broadcast");
}

TEST_CASE("mismatching_ranks names the ranks that differ from the majority", "[comm]") {
  CHECK(mismatching_ranks({}).empty());
  CHECK(mismatching_ranks({7}).empty());
  CHECK(mismatching_ranks({7, 7, 7, 7}).empty());
  CHECK(mismatching_ranks({7, 7, 9, 7}) == std::vector<int>{2});
  CHECK(mismatching_ranks({9, 7, 7, 7}) == std::vector<int>{0});
  CHECK(mismatching_ranks({7, 9}) == std::vector<int>{1});  // tie: rank 0 is the reference
  CHECK(mismatching_ranks({1, 2, 2, 3}) == std::vector<int>{0, 3});
}
