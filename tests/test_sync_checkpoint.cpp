// Checkpoints at outer syncs, the pieces that need no MPI: the background writer
// (loco/io/async_checkpoint.hpp), replica keys, who writes what, file names, the identity
// an elastic resume checks (loco/train/sync_checkpoint.hpp). The whole path (write, resume on
// another number of replicas) runs in tests/e2e/elastic_resume.sh and tests/netns/elastic.sh.
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "loco/config/config.hpp"
#include "loco/core/error.hpp"
#include "loco/io/async_checkpoint.hpp"
#include "loco/runtime/runtime.hpp"
#include "loco/train/sync_checkpoint.hpp"
#include "support/catch.hpp"

using namespace loco;

TEST_CASE("background writer: jobs run one at a time, in order, off the caller's thread",
          "[checkpoint][async]") {
  AsyncCheckpointWriter writer;
  std::vector<int> order;
  std::atomic<bool> release{false};
  const auto caller = std::this_thread::get_id();
  std::thread::id worker;
  auto first = writer.submit("job 1", [&] {
    worker = std::this_thread::get_id();
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    order.push_back(1);
  });
  CHECK(first.previous_error.empty());
  // submit() returned while job 1 still runs: the caller does not wait for the disk.
  CHECK(order.empty());
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    release = true;
  });
  // The next submit waits for job 1 (one checkpoint in flight at a time).
  auto second = writer.submit("job 2", [&] { order.push_back(2); });
  releaser.join();
  CHECK(second.waited_seconds > 0.0);
  CHECK(writer.wait().empty());
  CHECK(order == std::vector<int>{1, 2});
  CHECK(worker != caller);
  CHECK(writer.last_job_seconds() >= 0.0);
}

TEST_CASE("background writer: a failed job's message comes back once", "[checkpoint][async]") {
  AsyncCheckpointWriter writer;
  writer.submit("checkpoint of step 8", [] { throw Error("cannot write x: No space left"); });
  CHECK(writer.wait() == "checkpoint of step 8: cannot write x: No space left");
  CHECK(writer.wait().empty());  // reported once
  writer.submit("checkpoint of step 16", [] { throw std::runtime_error("boom"); });
  // The next submit reports it (and still runs its own job).
  bool ran = false;
  const auto s = writer.submit("checkpoint of step 24", [&] { ran = true; });
  CHECK(s.previous_error == "checkpoint of step 16: boom");
  CHECK(writer.wait().empty());
  CHECK(ran);
  // The destructor waits for a job in flight.
  std::atomic<bool> done{false};
  {
    AsyncCheckpointWriter w2;
    w2.submit("slow", [&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      done = true;
    });
  }
  CHECK(done.load());
}

namespace {
RankPlacement rank(int r, const std::string& host, int local, int replica, int in_replica) {
  RankPlacement p;
  p.rank = r;
  p.host = host;
  p.local_rank = local;
  p.replica = replica;
  p.rank_in_replica = in_replica;
  return p;
}
}  // namespace

TEST_CASE("replica keys: host of the first rank and ordinal on that host",
          "[checkpoint][elastic]") {
  // 2 ranks per replica; node a holds replicas 0 and 1, node b replica 2.
  const std::vector<RankPlacement> p = {rank(0, "a", 0, 0, 0), rank(1, "a", 1, 0, 1),
                                        rank(2, "a", 2, 1, 0), rank(3, "a", 3, 1, 1),
                                        rank(4, "b", 0, 2, 0), rank(5, "b", 1, 2, 1)};
  CHECK(replica_keys(p) == std::vector<std::string>{"a-0", "a-1", "b-0"});
  // The same replicas in another order of nodes keep their keys (state follows the host).
  const std::vector<RankPlacement> q = {rank(0, "b", 0, 0, 0), rank(1, "b", 1, 0, 1),
                                        rank(2, "a", 0, 1, 0), rank(3, "a", 1, 1, 1)};
  CHECK(replica_keys(q) == std::vector<std::string>{"b-0", "a-0"});
  CHECK(replica_state_file_name("node 1/x-0") == "replica-node_1_x-0.bin");
  CHECK(replica_state_path("/c/step-000010", "a-0") == "/c/step-000010/replica-a-0.bin");
  CHECK(global_state_path("/c/step-000010") == "/c/step-000010/global.bin");
}

TEST_CASE("who writes what: global state once (shared) or once per node (node_local)",
          "[checkpoint][elastic]") {
  CheckpointConfig shared, local;
  local.storage = "node_local";
  const RankPlacement r0 = rank(0, "a", 0, 0, 0), r1 = rank(1, "a", 1, 0, 1),
                      r2 = rank(2, "b", 0, 1, 0), r3 = rank(3, "b", 1, 1, 1);
  auto roles = [](const CheckpointConfig& c, const RankPlacement& p) {
    const auto r = sync_checkpoint_roles(c, p);
    return std::make_pair(r.global, r.replica);
  };
  CHECK(roles(shared, r0) == std::make_pair(true, true));
  CHECK(roles(shared, r1) == std::make_pair(false, false));
  CHECK(roles(shared, r2) == std::make_pair(false, true));
  CHECK(roles(shared, r3) == std::make_pair(false, false));
  CHECK(roles(local, r0) == std::make_pair(true, true));
  CHECK(roles(local, r2) == std::make_pair(true, true));  // node b's first rank
  CHECK(roles(local, r3) == std::make_pair(false, false));
}

TEST_CASE("the identity an elastic resume checks leaves the number of ranks out",
          "[checkpoint][elastic]") {
  Config c;
  c.distributed.method = "diloco";
  c.distributed.replica_size = 2;
  const auto id = sync_checkpoint_identity(c);
  CHECK_FALSE(id.contains("world_size"));
  CHECK_FALSE(id.contains("rank"));
  CHECK(id.at("replica_size") == 2);
  CHECK(id.at("method") == "diloco");
  CHECK(id.at("model").at("d_model") == c.model.d_model);
}
