// Whole-model checks for LlamaModel on the CPU backend:
//  1. a second, double-precision implementation of the same network (built from the op
//     templates) whose analytic gradient is verified by central finite differences for every
//     parameter tensor;
//  2. LlamaModel's fp32 loss and gradient match that reference for every tensor (GQA, tied and
//     untied heads);
//  3. loss at initialisation ≈ ln(vocab); gradient accumulation equals the big batch; a short
//     run overfits one batch.
#include <cmath>
#include <map>
#include <vector>

#include "loco/backend/cpu_backend.hpp"
#include "loco/core/rng.hpp"
#include "loco/model/llama.hpp"
#include "loco/ops/attention.hpp"
#include "loco/ops/cross_entropy.hpp"
#include "loco/ops/embedding.hpp"
#include "loco/ops/matmul.hpp"
#include "loco/ops/rmsnorm.hpp"
#include "loco/ops/rope.hpp"
#include "loco/ops/swiglu.hpp"
#include "loco/ops/vector_ops.hpp"
#include "loco/optim/optimizer.hpp"
#include "support/catch.hpp"

using namespace loco;
using namespace loco::ops;

namespace {

ModelConfig tiny_gqa_config(bool tied) {
  ModelConfig m;
  m.vocab_size = 13;
  m.d_model = 16;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;  // GQA: two query heads share each kv head
  m.d_ff = 24;
  m.max_seq_len = 8;
  m.tie_embeddings = tied;
  m.init_std = 0.3;  // large enough that every path carries a visible gradient
  return m;
}

struct Batch {
  int B, T;
  std::vector<int32_t> inputs, targets;
};

Batch random_batch(int B, int T, int V, uint64_t seed) {
  Rng rng(seed);
  Batch b{B, T, {}, {}};
  for (int i = 0; i < B * T; ++i) {
    b.inputs.push_back(static_cast<int32_t>(rng.below(V)));
    b.targets.push_back(static_cast<int32_t>(rng.below(V)));
  }
  return b;
}

// The reference: the same network in double precision, composed independently of
// LlamaModel from the op templates. Returns the mean loss; fills grads when non-null.
double reference_loss(const ModelConfig& m, const ParamLayout& layout, const std::vector<double>& p,
                      const Batch& batch, std::vector<double>* grads) {
  const int B = batch.B, T = batch.T, N = B * T;
  const int C = m.d_model, F = m.d_ff, V = m.vocab_size, NH = m.n_heads, NKV = m.n_kv_heads;
  const int hd = m.head_dim(), QD = NH * hd, KVD = NKV * hd, L = m.n_layers;
  auto w = [&](const std::string& name) { return p.data() + layout.find(name).offset; };
  auto layer = [](int l, const char* n) { return "model.layers." + std::to_string(l) + "." + n; };
  using Vec = std::vector<double>;
  struct Saved {
    Vec x, ln1, rstd1, q, k, v, att, lse, mid, ln2, rstd2, gate, up, h;
  };
  std::vector<Saved> s(L);
  Vec x(N * C);
  embedding_forward(x.data(), batch.inputs.data(), w("model.embed_tokens.weight"), N, C);
  for (int l = 0; l < L; ++l) {
    Saved& S = s[l];
    S.x = x;
    S.ln1.resize(N * C), S.rstd1.resize(N), S.q.resize(N * QD), S.k.resize(N * KVD);
    S.v.resize(N * KVD), S.att.resize(N * QD), S.lse.resize(B * NH * T);
    rmsnorm_forward(S.ln1.data(), S.rstd1.data(), S.x.data(), w(layer(l, "input_layernorm.weight")),
                    N, C, m.norm_eps);
    matmul_forward(S.q.data(), S.ln1.data(), w(layer(l, "self_attn.q_proj.weight")), N, C, QD);
    matmul_forward(S.k.data(), S.ln1.data(), w(layer(l, "self_attn.k_proj.weight")), N, C, KVD);
    matmul_forward(S.v.data(), S.ln1.data(), w(layer(l, "self_attn.v_proj.weight")), N, C, KVD);
    rope_forward(S.q.data(), S.q.data(), B, T, NH, hd, m.rope_theta);
    rope_forward(S.k.data(), S.k.data(), B, T, NKV, hd, m.rope_theta);
    attention_forward(S.att.data(), S.lse.data(), S.q.data(), S.k.data(), S.v.data(), B, T, NH, NKV,
                      hd);
    Vec o(N * C);
    matmul_forward(o.data(), S.att.data(), w(layer(l, "self_attn.o_proj.weight")), N, QD, C);
    S.mid.resize(N * C);
    for (int i = 0; i < N * C; ++i) S.mid[i] = S.x[i] + o[i];
    S.ln2.resize(N * C), S.rstd2.resize(N), S.gate.resize(N * F), S.up.resize(N * F),
        S.h.resize(N * F);
    rmsnorm_forward(S.ln2.data(), S.rstd2.data(), S.mid.data(),
                    w(layer(l, "post_attention_layernorm.weight")), N, C, m.norm_eps);
    matmul_forward(S.gate.data(), S.ln2.data(), w(layer(l, "mlp.gate_proj.weight")), N, C, F);
    matmul_forward(S.up.data(), S.ln2.data(), w(layer(l, "mlp.up_proj.weight")), N, C, F);
    swiglu_forward(S.h.data(), S.gate.data(), S.up.data(), static_cast<size_t>(N) * F);
    Vec d(N * C);
    matmul_forward(d.data(), S.h.data(), w(layer(l, "mlp.down_proj.weight")), N, F, C);
    for (int i = 0; i < N * C; ++i) x[i] = S.mid[i] + d[i];
  }
  Vec lnf(N * C), rstdf(N), logits(N * V), losses(N);
  rmsnorm_forward(lnf.data(), rstdf.data(), x.data(), w("model.norm.weight"), N, C, m.norm_eps);
  const std::string head = m.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  matmul_forward(logits.data(), lnf.data(), w(head), N, C, V);
  cross_entropy(losses.data(), logits.data(), batch.targets.data(), N, V, 1.0 / N,
                grads != nullptr);
  double loss = 0;
  for (double l : losses) loss += l;
  loss /= N;
  if (!grads) return loss;

  Vec& g = *grads;
  g.assign(p.size(), 0.0);
  auto gw = [&](const std::string& name) { return g.data() + layout.find(name).offset; };
  Vec dln(N * C), dres(N * C, 0.0);
  matmul_backward(dln.data(), gw(head), logits.data(), lnf.data(), w(head), N, C, V, false);
  rmsnorm_backward(dres.data(), gw("model.norm.weight"), dln.data(), x.data(),
                   w("model.norm.weight"), rstdf.data(), N, C);
  for (int l = L - 1; l >= 0; --l) {
    Saved& S = s[l];
    Vec dh(N * F), dgate(N * F), dup(N * F), datt(N * QD), dq(N * QD), dk(N * KVD), dv(N * KVD);
    matmul_backward(dh.data(), gw(layer(l, "mlp.down_proj.weight")), dres.data(), S.h.data(),
                    w(layer(l, "mlp.down_proj.weight")), N, F, C, false);
    swiglu_backward(dgate.data(), dup.data(), dh.data(), S.gate.data(), S.up.data(),
                    static_cast<size_t>(N) * F);
    matmul_backward(dln.data(), gw(layer(l, "mlp.gate_proj.weight")), dgate.data(), S.ln2.data(),
                    w(layer(l, "mlp.gate_proj.weight")), N, C, F, false);
    matmul_backward(dln.data(), gw(layer(l, "mlp.up_proj.weight")), dup.data(), S.ln2.data(),
                    w(layer(l, "mlp.up_proj.weight")), N, C, F, true);
    rmsnorm_backward(dres.data(), gw(layer(l, "post_attention_layernorm.weight")), dln.data(),
                     S.mid.data(), w(layer(l, "post_attention_layernorm.weight")), S.rstd2.data(),
                     N, C);
    matmul_backward(datt.data(), gw(layer(l, "self_attn.o_proj.weight")), dres.data(), S.att.data(),
                    w(layer(l, "self_attn.o_proj.weight")), N, QD, C, false);
    attention_backward(dq.data(), dk.data(), dv.data(), datt.data(), S.q.data(), S.k.data(),
                       S.v.data(), S.att.data(), S.lse.data(), B, T, NH, NKV, hd);
    rope_backward(dq.data(), dq.data(), B, T, NH, hd, m.rope_theta);
    rope_backward(dk.data(), dk.data(), B, T, NKV, hd, m.rope_theta);
    matmul_backward(dln.data(), gw(layer(l, "self_attn.q_proj.weight")), dq.data(), S.ln1.data(),
                    w(layer(l, "self_attn.q_proj.weight")), N, C, QD, false);
    matmul_backward(dln.data(), gw(layer(l, "self_attn.k_proj.weight")), dk.data(), S.ln1.data(),
                    w(layer(l, "self_attn.k_proj.weight")), N, C, KVD, true);
    matmul_backward(dln.data(), gw(layer(l, "self_attn.v_proj.weight")), dv.data(), S.ln1.data(),
                    w(layer(l, "self_attn.v_proj.weight")), N, C, KVD, true);
    rmsnorm_backward(dres.data(), gw(layer(l, "input_layernorm.weight")), dln.data(), S.x.data(),
                     w(layer(l, "input_layernorm.weight")), S.rstd1.data(), N, C);
  }
  embedding_backward(gw("model.embed_tokens.weight"), dres.data(), batch.inputs.data(), N, C);
  return loss;
}

std::vector<float> download(Backend& be, Buf b) {
  std::vector<float> h(b.numel);
  be.download(h.data(), b);
  return h;
}

double rel_error(const float* a, const double* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace

TEST_CASE("reference model: analytic gradient of every tensor matches finite differences") {
  for (bool tied : {false, true}) {
    const ModelConfig m = tiny_gqa_config(tied);
    CpuBackend be;
    LlamaModel model(m, be);
    model.init_weights(7);
    const auto pf = download(be, model.params());
    std::vector<double> p(pf.begin(), pf.end()), g;
    const Batch batch = random_batch(2, 5, m.vocab_size, 11);
    reference_loss(m, model.layout(), p, batch, &g);
    for (const auto& view : model.layout().views) {
      INFO("tied=" << tied << " tensor " << view.name);
      double num = 0, den = 0;
      for (size_t i = 0; i < view.numel; ++i) {
        const size_t at = view.offset + i;
        const double h = 1e-5, saved = p[at];
        p[at] = saved + h;
        const double up = reference_loss(m, model.layout(), p, batch, nullptr);
        p[at] = saved - h;
        const double down = reference_loss(m, model.layout(), p, batch, nullptr);
        p[at] = saved;
        const double fd = (up - down) / (2 * h);
        num += (fd - g[at]) * (fd - g[at]);
        den += g[at] * g[at];
      }
      REQUIRE(den > 1e-16);  // the tensor really receives gradient
      CHECK(std::sqrt(num / den) < 1e-6);
    }
  }
}

TEST_CASE("LlamaModel fp32 loss and gradients match the double-precision reference") {
  for (bool tied : {false, true}) {
    const ModelConfig m = tiny_gqa_config(tied);
    CpuBackend be;
    LlamaModel model(m, be);
    model.init_weights(3);
    const Batch batch = random_batch(2, 7, m.vocab_size, 5);
    be.zero(model.grads());
    const double loss =
        model.forward_backward(batch.inputs.data(), batch.targets.data(), 2, 7, 1.0f);
    const auto pf = download(be, model.params());
    std::vector<double> p(pf.begin(), pf.end()), g;
    const double ref = reference_loss(m, model.layout(), p, batch, &g);
    CHECK(loss == Catch::Approx(ref).epsilon(1e-5));
    const auto gf = download(be, model.grads());
    for (const auto& view : model.layout().views) {
      INFO("tied=" << tied << " tensor " << view.name);
      CHECK(rel_error(gf.data() + view.offset, g.data() + view.offset, view.numel) < 1e-4);
    }
    // forward_loss (no gradient) gives the same loss
    CHECK(model.forward_loss(batch.inputs.data(), batch.targets.data(), 2, 7) ==
          Catch::Approx(loss).epsilon(1e-6));
  }
}

TEST_CASE("loss at initialisation is close to ln(vocab)") {
  ModelConfig m;  // defaults: vocab 256, init_std 0.02
  CpuBackend be;
  LlamaModel model(m, be);
  model.init_weights(1234);
  const Batch batch = random_batch(4, 32, m.vocab_size, 99);
  const double loss = model.forward_loss(batch.inputs.data(), batch.targets.data(), 4, 32);
  CHECK(std::abs(loss - std::log(256.0)) < 0.05);
}

TEST_CASE("parameter layout: HF names, shapes, contiguous offsets") {
  ModelConfig m = tiny_gqa_config(false);
  const ParamLayout layout = llama_param_layout(m);
  size_t expected_offset = 0;
  for (const auto& v : layout.views) {
    CHECK(v.offset == expected_offset);
    expected_offset += v.numel;
  }
  CHECK(layout.total == expected_offset);
  CHECK(layout.find("model.layers.1.self_attn.k_proj.weight").shape ==
        std::vector<int64_t>{2 * 4, 16});  // NKV*hd × C
  CHECK(layout.find("lm_head.weight").kind == ParamKind::Head);
  CHECK_THROWS_WITH(layout.find("model.layers.9.mlp.up_proj.weight"), LOCO_CONTAINS("layers.9"));
  m.tie_embeddings = true;
  CHECK(llama_param_layout(m).total == layout.total - 13 * 16);
}

TEST_CASE("gradient accumulation over two half batches equals the full batch") {
  const ModelConfig m = tiny_gqa_config(false);
  CpuBackend be;
  LlamaModel model(m, be);
  model.init_weights(5);
  const Batch full = random_batch(2, 6, m.vocab_size, 8);
  be.zero(model.grads());
  model.forward_backward(full.inputs.data(), full.targets.data(), 2, 6, 1.0f);
  const auto g_full = download(be, model.grads());
  be.zero(model.grads());
  model.forward_backward(full.inputs.data(), full.targets.data(), 1, 6, 0.5f);
  model.forward_backward(full.inputs.data() + 6, full.targets.data() + 6, 1, 6, 0.5f);
  const auto g_acc = download(be, model.grads());
  std::vector<double> ref(g_full.begin(), g_full.end());
  CHECK(rel_error(g_acc.data(), ref.data(), ref.size()) < 1e-5);
}

TEST_CASE("a short AdamW run overfits one batch") {
  ModelConfig m = tiny_gqa_config(false);
  m.init_std = 0.02;
  CpuBackend be;
  LlamaModel model(m, be);
  model.init_weights(42);
  OptimizerConfig oc;
  oc.lr = 1e-2;
  oc.weight_decay = 0.0;
  AdamW opt(oc, model.layout(), be);
  const Batch batch = random_batch(2, 8, m.vocab_size, 1);
  double first = 0, last = 0;
  for (int step = 0; step < 150; ++step) {
    be.zero(model.grads());
    last = model.forward_backward(batch.inputs.data(), batch.targets.data(), 2, 8, 1.0f);
    if (step == 0) first = last;
    opt.step(model.params(), model.grads(), oc.lr, 1.0f);
    model.params_changed();
  }
  CHECK(first > 2.3);  // ≈ ln 13
  CHECK(last < 0.1);   // memorised 16 random targets
}
