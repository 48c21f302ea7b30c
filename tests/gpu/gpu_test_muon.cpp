// Muon on the CUDA backend against the CPU backend: Newton–Schulz on wide and tall matrices
// (dims not multiples of 64) in fp32 (gemm_f32 uses no TF32: tight tolerance); batched
// Newton–Schulz in bf16 (what Muon runs on CUDA) against the fp32 CPU one, matrix by matrix;
// three full Muon steps over a small model's parameter buffer. Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "loco/backend/cpu_backend.hpp"
#include "loco/core/rng.hpp"
#include "loco/model/param_layout.hpp"
#include "loco/optim/muon.hpp"
#include "support/catch.hpp"

using namespace loco;

namespace {

// Newton–Schulz in bf16 against fp32, relative Frobenius error of the result (measured in the
// CPU emulator of the kernels with a bf16-rounding cuBLASLt stand-in: 1.6e-2 for NS alone,
// 7e-3 for the updates of three Muon steps; not yet measured on a GPU).
constexpr double kBf16NewtonSchulzTolerance = 3e-2;

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
  // Matrices: the CUDA backend runs Newton–Schulz in bf16 (fp32 accumulation), the CPU in
  // fp32, so compare the updates θ − θ₀ at bf16 tolerance. Everything else is AdamW in fp32.
  double worst_matrix = 0;
  for (const auto& v : layout.views) {
    INFO(v.name);
    std::vector<float> a(v.numel), r(v.numel);
    for (size_t k = 0; k < v.numel; ++k) {
      a[k] = result[1][v.offset + k] - p0[v.offset + k];
      r[k] = result[0][v.offset + k] - p0[v.offset + k];
    }
    const double e = rel_error(a, r);
    if (v.kind == ParamKind::Matrix) {
      worst_matrix = std::max(worst_matrix, e);
      CHECK(e < kBf16NewtonSchulzTolerance);
    } else {
      CHECK(e < 1e-4);
    }
  }
  WARN("Muon 3 steps, worst matrix update rel. error (bf16 NS vs fp32 CPU): " << worst_matrix);
}

TEST_CASE("CUDA batched Newton–Schulz in bf16 matches the CPU's fp32, matrix by matrix") {
  std::string why;
  if (!cuda_available(&why)) {
    WARN("SKIP: no usable CUDA device: " << why);
    return;
  }
  CpuBackend cpu;
  auto gpu = make_backend("cuda");
  double worst = 0;
  for (auto [rows, cols, batch] :
       {std::tuple{40, 97, 3}, std::tuple{130, 48, 2}, std::tuple{64, 64, 4}}) {
    const size_t numel = size_t(rows) * cols, n = size_t(std::min(rows, cols));
    const auto host = random_vector(numel * batch, rows * 7 + cols);
    // CPU reference: each matrix alone through the fp32 newton_schulz.
    std::vector<float> want(host.size());
    {
      Buf x = cpu.alloc(numel, DType::F32), tmp = cpu.alloc(numel, DType::F32);
      Buf gram = cpu.alloc(n * n, DType::F32), poly = cpu.alloc(n * n, DType::F32);
      for (int b = 0; b < batch; ++b) {
        cpu.upload(x, host.data() + b * numel);
        newton_schulz(cpu, x, rows, cols, 3.4445f, -4.7750f, 2.0315f, 5, tmp, gram, poly);
        cpu.download(want.data() + b * numel, x);
      }
      for (Buf* buf : {&x, &tmp, &gram, &poly}) cpu.release(*buf);
    }
    Backend& be = *gpu;
    Buf x = be.alloc(host.size(), DType::F32);
    Buf w0 = be.alloc(host.size(), DType::BF16), w1 = be.alloc(host.size(), DType::BF16);
    Buf gram = be.alloc(n * n * batch, DType::BF16), poly = be.alloc(n * n * batch, DType::BF16);
    be.upload(x, host.data());
    newton_schulz_batched(be, x, rows, cols, batch, 3.4445f, -4.7750f, 2.0315f, 5, w0, w1, gram,
                          poly);
    std::vector<float> got(host.size());
    be.download(got.data(), x);
    for (Buf* buf : {&x, &w0, &w1, &gram, &poly}) be.release(*buf);
    for (int b = 0; b < batch; ++b) {
      INFO(rows << "x" << cols << " matrix " << b << " of " << batch);
      const std::vector<float> g(got.begin() + b * numel, got.begin() + (b + 1) * numel);
      const std::vector<float> w(want.begin() + b * numel, want.begin() + (b + 1) * numel);
      const double e = rel_error(g, w);
      worst = std::max(worst, e);
      CHECK(e < kBf16NewtonSchulzTolerance);
    }
  }
  WARN("batched bf16 Newton–Schulz, worst rel. error vs fp32: " << worst);
}
