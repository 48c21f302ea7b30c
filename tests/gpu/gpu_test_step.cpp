// The inner training step on CUDA (loco/train/train_step.hpp): the host-synchronised
// sequence, the device-resident one and its CUDA-graph replay give the same parameters and
// optimizer state bit for bit after a few steps (the same kernels in the same order; only the
// loss is summed in another order on the device). A capture refuses work that synchronises.
// Every token id appears once per micro-batch, so the embedding backward's float atomics add
// one value per row and launch: its result does not depend on their order on a GPU either.
// Skips without a GPU; scripts/emu-check.sh runs it in the CPU emulator (capture emulated).
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/core/error.hpp"
#include "loco/core/rng.hpp"
#include "loco/model/llama.hpp"
#include "loco/optim/optimizer.hpp"
#include "loco/train/train_step.hpp"
#include "support/catch.hpp"
#include "support/numeric.hpp"

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
  m.vocab_size = 128;
  m.d_model = 64;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.d_ff = 160;
  m.max_seq_len = 16;
  m.init_std = 0.05;
  return m;
}

// n distinct token ids per micro-batch (a seeded permutation of [0, V)).
std::vector<int32_t> distinct_tokens(int micro, int n, int V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> out;
  for (int m = 0; m < micro; ++m) {
    std::vector<int32_t> ids(static_cast<size_t>(V));
    std::iota(ids.begin(), ids.end(), 0);
    for (size_t i = ids.size() - 1; i > 0; --i) std::swap(ids[i], ids[rng.below(i + 1)]);
    out.insert(out.end(), ids.begin(), ids.begin() + n);
  }
  return out;
}

using loco::testing::same_bits;
std::vector<float> host(Backend& be, Buf b) { return loco::testing::download_floats(be, b); }

struct Run {
  std::vector<double> losses;
  std::vector<float> params, m, v;
  bool graph = false;
  TrainStep::Mode mode = TrainStep::Mode::Host;
};

Run train(Backend& be, TrainStep::Mode mode, bool with_reduce) {
  const ModelConfig mc = small_config();
  LlamaModel model(mc, be);
  model.init_weights(11);
  OptimizerConfig oc;
  oc.lr = 3e-3;
  oc.weight_decay = 0.1;
  oc.grad_clip = 0.5;
  AdamW opt(oc, model.layout(), be);
  const int B = 2, T = 16, micro = 2;
  TrainStep step(model, opt, TrainStep::Options{B, T, micro, oc.grad_clip, mode});
  TrainStep::Hooks hooks;
  if (with_reduce) hooks.reduce_grads = [&](Buf g) { be.scale(g, 1.0f); };
  Run r;
  for (int s = 0; s < 4; ++s) {
    const auto in = distinct_tokens(micro, B * T, mc.vocab_size, 10 + s);
    const auto tg = distinct_tokens(micro, B * T, mc.vocab_size, 20 + s);
    step.start(in.data(), tg.data(), oc.lr, hooks);
    const TrainStep::Result res = step.finish();
    REQUIRE(res.finite);
    r.losses.push_back(res.loss);
    model.params_changed();
  }
  r.params = host(be, model.params());
  r.m = host(be, opt.state()[0].second);
  r.v = host(be, opt.state()[1].second);
  r.graph = step.graph_captured();
  r.mode = step.mode();
  return r;
}

}  // namespace

TEST_CASE("CUDA train step: graph replay, eager device step and host step agree bit for bit") {
  if (!have_gpu()) return;
  auto be = make_backend("cuda");
  for (bool reduce : {false, true}) {
    INFO("gradient reduction between the graphs: " << reduce);
    const Run host_run = train(*be, TrainStep::Mode::Host, reduce);
    const Run eager = train(*be, TrainStep::Mode::Device, reduce);
    const Run graph = train(*be, TrainStep::Mode::Graph, reduce);
    CHECK(graph.graph);  // steps 2–4 replayed a captured graph
    CHECK(graph.mode == TrainStep::Mode::Graph);
    CHECK_FALSE(eager.graph);
    CHECK(same_bits(graph.params, eager.params));
    CHECK(same_bits(graph.m, eager.m));
    CHECK(same_bits(graph.v, eager.v));
    CHECK(graph.losses == eager.losses);
    CHECK(same_bits(eager.params, host_run.params));
    CHECK(same_bits(eager.m, host_run.m));
    for (size_t i = 0; i < eager.losses.size(); ++i)
      CHECK(std::abs(eager.losses[i] - host_run.losses[i]) <= 1e-9 * std::abs(host_run.losses[i]));
    CHECK(std::abs(host_run.losses.front() - std::log(128.0)) < 0.5);  // ≈ ln V at the start
  }
}

TEST_CASE("CUDA graph capture refuses work that synchronises, allocates or frees") {
  if (!have_gpu()) return;
  auto be = make_backend("cuda");
  Buf x = be->alloc(1000, DType::F32);
  CHECK_THROWS_WITH(be->capture([&] { be->sum_squares(x); }), LOCO_CONTAINS("captured graph"));
  CHECK_THROWS_WITH(be->capture([&] { be->alloc(10, DType::F32); }),
                    LOCO_CONTAINS("captured graph"));
  // The backend works normally afterwards, and a capturable op records and replays.
  auto graph = be->capture([&] { be->scale(x, 2.0f); });
  REQUIRE(graph != nullptr);
  std::vector<float> ones(1000, 1.0f), got(1000);
  be->upload(x, ones.data());
  CHECK(graph->launch());
  CHECK(graph->launch());
  be->download(got.data(), x);
  CHECK(got[0] == 4.0f);
  CHECK(got[999] == 4.0f);
  be->release(x);
}
