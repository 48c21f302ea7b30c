// The composition root of a run: from the config and the launch (the MPI world, the node,
// its GPUs) it builds, together and in one place, the backend on this rank's device and the
// communicators the training loop uses. Nothing else in loco picks a device or a transport.
//
// What is built (K ranks, replica_size R, K/R replicas; DDP is one replica of every rank):
//  - world: the MPI world (owned by the caller): small host collectives only (losses, hashes,
//    flags, the checks below).
//  - CPU backend: every group is an MPI communicator on host memory.
//  - CUDA backend: device = node-local rank modulo the node's GPUs (one GPU per rank on a
//    node with enough GPUs); the replica (DDP) group over NCCL on device memory, on the
//    backend's stream; the cross (outer-sync) group over NCCL on its own stream
//    (distributed.outer.transport "nccl", the default on CUDA) or over MPI with the device
//    buffers staged through page-locked host memory ("mpi"). A replica group of one rank
//    sends nothing and gets no NCCL communicator (the outer sync uses NCCL even with one
//    replica, so one GPU runs the multi-GPU code path). With outer.transport "mpi" and replica_size
//    1 no NCCL communicator exists at all, so ranks may share a GPU (the start-up line says so);
//    any layout that would put two ranks of one NCCL communicator on the same GPU is refused
//    before anything is built, on every rank with the same message.
//  - distributed.link: every communicator that spans replicas (the cross group, and the world
//    when there are several replicas) is wrapped in the simulated slow link, so that all
//    traffic between replicas pays for it; the replica groups stay the fast local link.
//
// Every failure here is collective: each rank learns every rank's facts (node, device, GPU
// availability) first, so all ranks throw the same loco::Error together and none is left
// waiting in a collective.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/comm/communicator.hpp"
#include "loco/comm/simulated_link.hpp"
#include "loco/config/config.hpp"
#include "loco/outer/outer_sync.hpp"

namespace loco {

// Where one rank of the job runs (every rank knows every rank's).
struct RankPlacement {
  int rank = 0;
  std::string host;
  int node = 0;        // NodeInfo::index
  int local_rank = 0;  // among the ranks of its node
  int local_size = 1;
  int device = -1;          // CUDA device, -1 on the CPU backend
  int replica = 0;          // which replica
  int rank_in_replica = 0;  // position inside it (its cross group)
};

struct Runtime {
  // The MPI world for host collectives (not owned), or its simulated-link wrapper (owned, in
  // world_link_owner) when distributed.link is set and there are several replicas.
  Communicator* world = nullptr;
  std::unique_ptr<Backend> backend;
  Topology topo;                         // replica (DDP) and cross (outer-sync) groups
  std::vector<RankPlacement> placement;  // every rank's, in world rank order
  // What carries each group: "nccl", "mpi", "mpi, staged through host memory", or "none"
  // (a group of one rank).
  std::string replica_transport, outer_transport;
  // Ranks of this node that share this rank's GPU (this rank included); empty when none do.
  std::vector<int> gpu_shared_with;
  const SimulatedLinkCommunicator* link = nullptr;        // the cross group's, when simulated
  const SimulatedLinkCommunicator* world_link = nullptr;  // the world's, when simulated
  std::unique_ptr<SimulatedLinkCommunicator> world_link_owner;

  const RankPlacement& mine() const { return placement.at(size_t(world->rank())); }
  // The start-up lines (layout, transports, GPU sharing), for rank 0 to print.
  std::vector<std::string> describe() const;
  // For summary.json: {"nodes", "backend", "replica_transport", "outer_transport",
  //  "ranks": [{"rank", "host", "node", "local_rank", "local_size", "device", "replica",
  //  "rank_in_replica"}]}
  nlohmann::json launch_json() const;
};

// Builds the runtime for `config` over `world` (collective: every rank calls it). Throws
// loco::Error, on every rank alike, for a layout that cannot run: no usable GPU with backend
// "cuda" (naming the ranks), two ranks of one NCCL communicator on one GPU (naming the ranks,
// the GPU and the fix), replica_size not dividing the world.
Runtime make_runtime(const Config& config, Communicator& world);

// Which ranks form the groups (pure; no communication): replica_size R, replica index and
// position of `world_rank` among `world_size` ranks. DDP: one replica of every rank.
struct GroupLayout {
  int replica_size = 1, num_replicas = 1, replica_index = 0, rank_in_replica = 0;
};
GroupLayout group_layout(const DistributedConfig& cfg, int world_rank, int world_size);

// Pairs of ranks that would share a GPU inside one NCCL communicator, as messages ("ranks 0
// and 1 (replica group 0) on GPU 0 of node 0 (host)"); empty when none would. `nccl_replica`,
// `nccl_cross`: whether those groups use NCCL.
std::vector<std::string> nccl_gpu_conflicts(const std::vector<RankPlacement>& placement,
                                            bool nccl_replica, bool nccl_cross);

}  // namespace loco
