// Muon (docs/algorithms.md §3): momentum, then Newton–Schulz orthogonalisation of the update, for
// the 2-D hidden matrices (ParamKind::Matrix); AdamW for embeddings, LM head and norm gains.
// Device-free: every operation goes through the Backend (muon_momentum, frobenius_normalize,
// gemm_batched, copy, axpby, adamw_update; newton_schulz below uses gemm_f32), so the same
// code runs on the CPU and CUDA backends.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "loco/backend/owned_buf.hpp"
#include "loco/optim/optimizer.hpp"

namespace loco {

// X(rows×cols, row-major) ← NewtonSchulz(X), in place:
//   X ← X / (‖X‖_F + 1e-7); then `steps` times X ← a·X + (b·A + c·A²)·X with A = X·Xᵀ.
// Tall matrices (rows > cols) use X ← a·X + X·(b·A + c·A²) with A = XᵀX: the same iteration
// on Xᵀ without forming a transpose, so the Gram matrices are min(rows,cols)² either way.
// Scratch: tmp ≥ rows·cols, gram and poly ≥ min(rows,cols)² elements (F32).
void newton_schulz(Backend& be, Buf x, int rows, int cols, float a, float b, float c, int steps,
                   Buf tmp, Buf gram, Buf poly);

// Newton–Schulz on `batch` matrices of one shape at once, X(batch, rows, cols) F32 back to
// back in x, in place: each normalised by its own norm, then the iteration above through
// strided-batched GEMMs in the dtype of `work0` (BF16 on CUDA, as Keller Jordan's Muon; F32
// on the CPU) with fp32 accumulation. Scratch, all of work0's dtype: work0, work1 ≥
// batch·rows·cols, gram, poly ≥ batch·min(rows,cols)².
void newton_schulz_batched(Backend& be, Buf x, int rows, int cols, int batch, float a, float b,
                           float c, int steps, Buf work0, Buf work1, Buf gram, Buf poly);

// Update scale s for a (rows×cols) matrix: "original" sqrt(max(1, rows/cols)), or
// "match_adamw" 0.2·sqrt(max(rows, cols)) (update RMS ≈ AdamW's, so one lr can serve both).
double muon_update_scale(const std::string& rule, int64_t rows, int64_t cols);

// Per ParamKind::Matrix view (β = muon_momentum, g = grad_scale·grad):
//   m ← β·m + g;  u ← g + β·m (Nesterov) or m;  O ← NewtonSchulz(u)
//   θ ← θ·(1 − η·λ) − η·s·O      λ = muon_weight_decay, s = muon_update_scale(muon_scale)
// η follows the schedule: step(lr) is given the AdamW group's scheduled lr, so the Muon group
// uses η = muon_lr · lr / optimizer.lr (same warmup/decay shape, its own peak).
// Every other view gets exactly AdamW's update (optimizer.lr, betas, eps, weight_decay with
// the decays() mask).
//
// State (checkpoints): "muon.momentum" holds the Matrix views back to back in layout order;
// "adam.m" / "adam.v" hold the other views back to back. Packed rather than full-layout, so
// Muon keeps ~1 buffer per matrix parameter instead of AdamW's 2 (a buffer that would be
// empty is omitted). Newton–Schulz runs batched over the matrices of one shape (q, k, v, o of
// every layer together; gate and up; down), in the backend's activation dtype, in sub-batches
// of at most kMaxBatchElements elements; its scratch is allocated once.
class Muon final : public InnerOptimizer {
 public:
  Muon(const OptimizerConfig& cfg, const ParamLayout& layout, Backend& backend);
  ~Muon() override = default;
  Muon(const Muon&) = delete;
  Muon& operator=(const Muon&) = delete;
  void step(Buf params, Buf grads, double lr, float grad_scale) override;
  int64_t steps_taken() const override { return t_; }
  void set_steps_taken(int64_t t) override { t_ = t; }
  std::vector<std::pair<std::string, Buf>> state() override;

 private:
  OptimizerConfig cfg_;
  const ParamLayout& layout_;
  Backend& backend_;
  static constexpr size_t kMaxBatchElements = size_t{1} << 26;  // per Newton–Schulz batch

  // Matrix views of one shape, in layout order, and how many go into one batch.
  struct ShapeGroup {
    int rows = 0, cols = 0;
    std::vector<size_t> views;
    int batch = 1;
  };

  std::vector<size_t> state_offset_;  // per view: offset into momentum_ or adam_m_/adam_v_
  std::vector<ShapeGroup> groups_;
  OwnedBuf momentum_, adam_m_, adam_v_;
  OwnedBuf x_;                            // F32 batch of updates
  OwnedBuf work0_, work1_, gram_, poly_;  // Newton–Schulz scratch, activation dtype
  int64_t t_ = 0;
};

}  // namespace loco
