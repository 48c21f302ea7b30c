#include "loco/optim/muon.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace loco {

void newton_schulz(Backend& be, Buf x, int rows, int cols, float a, float b, float c, int steps,
                   Buf tmp, Buf gram, Buf poly) {
  const bool tall = rows > cols;
  const int n = tall ? cols : rows;  // Gram size
  const size_t numel = static_cast<size_t>(rows) * cols, nn = static_cast<size_t>(n) * n;
  Buf X = x.slice(0, numel), T = tmp.slice(0, numel), A = gram.slice(0, nn), B = poly.slice(0, nn);
  be.scale(X, static_cast<float>(1.0 / (std::sqrt(be.sum_squares(X)) + 1e-7)));
  for (int k = 0; k < steps; ++k) {
    if (tall)
      be.gemm_f32(true, false, n, n, rows, 1.0f, X, X, 0.0f, A);  // A = XᵀX
    else
      be.gemm_f32(false, true, n, n, cols, 1.0f, X, X, 0.0f, A);  // A = X·Xᵀ
    be.gemm_f32(false, false, n, n, n, c, A, A, 0.0f, B);         // B = c·A·A
    be.axpby(B, b, A, 1.0f);                                      //   + b·A
    if (tall)
      be.gemm_f32(false, false, rows, cols, cols, 1.0f, X, B, 0.0f, T);  // T = X·B
    else
      be.gemm_f32(false, false, rows, cols, rows, 1.0f, B, X, 0.0f, T);  // T = B·X
    be.axpby(X, 1.0f, T, a);                                             // X = a·X + T
  }
}

double muon_update_scale(const std::string& rule, int64_t rows, int64_t cols) {
  const double r = static_cast<double>(rows), c = static_cast<double>(cols);
  if (rule == "original") return std::sqrt(std::max(1.0, r / c));
  if (rule == "match_adamw") return 0.2 * std::sqrt(std::max(r, c));
  throw Error("optimizer.muon_scale = \"" + rule +
              "\": unknown (allowed: \"original\", \"match_adamw\")");
}

Muon::Muon(const OptimizerConfig& cfg, const ParamLayout& layout, Backend& backend)
    : cfg_(cfg), layout_(layout), backend_(backend) {
  muon_update_scale(cfg_.muon_scale, 1, 1);  // validates the rule name up front
  size_t n_matrix = 0, n_other = 0, max_numel = 0, max_gram = 0;
  for (const auto& v : layout_.views) {
    if (v.kind != ParamKind::Matrix) {
      state_offset_.push_back(n_other);
      n_other += v.numel;
      continue;
    }
    if (v.shape.size() != 2 || v.rows() > std::numeric_limits<int>::max() / 2 ||
        v.cols() > std::numeric_limits<int>::max() / 2)
      throw Error("muon: parameter " + v.name + " is not a 2-D matrix of int-sized dims");
    const size_t small = static_cast<size_t>(std::min(v.rows(), v.cols()));
    state_offset_.push_back(n_matrix);
    n_matrix += v.numel;
    max_numel = std::max(max_numel, v.numel);
    max_gram = std::max(max_gram, small * small);
  }
  momentum_ = backend_.alloc(n_matrix, DType::F32);
  adam_m_ = backend_.alloc(n_other, DType::F32);
  adam_v_ = backend_.alloc(n_other, DType::F32);
  x_ = backend_.alloc(max_numel, DType::F32);
  tmp_ = backend_.alloc(max_numel, DType::F32);
  gram_ = backend_.alloc(max_gram, DType::F32);
  poly_ = backend_.alloc(max_gram, DType::F32);
}

Muon::~Muon() {
  for (Buf* b : {&momentum_, &adam_m_, &adam_v_, &x_, &tmp_, &gram_, &poly_}) backend_.release(*b);
}

void Muon::step(Buf params, Buf grads, double lr, float grad_scale) {
  ++t_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(t_));
  const double eta = cfg_.muon_lr * (lr / cfg_.lr);  // the schedule's factor, Muon's peak
  const float beta = static_cast<float>(cfg_.muon_momentum);
  for (size_t i = 0; i < layout_.views.size(); ++i) {
    const ParamView& view = layout_.views[i];
    Buf p = params.slice(view.offset, view.numel), g = grads.slice(view.offset, view.numel);
    if (view.kind != ParamKind::Matrix) {
      const float wd = decays(view, cfg_) ? static_cast<float>(cfg_.weight_decay) : 0.0f;
      backend_.adamw_update(p, g, adam_m_.slice(state_offset_[i], view.numel),
                            adam_v_.slice(state_offset_[i], view.numel), static_cast<float>(lr),
                            static_cast<float>(cfg_.beta1), static_cast<float>(cfg_.beta2),
                            static_cast<float>(cfg_.eps), wd, static_cast<float>(bc1),
                            static_cast<float>(bc2), grad_scale);
      continue;
    }
    const int rows = static_cast<int>(view.rows()), cols = static_cast<int>(view.cols());
    Buf m = momentum_.slice(state_offset_[i], view.numel), u = x_.slice(0, view.numel);
    backend_.axpby(m, grad_scale, g, beta);                          // m ← β·m + g
    backend_.copy(u, m);                                             // u ← m
    if (cfg_.muon_nesterov) backend_.axpby(u, grad_scale, g, beta);  // u ← g + β·m
    newton_schulz(backend_, u, rows, cols, static_cast<float>(cfg_.ns_a),
                  static_cast<float>(cfg_.ns_b), static_cast<float>(cfg_.ns_c), cfg_.ns_steps, tmp_,
                  gram_, poly_);
    const double s = muon_update_scale(cfg_.muon_scale, rows, cols);
    backend_.axpby(p, static_cast<float>(-eta * s), u,
                   static_cast<float>(1.0 - eta * cfg_.muon_weight_decay));
  }
}

std::vector<std::pair<std::string, Buf>> Muon::state() {
  std::vector<std::pair<std::string, Buf>> s;
  if (!momentum_.empty()) s.emplace_back("muon.momentum", momentum_);
  if (!adam_m_.empty()) s.emplace_back("adam.m", adam_m_);
  if (!adam_v_.empty()) s.emplace_back("adam.v", adam_v_);
  return s;
}

}  // namespace loco
