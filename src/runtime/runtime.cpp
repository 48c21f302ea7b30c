// The composition root: backend, device and communicators of a run; see
// loco/runtime/runtime.hpp.
#include "loco/runtime/runtime.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

#include "loco/backend/cpu_backend.hpp"
#include "loco/comm/host_staged.hpp"
#include "loco/comm/simulated_link.hpp"

#ifdef LOCO_HAVE_CUDA
#include "loco/backend/cuda_backend.hpp"
#include "loco/comm/nccl_communicator.hpp"
#endif

namespace loco {

namespace {

std::string join_ranks(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size(); ++i)
    out += (i == 0 ? "" : i + 1 == ranks.size() ? " and " : ", ") + std::to_string(ranks[i]);
  return out;
}

// Every rank's host name, in rank order (one fixed-size broadcast per rank: start-up only).
std::vector<std::string> gather_host_names(Communicator& world, const std::string& mine) {
  constexpr size_t kLen = 64;
  std::vector<std::string> out(size_t(world.size()));
  for (int r = 0; r < world.size(); ++r) {
    char name[kLen] = {};
    if (r == world.rank()) std::strncpy(name, mine.c_str(), kLen - 1);
    world.broadcast_host(name, kLen, r);
    out[size_t(r)] = std::string(name, strnlen(name, kLen));
  }
  return out;
}

// Ranks (in order) whose flag is 0 after an all-gather of `ok`.
std::vector<int> failed_ranks(Communicator& world, bool ok) {
  const auto flags = world.all_gather_host(ok ? 1 : 0);
  std::vector<int> bad;
  for (size_t r = 0; r < flags.size(); ++r)
    if (!flags[r]) bad.push_back(int(r));
  return bad;
}

// "auto": CUDA when every rank has a usable GPU (a mixed job would not agree on dtypes).
std::string resolve_backend(const std::string& requested, Communicator& world) {
  if (requested != "auto") return requested;
  const bool usable = cuda_available();
  return failed_ranks(world, usable).empty() ? "cuda" : "cpu";
}

std::unique_ptr<Communicator> maybe_simulated(std::unique_ptr<Communicator> cross,
                                              const LinkConfig& link,
                                              const SimulatedLinkCommunicator** out) {
  if (!link.enabled()) return cross;
  auto wrapped = std::make_unique<SimulatedLinkCommunicator>(
      std::move(cross), LinkModel{link.bandwidth_mbps, link.latency_ms});
  *out = wrapped.get();
  return wrapped;
}

}  // namespace

GroupLayout group_layout(const DistributedConfig& cfg, int world_rank, int world_size) {
  GroupLayout g;
  g.replica_size = cfg.method == "ddp" ? world_size : cfg.replica_size;
  if (g.replica_size <= 0 || world_size % g.replica_size != 0)
    throw Error("distributed.replica_size = " + std::to_string(cfg.replica_size) +
                ": must divide the number of ranks (" + std::to_string(world_size) + ")");
  g.num_replicas = world_size / g.replica_size;
  g.replica_index = world_rank / g.replica_size;
  g.rank_in_replica = world_rank % g.replica_size;
  return g;
}

std::vector<std::string> nccl_gpu_conflicts(const std::vector<RankPlacement>& placement,
                                            bool nccl_replica, bool nccl_cross) {
  std::vector<std::string> out;
  // Two ranks of one NCCL communicator on one (node, device): NCCL refuses that.
  auto check = [&](bool enabled, const char* group, auto group_of) {
    if (!enabled) return;
    std::map<std::tuple<int, int, int>, std::vector<int>> users;  // (group, node, device)
    for (const RankPlacement& p : placement)
      users[{group_of(p), p.node, p.device}].push_back(p.rank);
    for (const auto& [key, ranks] : users) {
      if (ranks.size() < 2) continue;
      const auto& [g, node, device] = key;
      out.push_back("ranks " + join_ranks(ranks) + " (" + group + " " + std::to_string(g) +
                    ") on GPU " + std::to_string(device) + " of node " + std::to_string(node) +
                    " (" + placement[size_t(ranks[0])].host + ")");
    }
  };
  check(nccl_replica, "replica group", [](const RankPlacement& p) { return p.replica; });
  check(nccl_cross, "outer-sync group", [](const RankPlacement& p) { return p.rank_in_replica; });
  return out;
}

Runtime make_runtime(const Config& config, Communicator& world) {
  const DistributedConfig& dc = config.distributed;
  Runtime rt;
  rt.world = &world;
  const GroupLayout layout = group_layout(dc, world.rank(), world.size());
  const NodeInfo& node = node_info();
  const std::string backend = resolve_backend(config.backend, world);
  const bool cuda = backend == "cuda";
  const bool nccl_replica = cuda && layout.replica_size > 1;
  const std::string transport =
      dc.outer.transport == "auto" ? (cuda ? "nccl" : "mpi") : dc.outer.transport;
  if (transport == "nccl" && !cuda)
    throw CollectiveError(
        "distributed.outer.transport = \"nccl\" needs the CUDA backend (backend \"" +
        config.backend + "\" resolved to \"cpu\"): use \"mpi\" or \"auto\"");
  // The outer sync goes over NCCL whenever asked, even within one replica (a single-GPU
  // DiLoCo run then runs exactly the multi-GPU code path); a replica group of one rank never
  // communicates and gets no communicator of its own.
  const bool nccl_cross = cuda && transport == "nccl" && dc.method == "diloco";

  // This rank's device, then every rank's facts, so that every check below is made on the
  // same data on every rank.
  int device = -1;
  std::string device_error;
#ifdef LOCO_HAVE_CUDA
  if (cuda) {
    const int count = cuda_device_count(&device_error);
    if (count > 0) {
      device = node.local_rank % count;
      if (!cuda_device_usable(&device_error, device)) device = -1;
    }
  }
#else
  if (cuda)
    device_error = "this build has no CUDA backend (nvcc/NCCL were not found at configure time)";
#endif
  const std::vector<int> no_gpu = failed_ranks(world, !cuda || device >= 0);
  if (!no_gpu.empty())
    throw CollectiveError("backend = \"cuda\" but rank(s) " + join_ranks(no_gpu) + " of " +
                          std::to_string(world.size()) + " have no usable CUDA device" +
                          (device_error.empty() ? "" : " (this rank: " + device_error + ")") +
                          "; use backend \"cpu\", or launch on GPU nodes");

  const std::vector<std::string> hosts = gather_host_names(world, node.host);
  const uint64_t packed =
      uint64_t(uint16_t(node.index)) | uint64_t(uint16_t(node.local_rank)) << 16 |
      uint64_t(uint16_t(node.local_size)) << 32 | uint64_t(uint16_t(device + 1)) << 48;
  const std::vector<uint64_t> facts = world.all_gather_host(packed);
  for (int r = 0; r < world.size(); ++r) {
    const uint64_t f = facts[size_t(r)];
    const GroupLayout g = group_layout(dc, r, world.size());
    RankPlacement p;
    p.rank = r;
    p.host = hosts[size_t(r)];
    p.node = int(f & 0xffff);
    p.local_rank = int((f >> 16) & 0xffff);
    p.local_size = int((f >> 32) & 0xffff);
    p.device = int((f >> 48) & 0xffff) - 1;
    p.replica = g.replica_index;
    p.rank_in_replica = g.rank_in_replica;
    rt.placement.push_back(p);
  }

  const std::vector<std::string> conflicts =
      nccl_gpu_conflicts(rt.placement, nccl_replica, nccl_cross);
  if (!conflicts.empty()) {
    std::string what;
    for (const std::string& c : conflicts) what += (what.empty() ? "" : "; ") + c;
    throw CollectiveError(
        "this launch puts two ranks of one NCCL communicator on the same GPU, which NCCL "
        "refuses: " +
        what + ". Fix: start at most as many ranks per node as it has GPUs" +
        (layout.replica_size == 1 && layout.num_replicas > 1
             ? ", or set distributed.outer.transport = \"mpi\" (with replica_size 1 no NCCL "
               "communicator is made and ranks may share a GPU)"
             : std::string()));
  }
  if (cuda) {
    for (const RankPlacement& p : rt.placement)
      if (p.node == rt.mine().node && p.device == device) rt.gpu_shared_with.push_back(p.rank);
    if (rt.gpu_shared_with.size() < 2) rt.gpu_shared_with.clear();
  }

  // The backend on this rank's device, then the groups (MPI splits are collective over the
  // world: every rank makes both).
  void* compute_stream = nullptr;
#ifdef LOCO_HAVE_CUDA
  if (cuda) {
    auto gpu = std::make_unique<CudaBackend>(device);
    compute_stream = gpu->stream();
    rt.backend = std::move(gpu);
  }
#endif
  if (!rt.backend) rt.backend = std::make_unique<CpuBackend>();

  Topology& t = rt.topo;
  t.world_rank = world.rank();
  t.world_size = world.size();
  t.replica_size = layout.replica_size;
  t.num_replicas = layout.num_replicas;
  t.replica_index = layout.replica_index;
  t.rank_in_replica = layout.rank_in_replica;
  std::unique_ptr<Communicator> replica = world.split(layout.replica_index, layout.rank_in_replica);
  std::unique_ptr<Communicator> cross = world.split(layout.rank_in_replica, layout.replica_index);

  rt.replica_transport = layout.replica_size == 1 ? "none" : "mpi";
  rt.outer_transport = dc.method != "diloco" || layout.num_replicas == 1 ? "none" : "mpi";
  if (nccl_cross) rt.outer_transport = "nccl";
  if (cuda) {
#ifdef LOCO_HAVE_CUDA
    // A replica group of one needs no transport, but its buffers are device memory, so it is
    // staged like the MPI path (it never moves a byte).
    if (nccl_replica) {
      replica = make_nccl_communicator(std::move(replica), device, dc.timeout_s, compute_stream);
      rt.replica_transport = "nccl";
    } else {
      replica = make_host_staged_communicator(std::move(replica), *rt.backend);
    }
    if (nccl_cross) {
      // Its own stream: a started (overlapped) sync runs beside the inner steps' kernels.
      cross = make_nccl_communicator(std::move(cross), device, dc.timeout_s, nullptr);
    } else {
      cross = make_host_staged_communicator(std::move(cross), *rt.backend);
      if (layout.num_replicas > 1) rt.outer_transport = "mpi, staged through host memory";
    }
#endif
  }
  (void)compute_stream;
  t.replica = std::move(replica);
  t.cross = maybe_simulated(std::move(cross), dc.link, &rt.link);
  if (dc.link.enabled() && layout.num_replicas > 1) {
    rt.world_link_owner = std::make_unique<SimulatedLinkCommunicator>(
        world, LinkModel{dc.link.bandwidth_mbps, dc.link.latency_ms});
    rt.world_link = rt.world_link_owner.get();
    rt.world = rt.world_link_owner.get();
  }
  return rt;
}

std::vector<std::string> Runtime::describe() const {
  std::vector<std::string> lines;
  int nodes = 0;
  for (const RankPlacement& p : placement) nodes = std::max(nodes, p.node + 1);
  std::string line = "launch: " + std::to_string(placement.size()) + " rank(s) on " +
                     std::to_string(nodes) + " node(s) | backend " + backend->name();
  if (backend->name() == "cuda") {
    std::string devices;
    for (const RankPlacement& p : placement)
      devices += (devices.empty() ? "" : ", ") + std::to_string(p.rank) + "→" +
                 std::to_string(p.node) + ":" + std::to_string(p.device);
    line += " | GPU per rank (rank→node:device) " + devices;
  }
  line += " | replica group: " + replica_transport + " | outer sync: " + outer_transport;
  lines.push_back(line);
  // Every sharing group once (rank 0 prints): ranks of one node on one device.
  std::map<std::pair<int, int>, std::vector<int>> by_gpu;
  for (const RankPlacement& p : placement)
    if (p.device >= 0) by_gpu[{p.node, p.device}].push_back(p.rank);
  for (const auto& [gpu, ranks] : by_gpu)
    if (ranks.size() > 1)
      lines.push_back("GPU sharing: ranks " + join_ranks(ranks) + " share GPU " +
                      std::to_string(gpu.second) + " of node " + std::to_string(gpu.first) +
                      " (no NCCL communicator spans them: distributed.outer.transport \"mpi\" "
                      "with replica_size 1); they split its memory and compute");
  return lines;
}

nlohmann::json Runtime::launch_json() const {
  nlohmann::json ranks = nlohmann::json::array();
  int nodes = 0;
  for (const RankPlacement& p : placement) {
    nodes = std::max(nodes, p.node + 1);
    ranks.push_back({{"rank", p.rank},
                     {"host", p.host},
                     {"node", p.node},
                     {"local_rank", p.local_rank},
                     {"local_size", p.local_size},
                     {"device", p.device >= 0 ? nlohmann::json(p.device) : nullptr},
                     {"replica", p.replica},
                     {"rank_in_replica", p.rank_in_replica}});
  }
  return {{"nodes", nodes},
          {"backend", backend->name()},
          {"replica_transport", replica_transport},
          {"outer_transport", outer_transport},
          {"ranks", ranks}};
}

}  // namespace loco
