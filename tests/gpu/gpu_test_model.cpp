// Whole-model checks of the CUDA backend against the CPU reference: the same weights and
// tokens give the same loss and gradients (within bf16 tolerance), and 50 AdamW steps of the
// tiny config follow the CPU run's loss curve. Skips (passes with a message) without a GPU.
#include <cmath>
#include <cstdio>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/backend/cpu_backend.hpp"
#include "loco/core/rng.hpp"
#include "loco/model/llama.hpp"
#include "loco/optim/optimizer.hpp"
#include "support/catch.hpp"

using namespace loco;

namespace {

bool have_gpu() {
  std::string why;
  if (cuda_available(&why)) return true;
  WARN("SKIP: no usable CUDA device: " << why);
  return false;
}

ModelConfig small_config() {
  ModelConfig m;
  m.vocab_size = 256;
  m.d_model = 128;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.d_ff = 352;  // not a multiple of 64
  m.max_seq_len = 128;
  m.init_std = 0.05;
  return m;
}

std::vector<int32_t> random_tokens(size_t n, int V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.below(V));
  return t;
}

std::vector<float> download(Backend& be, Buf b) {
  std::vector<float> h(b.numel);
  be.download(h.data(), b);
  return h;
}

// Copies the CPU model's master weights into the CUDA model.
void copy_weights(LlamaModel& from_cpu, LlamaModel& to_gpu) {
  const auto host = download(from_cpu.backend(), from_cpu.params());
  to_gpu.backend().upload(to_gpu.params(), host.data());
  to_gpu.params_changed();
}

double rel_error(const float* a, const float* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += double(a[i] - ref[i]) * (a[i] - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace

TEST_CASE("CUDA model: loss and every parameter gradient match the CPU backend") {
  if (!have_gpu()) return;
  const ModelConfig m = small_config();
  CpuBackend cpu;
  auto gpu = make_backend("cuda");
  LlamaModel ref(m, cpu), model(m, *gpu);
  ref.init_weights(17);
  copy_weights(ref, model);
  for (int T : {64, 97}) {
    const int B = 3;
    const auto inputs = random_tokens(size_t(B) * T, m.vocab_size, 1 + T);
    const auto targets = random_tokens(size_t(B) * T, m.vocab_size, 2 + T);
    cpu.zero(ref.grads());
    gpu->zero(model.grads());
    const double loss_ref = ref.forward_backward(inputs.data(), targets.data(), B, T, 1.0f);
    const double loss = model.forward_backward(inputs.data(), targets.data(), B, T, 1.0f);
    INFO("T=" << T << " loss cuda " << loss << " cpu " << loss_ref);
    CHECK(std::abs(loss - loss_ref) / loss_ref < 1e-2);
    const auto g_ref = download(cpu, ref.grads());
    const auto g = download(*gpu, model.grads());
    double worst = 0;
    for (const auto& v : ref.layout().views) {
      const double err = rel_error(g.data() + v.offset, g_ref.data() + v.offset, v.numel);
      INFO("T=" << T << " tensor " << v.name << " rel err " << err);
      CHECK(err < 3e-2);
      worst = std::max(worst, err);
    }
    std::printf("model gradients T=%d: worst tensor rel err %.2e, loss %.6f vs %.6f\n", T, worst,
                loss, loss_ref);
  }
}

TEST_CASE("CUDA model: 50 AdamW steps follow the CPU loss curve") {
  if (!have_gpu()) return;
  ModelConfig m = small_config();
  m.init_std = 0.02;
  CpuBackend cpu;
  auto gpu = make_backend("cuda");
  LlamaModel ref(m, cpu), model(m, *gpu);
  ref.init_weights(5);
  copy_weights(ref, model);
  OptimizerConfig oc;
  oc.lr = 3e-3;
  AdamW opt_ref(oc, ref.layout(), cpu), opt(oc, model.layout(), *gpu);
  const int B = 8, T = 64;
  // A learnable stream: a repeating pattern with noise, so the loss falls well below ln 256.
  double max_gap = 0, first = 0, last_ref = 0, last = 0;
  for (int step = 0; step < 50; ++step) {
    std::vector<int32_t> inputs(size_t(B) * T), targets(inputs.size());
    Rng rng(100 + step);
    for (size_t i = 0; i < inputs.size(); ++i) {
      inputs[i] = static_cast<int32_t>((i * 7 + rng.below(3)) % 64);
      targets[i] = static_cast<int32_t>((inputs[i] + 1) % 64);
    }
    cpu.zero(ref.grads());
    gpu->zero(model.grads());
    last_ref = ref.forward_backward(inputs.data(), targets.data(), B, T, 1.0f);
    last = model.forward_backward(inputs.data(), targets.data(), B, T, 1.0f);
    if (step == 0) first = last_ref;
    max_gap = std::max(max_gap, std::abs(last - last_ref));
    const auto gn_ref = global_grad_norm(cpu, ref.grads(), 1.0);
    const auto gn = global_grad_norm(*gpu, model.grads(), 1.0);
    opt_ref.step(ref.params(), ref.grads(), oc.lr, gn_ref.clip_scale);
    opt.step(model.params(), model.grads(), oc.lr, gn.clip_scale);
    ref.params_changed();
    model.params_changed();
  }
  std::printf("50 steps: loss %.4f -> cpu %.4f, cuda %.4f, max |gap| %.4f\n", first, last_ref, last,
              max_gap);
  CHECK(last_ref < first - 1.0);  // the run really learned something
  CHECK(max_gap < 0.05 * first);  // bf16 tolerance along the whole curve
  CHECK(std::abs(last - last_ref) < 0.05 * last_ref + 0.02);
}
