#include "loco/dist/outer_sync.hpp"

#include <cmath>
#include <string>

namespace loco {

Topology make_topology(const DistributedConfig& cfg, Communicator& world) {
  Topology t;
  t.world_rank = world.rank();
  t.world_size = world.size();
  t.replica_size = cfg.method == "ddp" ? t.world_size : cfg.replica_size;
  if (t.world_size % t.replica_size != 0)
    throw Error("distributed.replica_size = " + std::to_string(cfg.replica_size) +
                ": must divide the number of ranks (" + std::to_string(t.world_size) + ")");
  t.num_replicas = t.world_size / t.replica_size;
  t.replica_index = t.world_rank / t.replica_size;
  t.rank_in_replica = t.world_rank % t.replica_size;
  // split() is collective over the world: every rank makes both calls.
  auto replica = world.split(t.replica_index, t.rank_in_replica);
  auto cross = world.split(t.rank_in_replica, t.replica_index);
  t.replica = std::move(replica);
  t.cross = std::move(cross);
  return t;
}

void outer_sgd_step(Backend& backend, Buf global, Buf momentum, Buf delta, double lr, double mu,
                    bool nesterov) {
  backend.axpby(momentum, 1.0f, delta, static_cast<float>(mu));  // v = Δ + μ·v
  if (nesterov) {
    backend.axpby(global, static_cast<float>(-lr), delta, 1.0f);  // θ -= η·Δ
    backend.axpby(global, static_cast<float>(-lr * mu), momentum, 1.0f);  // θ -= η·μ·v
  } else {
    backend.axpby(global, static_cast<float>(-lr), momentum, 1.0f);  // θ -= η·v
  }
}

OuterSync::OuterSync(const OuterConfig& cfg, Backend& backend, Communicator& cross, Buf params)
    : cfg_(cfg), backend_(backend), cross_(cross) {
  global_ = backend_.alloc(params.numel, DType::F32);
  momentum_ = backend_.alloc(params.numel, DType::F32);
  delta_ = backend_.alloc(params.numel, DType::F32);
  if (cfg_.wire_dtype == "bf16") wire_ = backend_.alloc(params.numel, DType::BF16);
  backend_.copy(global_, params);
}

OuterSync::~OuterSync() {
  for (Buf* b : {&global_, &momentum_, &delta_, &wire_})
    if (b->data) backend_.release(*b);
}

double OuterSync::sync(Buf params) {
  // Pseudo-gradient: old minus new, so it points like a gradient (ALGORITHMS.md §2).
  backend_.copy(delta_, global_);
  backend_.axpby(delta_, -1.0f, params, 1.0f);
  // Collective: dense all-reduce mean (optionally in bf16 on the wire).
  if (wire_.data) {
    backend_.copy(wire_, delta_);
    cross_.all_reduce(wire_, ReduceOp::Mean);
    backend_.copy(delta_, wire_);
  } else {
    cross_.all_reduce(delta_, ReduceOp::Mean);
  }
  const double norm = std::sqrt(backend_.sum_squares(delta_));
  outer_sgd_step(backend_, global_, momentum_, delta_, cfg_.lr, cfg_.momentum, cfg_.nesterov);
  backend_.copy(params, global_);
  ++syncs_;
  return norm;
}

}  // namespace loco
