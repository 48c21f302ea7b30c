// Inner optimizers: device-free code over the flat parameter/gradient buffers, calling the
// Backend for the arithmetic. Each one owns its state buffers (same layout as the params),
// so checkpoints and the outer loop can treat optimizer state as whole buffers too.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/backend/owned_buf.hpp"
#include "loco/config/config.hpp"
#include "loco/model/param_layout.hpp"

namespace loco {

class InnerOptimizer {
 public:
  virtual ~InnerOptimizer() = default;
  // One update of params from grads. `grad_scale` multiplies the gradient first (clipping).
  virtual void step(Buf params, Buf grads, double lr, float grad_scale) = 0;
  virtual int64_t steps_taken() const = 0;
  // Checkpoint resume: the step counter (bias correction) must continue where it stopped.
  virtual void set_steps_taken(int64_t t) = 0;
  // Named state buffers (e.g. "adam.m", "adam.v") for checkpoints.
  virtual std::vector<std::pair<std::string, Buf>> state() = 0;
};

// Whether a parameter gets weight decay: never norm gains; embeddings and a (tied or
// untied) LM head only when `decay_embeddings`.
bool decays(const ParamView& v, const OptimizerConfig& cfg);

// The whole update is one Backend::adamw_multi launch over runs of views (consecutive views
// with the same weight-decay flag share a run): one launch instead of 111 on the 134M model,
// the same element-wise math as adamw_update view by view.
class AdamW final : public InnerOptimizer {
 public:
  AdamW(const OptimizerConfig& cfg, const ParamLayout& layout, Backend& backend);
  ~AdamW() override;
  void step(Buf params, Buf grads, double lr, float grad_scale) override;
  int64_t steps_taken() const override { return t_; }
  void set_steps_taken(int64_t t) override { t_ = t; }
  std::vector<std::pair<std::string, Buf>> state() override;

  // The update of a step that runs without host synchronisation (loco/train/train_step.hpp)
  // in two halves: begin_device_step counts the step and puts its scalars (lr, bias
  // corrections) in backend memory — before the step's work is enqueued or its graph
  // launched; update_device enqueues the update, which reads them there, scales the gradient
  // by the clip scale in `stats` (loco/ops/step_stats.hpp) and skips itself when stats flags
  // a non-finite gradient (the caller then rolls the step counter back).
  void begin_device_step(double lr);
  void update_device(Buf params, Buf grads, Buf stats);

 private:
  void upload_hyper(double lr, float grad_scale);

  OptimizerConfig cfg_;
  const ParamLayout& layout_;
  Backend& backend_;
  std::vector<Backend::AdamTensor> runs_;
  OwnedBuf m_, v_;
  OwnedBuf hyper_;  // Backend::kAdamHyperFloats scalars of the current step
  int64_t t_ = 0;
};

// Plain SGD with decoupled weight decay: p ← p·(1 − lr·wd) − lr·g. No state. Exists so that
// "DiLoCo with H = 1, outer lr 1, no momentum" can be checked against DDP exactly.
class Sgd final : public InnerOptimizer {
 public:
  Sgd(const OptimizerConfig& cfg, const ParamLayout& layout, Backend& backend)
      : cfg_(cfg), layout_(layout), backend_(backend) {}
  void step(Buf params, Buf grads, double lr, float grad_scale) override;
  int64_t steps_taken() const override { return t_; }
  void set_steps_taken(int64_t t) override { t_ = t; }
  std::vector<std::pair<std::string, Buf>> state() override { return {}; }

 private:
  OptimizerConfig cfg_;
  const ParamLayout& layout_;
  Backend& backend_;
  int64_t t_ = 0;
};

std::unique_ptr<InnerOptimizer> make_inner_optimizer(const OptimizerConfig& cfg,
                                                     const ParamLayout& layout, Backend& backend);

// Global L2 norm of the gradient buffer, and the factor that clips it to max_norm
// (1 when max_norm <= 0 or the norm is already below it).
struct GradNorm {
  double norm = 0.0;
  float clip_scale = 1.0f;
};
GradNorm global_grad_norm(Backend& backend, Buf grads, double max_norm);

}  // namespace loco
