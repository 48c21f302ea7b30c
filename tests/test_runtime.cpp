// The composition root's pure rules (group layout, NCCL GPU conflicts) and what it builds in
// a 1-rank world on the CPU.
#include <string>
#include <vector>

#include "loco/config/config.hpp"
#include "loco/core/error.hpp"
#include "loco/runtime/runtime.hpp"
#include "support/catch.hpp"

using namespace loco;

namespace {

// `ranks` ranks on nodes of `per_node` ranks each, device = local rank % gpus.
std::vector<RankPlacement> place(int ranks, int per_node, int gpus, int replica_size) {
  std::vector<RankPlacement> out;
  for (int r = 0; r < ranks; ++r) {
    RankPlacement p;
    p.rank = r;
    p.node = r / per_node;
    p.host = "node" + std::to_string(p.node);
    p.local_rank = r % per_node;
    p.local_size = per_node;
    p.device = p.local_rank % gpus;
    p.replica = r / replica_size;
    p.rank_in_replica = r % replica_size;
    out.push_back(p);
  }
  return out;
}

}  // namespace

TEST_CASE("group layout: DDP is one replica, DiLoCo replicas of replica_size", "[runtime]") {
  DistributedConfig d;
  d.method = "ddp";
  GroupLayout g = group_layout(d, 3, 4);
  CHECK(g.replica_size == 4);
  CHECK(g.num_replicas == 1);
  CHECK(g.rank_in_replica == 3);
  d.method = "diloco";
  d.replica_size = 2;
  g = group_layout(d, 3, 4);
  CHECK(g.num_replicas == 2);
  CHECK(g.replica_index == 1);
  CHECK(g.rank_in_replica == 1);
  d.replica_size = 3;
  CHECK_THROWS_WITH(group_layout(d, 0, 4), Catch::Matchers::Contains("must divide"));
}

TEST_CASE("NCCL GPU conflicts: two ranks of one NCCL communicator on one GPU", "[runtime]") {
  // One GPU per rank: never a conflict.
  CHECK(nccl_gpu_conflicts(place(4, 2, 2, 2), true, true).empty());
  // Two ranks on one GPU, DDP over NCCL: the replica group conflicts.
  auto c = nccl_gpu_conflicts(place(2, 2, 1, 2), true, false);
  REQUIRE(c.size() == 1);
  CHECK(c[0] == "ranks 0 and 1 (replica group 0) on GPU 0 of node 0 (node0)");
  // DiLoCo replicas of one rank sharing a GPU: conflict only when the outer sync uses NCCL.
  CHECK(nccl_gpu_conflicts(place(2, 2, 1, 1), false, false).empty());
  c = nccl_gpu_conflicts(place(2, 2, 1, 1), false, true);
  REQUIRE(c.size() == 1);
  CHECK(c[0] == "ranks 0 and 1 (outer-sync group 0) on GPU 0 of node 0 (node0)");
  // 4 ranks on 2 GPUs, replicas of 2: each replica's ranks are on GPUs 0 and 1, so the NCCL
  // replica groups are fine; the cross groups pair ranks 0 and 2 (both GPU 0).
  const auto p = place(4, 4, 2, 2);
  CHECK(nccl_gpu_conflicts(p, true, false).empty());
  c = nccl_gpu_conflicts(p, true, true);
  REQUIRE(c.size() == 2);
  CHECK(c[0] == "ranks 0 and 2 (outer-sync group 0) on GPU 0 of node 0 (node0)");
  // Same device index on different nodes is not the same GPU.
  CHECK(nccl_gpu_conflicts(place(2, 1, 1, 2), true, true).empty());
}

TEST_CASE("runtime on the CPU in a 1-rank world", "[runtime]") {
  MpiRuntime mpi;
  auto world = make_mpi_world(60.0);
  Config c;
  c.backend = "cpu";
  Runtime rt = make_runtime(c, *world);
  CHECK(rt.backend->name() == "cpu");
  REQUIRE(rt.placement.size() == 1);
  CHECK(rt.mine().device == -1);
  CHECK(rt.replica_transport == "none");
  CHECK(rt.outer_transport == "none");
  CHECK(rt.topo.replica->accepts(MemSpace::Host));
  CHECK(rt.launch_json()["ranks"][0]["local_size"] == 1);
  CHECK(rt.describe()[0].find("1 rank(s) on 1 node(s) | backend cpu") != std::string::npos);

  // transport "nccl" on the CPU: refused (config validation says so too).
  c.distributed.outer.transport = "nccl";
  CHECK_THROWS_AS(make_runtime(c, *world), CollectiveError);
#ifndef LOCO_HAVE_CUDA
  c.distributed.outer.transport = "auto";
  c.backend = "cuda";
  CHECK_THROWS_WITH(make_runtime(c, *world), Catch::Matchers::Contains("no usable CUDA device"));
#endif
}
