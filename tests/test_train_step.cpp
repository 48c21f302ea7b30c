// The inner training step (loco/train/train_step.hpp) on the CPU backend: the host-
// synchronised sequence and the device-resident one (and graph mode, which the CPU runs as
// device) give the same parameters, optimizer state and losses, bit for bit, with gradient
// accumulation and active clipping; a non-finite gradient skips the update in every mode and
// does not count as an optimizer step; the hooks run where they should.
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "loco/backend/cpu_backend.hpp"
#include "loco/core/rng.hpp"
#include "loco/model/llama.hpp"
#include "loco/optim/optimizer.hpp"
#include "loco/train/train_step.hpp"
#include "support/catch.hpp"
#include "support/numeric.hpp"

using namespace loco;

namespace {

ModelConfig small_config() {
  ModelConfig m;
  m.vocab_size = 64;
  m.d_model = 32;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.d_ff = 88;
  m.max_seq_len = 16;
  m.init_std = 0.05;
  return m;
}

std::vector<int32_t> tokens(size_t n, int V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.below(uint64_t(V)));
  return t;
}

using loco::testing::same_bits;
std::vector<float> host(Backend& be, Buf b) { return loco::testing::download_floats(be, b); }

// One model + AdamW trained for `steps` steps in one mode; what the comparison needs.
struct Run {
  std::vector<double> losses, norms;
  std::vector<float> params, m, v;
  int64_t steps_taken = 0;
  TrainStep::Mode mode_run = TrainStep::Mode::Host;
  int reduces = 0, polls = 0;
};

Run train(TrainStep::Mode mode, int steps, bool with_reduce,
          const std::vector<int>& poison_steps = {}) {
  const ModelConfig mc = small_config();
  CpuBackend be;
  LlamaModel model(mc, be);
  model.init_weights(7);
  OptimizerConfig oc;
  oc.lr = 3e-3;
  oc.weight_decay = 0.1;
  oc.grad_clip = 0.5;  // small: clipping is active
  AdamW opt(oc, model.layout(), be);
  const int B = 2, T = 8, micro = 2;
  TrainStep step(model, opt, TrainStep::Options{B, T, micro, oc.grad_clip, mode});
  Run r;
  TrainStep::Hooks hooks;
  hooks.poll = [&] { ++r.polls; };
  if (with_reduce)
    hooks.reduce_grads = [&](Buf g) {
      ++r.reduces;
      be.scale(g, 1.0f);  // stands in for an all-reduce of one replica
    };
  const size_t n = size_t(B) * T * micro;
  for (int s = 0; s < steps; ++s) {
    auto in = tokens(n, mc.vocab_size, 100 + s), tg = tokens(n, mc.vocab_size, 200 + s);
    bool poisoned = false;
    for (int p : poison_steps) poisoned |= p == s;
    if (poisoned) {  // a gain of the final norm becomes infinite: every later Σ g² is not finite
      const auto& normf = model.layout().find("model.norm.weight");
      std::vector<float> p = host(be, model.params());
      p[normf.offset] = std::numeric_limits<float>::infinity();
      be.upload(model.params(), p.data());
      model.params_changed();
    }
    step.start(in.data(), tg.data(), oc.lr, hooks);
    const TrainStep::Result res = step.finish();
    r.losses.push_back(res.loss);
    r.norms.push_back(res.finite ? res.grad_norm : -1.0);
    model.params_changed();
  }
  r.params = host(be, model.params());
  r.m = host(be, opt.state()[0].second);
  r.v = host(be, opt.state()[1].second);
  r.steps_taken = opt.steps_taken();
  r.mode_run = step.mode();
  return r;
}

}  // namespace

TEST_CASE("train step: host, device and graph modes give the same bits", "[train_step]") {
  for (bool reduce : {false, true}) {
    INFO("gradient reduction hook " << reduce);
    const Run host_run = train(TrainStep::Mode::Host, 4, reduce);
    const Run device_run = train(TrainStep::Mode::Device, 4, reduce);
    const Run graph_run = train(TrainStep::Mode::Graph, 4, reduce);
    CHECK(host_run.mode_run == TrainStep::Mode::Host);
    CHECK(device_run.mode_run == TrainStep::Mode::Device);
    CHECK(graph_run.mode_run == TrainStep::Mode::Device);  // the CPU has no graphs
    for (const Run* r : {&device_run, &graph_run}) {
      CHECK(r->losses == host_run.losses);
      CHECK(r->norms == host_run.norms);
      CHECK(same_bits(r->params, host_run.params));
      CHECK(same_bits(r->m, host_run.m));
      CHECK(same_bits(r->v, host_run.v));
      CHECK(r->steps_taken == 4);
      CHECK(r->polls == 4 * 2);  // after every micro-batch
      CHECK(r->reduces == (reduce ? 4 : 0));
    }
    CHECK(host_run.norms[0] > 0.5);  // clipping was active
    CHECK(host_run.losses[3] < host_run.losses[0] + 1.0);
  }
}

TEST_CASE("train step: a non-finite gradient skips the update in every mode", "[train_step]") {
  const Run host_run = train(TrainStep::Mode::Host, 3, false, {1});
  const Run device_run = train(TrainStep::Mode::Device, 3, false, {1});
  for (const Run* r : {&host_run, &device_run}) {
    CHECK(r->norms[0] > 0.0);
    CHECK(r->norms[1] == -1.0);  // step 2: not finite, skipped
    CHECK(r->norms[2] == -1.0);  // the infinite weight is still there
    CHECK(r->steps_taken == 1);  // only the first step counted
    CHECK_FALSE(std::isfinite(r->losses[1]));
  }
  CHECK(same_bits(device_run.params, host_run.params));
  CHECK(same_bits(device_run.m, host_run.m));
  CHECK(same_bits(device_run.v, host_run.v));
}

TEST_CASE("train step: LOCO_STEP picks the mode; a bad value is an error", "[train_step]") {
  CHECK(std::string(TrainStep::mode_name(TrainStep::Mode::Graph)) == "graph");
  ::setenv("LOCO_STEP", "host", 1);
  CHECK(TrainStep::mode_from_env() == TrainStep::Mode::Host);
  ::setenv("LOCO_STEP", "graph", 1);
  CHECK(TrainStep::mode_from_env() == TrainStep::Mode::Graph);
  ::setenv("LOCO_STEP", "fast", 1);
  CHECK_THROWS_WITH(TrainStep::mode_from_env(), LOCO_CONTAINS("LOCO_STEP = \"fast\""));
  ::unsetenv("LOCO_STEP");
  CHECK(TrainStep::mode_from_env() == TrainStep::Mode::Device);
}
