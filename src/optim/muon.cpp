#include "loco/optim/muon.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

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

void newton_schulz_batched(Backend& be, Buf x, int rows, int cols, int batch, float a, float b,
                           float c, int steps, Buf work0, Buf work1, Buf gram, Buf poly) {
  using S = Backend::Strided;
  const bool tall = rows > cols;
  const int n = tall ? cols : rows;  // Gram size
  const size_t numel = size_t(rows) * size_t(cols), nn = size_t(n) * size_t(n);
  const size_t total = numel * size_t(batch), grams = nn * size_t(batch);
  Buf X = x.slice(0, total), A = gram.slice(0, grams), B = poly.slice(0, grams);
  Buf cur = work0.slice(0, total), next = work1.slice(0, total);
  be.frobenius_normalize(X, numel, batch, 1e-7f);
  be.copy(cur, X);  // to the working dtype
  for (int k = 0; k < steps; ++k) {
    if (tall)  // A = XᵀX
      be.gemm_batched(true, false, n, n, rows, batch, 1.0f, S{cur, numel}, S{cur, numel}, 0.0f,
                      S{A, nn}, S{A, nn});
    else  // A = X·Xᵀ
      be.gemm_batched(false, true, n, n, cols, batch, 1.0f, S{cur, numel}, S{cur, numel}, 0.0f,
                      S{A, nn}, S{A, nn});
    // B = c·A·A + b·A
    be.gemm_batched(false, false, n, n, n, batch, c, S{A, nn}, S{A, nn}, b, S{A, nn}, S{B, nn});
    if (tall)  // X' = a·X + X·B
      be.gemm_batched(false, false, rows, cols, cols, batch, 1.0f, S{cur, numel}, S{B, nn}, a,
                      S{cur, numel}, S{next, numel});
    else  // X' = a·X + B·X
      be.gemm_batched(false, false, rows, cols, rows, batch, 1.0f, S{B, nn}, S{cur, numel}, a,
                      S{cur, numel}, S{next, numel});
    std::swap(cur, next);
  }
  be.copy(X, cur);
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
  size_t n_matrix = 0, n_other = 0;
  for (size_t i = 0; i < layout_.views.size(); ++i) {
    const ParamView& v = layout_.views[i];
    if (v.kind != ParamKind::Matrix) {
      state_offset_.push_back(n_other);
      n_other += v.numel;
      continue;
    }
    if (v.shape.size() != 2 || v.rows() > std::numeric_limits<int>::max() / 2 ||
        v.cols() > std::numeric_limits<int>::max() / 2)
      throw Error("muon: parameter " + v.name + " is not a 2-D matrix of int-sized dims");
    state_offset_.push_back(n_matrix);
    n_matrix += v.numel;
    const int rows = static_cast<int>(v.rows()), cols = static_cast<int>(v.cols());
    auto same = [&](const ShapeGroup& g) { return g.rows == rows && g.cols == cols; };
    auto it = std::find_if(groups_.begin(), groups_.end(), same);
    if (it == groups_.end()) it = groups_.insert(groups_.end(), ShapeGroup{rows, cols, {}, 1});
    it->views.push_back(i);
  }
  size_t max_x = 0, max_gram = 0;
  for (ShapeGroup& g : groups_) {
    const size_t numel = size_t(g.rows) * size_t(g.cols);
    const size_t small = size_t(std::min(g.rows, g.cols));
    g.batch = static_cast<int>(std::clamp<size_t>(kMaxBatchElements / numel, 1, g.views.size()));
    max_x = std::max(max_x, numel * size_t(g.batch));
    max_gram = std::max(max_gram, small * small * size_t(g.batch));
  }
  const DType work = backend_.activation_dtype();
  // Each allocation owns itself: one that fails frees those made before it.
  momentum_ = OwnedBuf(backend_, n_matrix, DType::F32);
  adam_m_ = OwnedBuf(backend_, n_other, DType::F32);
  adam_v_ = OwnedBuf(backend_, n_other, DType::F32);
  x_ = OwnedBuf(backend_, max_x, DType::F32);
  work0_ = OwnedBuf(backend_, max_x, work);
  work1_ = OwnedBuf(backend_, max_x, work);
  gram_ = OwnedBuf(backend_, max_gram, work);
  poly_ = OwnedBuf(backend_, max_gram, work);
}

void Muon::step(Buf params, Buf grads, double lr, float grad_scale) {
  ++t_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(t_));
  const double eta = cfg_.muon_lr * (lr / cfg_.lr);  // the schedule's factor, Muon's peak
  const float beta = static_cast<float>(cfg_.muon_momentum);
  for (size_t i = 0; i < layout_.views.size(); ++i) {
    const ParamView& view = layout_.views[i];
    if (view.kind == ParamKind::Matrix) continue;
    Buf p = params.slice(view.offset, view.numel), g = grads.slice(view.offset, view.numel);
    const float wd = decays(view, cfg_) ? static_cast<float>(cfg_.weight_decay) : 0.0f;
    backend_.adamw_update(p, g, adam_m_.slice(state_offset_[i], view.numel),
                          adam_v_.slice(state_offset_[i], view.numel), static_cast<float>(lr),
                          static_cast<float>(cfg_.beta1), static_cast<float>(cfg_.beta2),
                          static_cast<float>(cfg_.eps), wd, static_cast<float>(bc1),
                          static_cast<float>(bc2), grad_scale);
  }
  for (const ShapeGroup& group : groups_) {
    const size_t numel = size_t(group.rows) * size_t(group.cols);
    const double s = muon_update_scale(cfg_.muon_scale, group.rows, group.cols);
    for (size_t first = 0; first < group.views.size(); first += size_t(group.batch)) {
      const size_t count = std::min(size_t(group.batch), group.views.size() - first);
      for (size_t j = 0; j < count; ++j) {
        const size_t i = group.views[first + j];
        const ParamView& view = layout_.views[i];
        Buf g = grads.slice(view.offset, numel);
        Buf m = momentum_.slice(state_offset_[i], numel), u = x_.slice(j * numel, numel);
        // m ← β·m + g;  u ← g + β·m (Nesterov) or m
        backend_.muon_momentum(m, u, g, beta, grad_scale, cfg_.muon_nesterov);
      }
      newton_schulz_batched(backend_, x_, group.rows, group.cols, static_cast<int>(count),
                            static_cast<float>(cfg_.ns_a), static_cast<float>(cfg_.ns_b),
                            static_cast<float>(cfg_.ns_c), cfg_.ns_steps, work0_, work1_, gram_,
                            poly_);
      for (size_t j = 0; j < count; ++j) {
        const ParamView& view = layout_.views[group.views[first + j]];
        backend_.axpby(params.slice(view.offset, numel), static_cast<float>(-eta * s),
                       x_.slice(j * numel, numel),
                       static_cast<float>(1.0 - eta * cfg_.muon_weight_decay));
      }
    }
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
