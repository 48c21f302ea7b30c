// The Llama decoder (Hugging Face LlamaForCausalLM semantics), written once against the
// Backend seam: token embedding → L × [RMSNorm → GQA attention with RoPE → residual;
// RMSNorm → SwiGLU MLP → residual] → RMSNorm → LM head → cross-entropy.
//
// Parameters and gradients are two flat F32 buffers sharing one ParamLayout. On a backend
// whose activations are not F32 (CUDA: bf16) the model also keeps a compute copy of the
// weights in the activation dtype, refreshed by params_changed() after every update.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/backend/owned_buf.hpp"
#include "loco/config/config.hpp"
#include "loco/model/param_layout.hpp"

namespace loco {

class LlamaModel {
 public:
  LlamaModel(const ModelConfig& config, Backend& backend);
  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  const ModelConfig& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }
  Backend& backend() { return backend_; }
  size_t num_params() const { return layout_.total; }

  Buf params() const { return params_; }  // F32 master weights, whole buffer
  Buf grads() const { return grads_; }    // F32, same layout
  Buf param(const ParamView& v) const { return params_.slice(v.offset, v.numel); }
  Buf grad(const ParamView& v) const { return grads_.slice(v.offset, v.numel); }

  // Hugging Face initialisation: every matrix and embedding ~ N(0, init_std²), norm gains 1.
  // Deterministic for a seed on every platform.
  void init_weights(uint64_t seed);
  // Call after changing params() so the compute copy (if any) follows.
  void params_changed();

  // One micro-batch of B×T tokens (host int32 arrays). Adds grad_scale·∂(mean loss)/∂θ into
  // grads() and returns the mean loss. Use grad_scale = 1/accumulation_steps.
  double forward_backward(const int32_t* inputs, const int32_t* targets, int B, int T,
                          float grad_scale);
  // Mean loss only, no gradients.
  double forward_loss(const int32_t* inputs, const int32_t* targets, int B, int T);
  // forward_backward on tokens already in backend memory (inputs, targets: B×T I32 each),
  // with nothing read back: the micro-batch's mean loss is added to `stats` in backend memory
  // (Backend::accumulate_loss, loco/ops/step_stats.hpp). Enqueues only (no host
  // synchronisation), so a graph can record it (loco/train/train_step.hpp).
  void forward_backward_device(Buf inputs, Buf targets, int B, int T, float grad_scale, Buf stats);
  // Changes whenever the activation buffers are reallocated (a larger batch, another
  // sequence length): a recorded graph that uses the old ones must be recorded again.
  uint64_t activations_generation() const { return activations_generation_; }

 private:
  struct Activations;
  struct Weights;
  Weights weights_for_layer(int layer) const;
  void ensure_activations(int B, int T);
  double forward(const int32_t* inputs, const int32_t* targets, int B, int T, bool training,
                 float grad_scale);
  // Everything of the forward pass after the tokens are in backend memory; leaves the token
  // losses in the activations.
  void forward_tokens(Buf inputs, Buf targets, int B, int T, bool training, float grad_scale);
  void backward(Buf inputs, int B, int T);

  ModelConfig config_;
  Backend& backend_;
  ParamLayout layout_;
  OwnedBuf params_, grads_;
  OwnedBuf compute_copy_;  // the weights in the activation dtype (none on F32 backends)
  Buf compute_params_;     // compute_copy_, or params_ itself on F32 backends
  std::unique_ptr<Activations> acts_;
  uint64_t activations_generation_ = 0;
};

}  // namespace loco
