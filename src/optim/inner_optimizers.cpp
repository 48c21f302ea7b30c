#include <cmath>

#include "loco/optim/muon.hpp"
#include "loco/optim/optimizer.hpp"

namespace loco {

bool decays(const ParamView& v, const OptimizerConfig& cfg) {
  switch (v.kind) {
    case ParamKind::Norm:
      return false;
    case ParamKind::Embedding:
    case ParamKind::Head:
      return cfg.decay_embeddings;
    case ParamKind::Matrix:
      return true;
  }
  return true;
}

AdamW::AdamW(const OptimizerConfig& cfg, const ParamLayout& layout, Backend& backend)
    : cfg_(cfg),
      layout_(layout),
      backend_(backend),
      m_(backend, layout.total, DType::F32),
      v_(backend, layout.total, DType::F32),
      hyper_(backend, Backend::kAdamHyperFloats, DType::F32) {
  const float wd = static_cast<float>(cfg_.weight_decay);
  for (const auto& view : layout_.views) {
    const float decay = decays(view, cfg_) ? wd : 0.0f;
    if (!runs_.empty() && runs_.back().weight_decay == decay &&
        runs_.back().offset + runs_.back().numel == view.offset)
      runs_.back().numel += view.numel;
    else
      runs_.push_back(Backend::AdamTensor{view.offset, view.numel, decay});
  }
}

AdamW::~AdamW() = default;

void AdamW::upload_hyper(double lr, float grad_scale) {
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(t_));
  const float h[Backend::kAdamHyperFloats] = {static_cast<float>(lr),
                                              static_cast<float>(cfg_.beta1),
                                              static_cast<float>(cfg_.beta2),
                                              static_cast<float>(cfg_.eps),
                                              static_cast<float>(bc1),
                                              static_cast<float>(bc2),
                                              grad_scale,
                                              0.0f};
  backend_.upload(hyper_, h);
}

void AdamW::step(Buf params, Buf grads, double lr, float grad_scale) {
  ++t_;
  upload_hyper(lr, grad_scale);
  backend_.adamw_multi(params, grads, m_, v_, runs_, hyper_, Buf{});
}

void AdamW::begin_device_step(double lr) {
  ++t_;
  upload_hyper(lr, 1.0f);  // the clip scale comes from the step statistics
}

void AdamW::update_device(Buf params, Buf grads, Buf stats) {
  backend_.adamw_multi(params, grads, m_, v_, runs_, hyper_, stats);
}

std::vector<std::pair<std::string, Buf>> AdamW::state() { return {{"adam.m", m_}, {"adam.v", v_}}; }

void Sgd::step(Buf params, Buf grads, double lr, float grad_scale) {
  ++t_;
  for (const auto& view : layout_.views) {
    const double wd = decays(view, cfg_) ? cfg_.weight_decay : 0.0;
    backend_.axpby(params.slice(view.offset, view.numel), static_cast<float>(-lr * grad_scale),
                   grads.slice(view.offset, view.numel), static_cast<float>(1.0 - lr * wd));
  }
}

std::unique_ptr<InnerOptimizer> make_inner_optimizer(const OptimizerConfig& cfg,
                                                     const ParamLayout& layout, Backend& backend) {
  if (cfg.type == "adamw") return std::make_unique<AdamW>(cfg, layout, backend);
  if (cfg.type == "sgd") return std::make_unique<Sgd>(cfg, layout, backend);
  if (cfg.type == "muon") return std::make_unique<Muon>(cfg, layout, backend);
  throw Error("optimizer.type = \"" + cfg.type +
              "\": unknown (allowed: \"adamw\", \"sgd\", \"muon\")");
}

GradNorm global_grad_norm(Backend& backend, Buf grads, double max_norm) {
  GradNorm r;
  r.norm = std::sqrt(backend.sum_squares(grads));
  if (max_norm > 0.0 && r.norm > max_norm) r.clip_scale = static_cast<float>(max_norm / r.norm);
  return r;
}

}  // namespace loco
