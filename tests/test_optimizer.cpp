// Inner optimizers over the flat parameter buffer: hand-computed AdamW and SGD updates,
// weight-decay masks per parameter kind, bias correction over steps, gradient clipping.
#include <cmath>
#include <vector>

#include "loco/backend/cpu_backend.hpp"
#include "loco/optim/optimizer.hpp"
#include "support/catch.hpp"

using namespace loco;

namespace {

// A 4-view layout: embedding (2×2), norm (2), matrix (2×2), head (2×2).
ParamLayout toy_layout() {
  ParamLayout l;
  auto add = [&](const char* name, std::vector<int64_t> shape, ParamKind kind) {
    size_t n = 1;
    for (auto d : shape) n *= d;
    l.views.push_back(ParamView{name, shape, l.total, n, kind, -1});
    l.total += n;
  };
  add("embed", {2, 2}, ParamKind::Embedding);
  add("norm", {2}, ParamKind::Norm);
  add("matrix", {2, 2}, ParamKind::Matrix);
  add("head", {2, 2}, ParamKind::Head);
  return l;
}

// Scalar AdamW exactly as documented in backend.hpp, in double.
double adamw_reference(double p, const std::vector<double>& grads, double lr, double b1, double b2,
                       double eps, double wd) {
  double m = 0, v = 0;
  for (size_t t = 1; t <= grads.size(); ++t) {
    const double g = grads[t - 1];
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const double mhat = m / (1 - std::pow(b1, t)), vhat = v / (1 - std::pow(b2, t));
    p -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * p);
  }
  return p;
}

}  // namespace

TEST_CASE("weight decay applies to matrices, never to norm gains, to embeddings on request") {
  const ParamLayout l = toy_layout();
  OptimizerConfig cfg;
  CHECK(decays(l.find("matrix"), cfg));
  CHECK_FALSE(decays(l.find("norm"), cfg));
  CHECK_FALSE(decays(l.find("embed"), cfg));
  CHECK_FALSE(decays(l.find("head"), cfg));
  cfg.decay_embeddings = true;
  CHECK(decays(l.find("embed"), cfg));
  CHECK(decays(l.find("head"), cfg));
  CHECK_FALSE(decays(l.find("norm"), cfg));
}

TEST_CASE("AdamW over three steps equals the hand-computed update for every parameter kind") {
  const ParamLayout l = toy_layout();
  CpuBackend be;
  OptimizerConfig cfg;
  cfg.lr = 0.01;
  cfg.weight_decay = 0.5;  // large, so a wrong mask is obvious
  cfg.beta1 = 0.9;
  cfg.beta2 = 0.95;
  cfg.eps = 1e-8;
  AdamW opt(cfg, l, be);
  Buf params = be.alloc(l.total, DType::F32), grads = be.alloc(l.total, DType::F32);
  std::vector<float> p0(l.total);
  for (size_t i = 0; i < l.total; ++i) p0[i] = 0.5f + 0.1f * i;
  be.upload(params, p0.data());
  const double lrs[3] = {0.01, 0.005, 0.01};
  std::vector<double> expected(p0.begin(), p0.end());
  std::vector<double> m(l.total, 0), v(l.total, 0);
  for (int t = 1; t <= 3; ++t) {
    std::vector<float> g(l.total);
    for (size_t i = 0; i < l.total; ++i) g[i] = std::sin(1.0 + i * 0.7 + t);
    be.upload(grads, g.data());
    opt.step(params, grads, lrs[t - 1], 1.0f);
    for (const auto& view : l.views) {
      const double wd = decays(view, cfg) ? cfg.weight_decay : 0.0;
      for (size_t i = view.offset; i < view.offset + view.numel; ++i) {
        m[i] = 0.9 * m[i] + 0.1 * g[i];
        v[i] = 0.95 * v[i] + 0.05 * double(g[i]) * g[i];
        const double mhat = m[i] / (1 - std::pow(0.9, t)), vhat = v[i] / (1 - std::pow(0.95, t));
        expected[i] -= lrs[t - 1] * (mhat / (std::sqrt(vhat) + 1e-8) + wd * expected[i]);
      }
    }
  }
  CHECK(opt.steps_taken() == 3);
  std::vector<float> p(l.total);
  be.download(p.data(), params);
  for (size_t i = 0; i < l.total; ++i) {
    INFO("element " << i);
    CHECK(p[i] == Catch::Approx(expected[i]).epsilon(1e-5));
  }
  // Single-parameter cross-check against the scalar reference (constant lr).
  CHECK(adamw_reference(1.0, {0.3}, 0.01, 0.9, 0.95, 1e-8, 0.0) ==
        Catch::Approx(1.0 - 0.01).epsilon(1e-9));  // first step moves by lr·sign(g)
  be.release(params);
  be.release(grads);
}

TEST_CASE("SGD step: p ← p·(1 − lr·wd) − lr·scale·g with the decay mask") {
  const ParamLayout l = toy_layout();
  CpuBackend be;
  OptimizerConfig cfg;
  cfg.type = "sgd";
  cfg.weight_decay = 0.1;
  auto opt = make_inner_optimizer(cfg, l, be);
  Buf params = be.alloc(l.total, DType::F32), grads = be.alloc(l.total, DType::F32);
  std::vector<float> p0(l.total, 2.0f), g(l.total, 0.5f);
  be.upload(params, p0.data());
  be.upload(grads, g.data());
  opt->step(params, grads, 0.1, 0.5f);
  std::vector<float> p(l.total);
  be.download(p.data(), params);
  const auto& mat = l.find("matrix");
  const auto& norm = l.find("norm");
  CHECK(p[mat.offset] == Catch::Approx(2.0 * (1 - 0.1 * 0.1) - 0.1 * 0.5 * 0.5));
  CHECK(p[norm.offset] == Catch::Approx(2.0 - 0.1 * 0.5 * 0.5));
  be.release(params);
  be.release(grads);
}

TEST_CASE("global gradient norm and the clip factor") {
  CpuBackend be;
  Buf g = be.alloc(3, DType::F32);
  const float host[3] = {3.0f, 0.0f, 4.0f};
  be.upload(g, host);
  GradNorm n = global_grad_norm(be, g, 1.0);
  CHECK(n.norm == Catch::Approx(5.0));
  CHECK(n.clip_scale == Catch::Approx(0.2));
  CHECK(global_grad_norm(be, g, 10.0).clip_scale == 1.0f);
  CHECK(global_grad_norm(be, g, 0.0).clip_scale == 1.0f);  // clipping disabled
  be.release(g);
}

TEST_CASE("unknown optimizer type is an error naming it") {
  const ParamLayout l = toy_layout();
  CpuBackend be;
  OptimizerConfig cfg;
  cfg.type = "lion";
  CHECK_THROWS_WITH(make_inner_optimizer(cfg, l, be), LOCO_CONTAINS("lion"));
}
