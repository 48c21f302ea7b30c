// Muon on the CUDA backend against the CPU backend: Newton–Schulz on wide and tall matrices
// (dims not multiples of 64) and three full Muon steps over a small model's parameter buffer.
// Both run in fp32 (gemm_f32 uses no TF32), so the tolerance is tight. Skips without a GPU.
#include <cmath>
#include <vector>

#include "loco/backend/cpu_backend.hpp"
#include "loco/core/rng.hpp"
#include "loco/model/param_layout.hpp"
#include "loco/optim/muon.hpp"
#include "support/catch.hpp"

using namespace loco;

namespace {

std::vector<float> random_vector(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.normal());
  return v;
}

double rel_error(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += double(a[i] - ref[i]) * (a[i] - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("CUDA Muon: Newton–Schulz and full steps match the CPU backend") {
  std::string why;
  if (!cuda_available(&why)) {
    WARN("SKIP: no usable CUDA device: " << why);
    return;
  }
  CpuBackend cpu;
  auto gpu = make_backend("cuda");

  for (auto [rows, cols] : {std::pair{40, 97}, std::pair{130, 48}, std::pair{64, 64}}) {
    const auto host = random_vector(size_t(rows) * cols, rows * 1000 + cols);
    const int g = std::min(rows, cols);
    std::vector<std::vector<float>> out;
    for (Backend* be : {static_cast<Backend*>(&cpu), gpu.get()}) {
      Buf x = be->alloc(host.size(), DType::F32), tmp = be->alloc(host.size(), DType::F32);
      Buf gram = be->alloc(size_t(g) * g, DType::F32), poly = be->alloc(size_t(g) * g, DType::F32);
      be->upload(x, host.data());
      newton_schulz(*be, x, rows, cols, 3.4445f, -4.7750f, 2.0315f, 5, tmp, gram, poly);
      out.emplace_back(host.size());
      be->download(out.back().data(), x);
      for (Buf* b : {&x, &tmp, &gram, &poly}) be->release(*b);
    }
    INFO(rows << "x" << cols);
    CHECK(rel_error(out[1], out[0]) < 1e-4);
  }

  ModelConfig m;
  m.vocab_size = 97;
  m.d_model = 80;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.d_ff = 200;
  const ParamLayout layout = llama_param_layout(m);
  OptimizerConfig oc;
  oc.type = "muon";
  const auto p0 = random_vector(layout.total, 1);
  std::vector<std::vector<float>> result;
  for (Backend* be : {static_cast<Backend*>(&cpu), gpu.get()}) {
    auto opt = make_inner_optimizer(oc, layout, *be);
    Buf p = be->alloc(layout.total, DType::F32), g = be->alloc(layout.total, DType::F32);
    be->upload(p, p0.data());
    for (int step = 0; step < 3; ++step) {
      const auto grad = random_vector(layout.total, 100 + step);
      be->upload(g, grad.data());
      opt->step(p, g, oc.lr, 0.7f);
    }
    result.emplace_back(layout.total);
    be->download(result.back().data(), p);
    be->release(p);
    be->release(g);
  }
  for (const auto& v : layout.views) {
    INFO(v.name);
    std::vector<float> a(result[1].begin() + v.offset, result[1].begin() + v.offset + v.numel);
    std::vector<float> r(result[0].begin() + v.offset, result[0].begin() + v.offset + v.numel);
    CHECK(rel_error(a, r) < 1e-5);
  }
}
