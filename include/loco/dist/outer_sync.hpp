// The outer-sync pipeline shared by every low-communication method (ALGORITHMS.md §2, §5):
//
//   inner optimizer (H steps) → pseudo-gradient Δ = θ_global − θ_local → [error feedback →
//   selector → quantiser: identity for DiLoCo] → collective (all-reduce mean) → aggregate →
//   outer optimizer (SGD, optional Nesterov momentum) → θ_local ← θ_global
//
// DDP is the same pipeline with the gradient as the payload and no outer step (see
// Topology/GradientSync below); DiLoCo is this class with the dense path.
#pragma once
#include <memory>

#include "loco/backend/backend.hpp"
#include "loco/config/config.hpp"
#include "loco/dist/communicator.hpp"

namespace loco {

// How the world's ranks are grouped. Ranks of one replica DDP among themselves every step
// (replica group); the replicas exchange pseudo-gradients every H steps (cross group: one
// rank of each replica with the same position). DDP is one replica of every rank.
struct Topology {
  int world_rank = 0, world_size = 1;
  int replica_size = 1;   // ranks per replica
  int replica_index = 0;  // which replica this rank belongs to
  int num_replicas = 1;
  int rank_in_replica = 0;
  std::unique_ptr<Communicator> replica;  // DDP group (size 1 when replica_size == 1)
  std::unique_ptr<Communicator> cross;    // outer-sync group (size 1 with one replica)
};

// Builds the groups for a config; errors when replica_size does not divide the world size.
Topology make_topology(const DistributedConfig& cfg, Communicator& world);

class OuterSync {
 public:
  // Snapshots θ_global from `params` (identical on every rank at construction).
  OuterSync(const OuterConfig& cfg, Backend& backend, Communicator& cross, Buf params);
  ~OuterSync();
  OuterSync(const OuterSync&) = delete;
  OuterSync& operator=(const OuterSync&) = delete;

  bool due(int steps_done) const { return steps_done % cfg_.interval == 0; }
  // One outer step: reads θ_local from `params`, writes the new θ_global back into it.
  // Returns the L2 norm of the averaged pseudo-gradient (for the metrics line).
  double sync(Buf params);

  Buf global_params() const { return global_; }
  Buf momentum() const { return momentum_; }
  int syncs_done() const { return syncs_; }

 private:
  OuterConfig cfg_;
  Backend& backend_;
  Communicator& cross_;
  Buf global_, momentum_, delta_, wire_;  // F32 ×3; wire_ is BF16 when wire_dtype = bf16
  int syncs_ = 0;
};

// Applies one outer SGD step to θ_global given the averaged pseudo-gradient Δ:
//   v ← μ·v + Δ;  θ ← θ − η·(Δ + μ·v) with Nesterov, θ ← θ − η·v without.
void outer_sgd_step(Backend& backend, Buf global, Buf momentum, Buf delta, double lr,
                    double mu, bool nesterov);

}  // namespace loco
