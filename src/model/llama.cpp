#include "loco/model/llama.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "loco/backend/owned_buf.hpp"
#include "loco/core/rng.hpp"

namespace loco {

// Named views of one block's weights (compute dtype) and gradients (F32).
struct LlamaModel::Weights {
  Buf ln1, wq, wk, wv, wo, ln2, wgate, wup, wdown;
  Buf d_ln1, d_wq, d_wk, d_wv, d_wo, d_ln2, d_wgate, d_wup, d_wdown;
};

// Everything the forward pass keeps for the backward pass, sized for B×T tokens.
// Per-layer tensors are indexed [layer]; backward scratch is shared by all layers.
struct LlamaModel::Activations {
  int B = 0, T = 0;
  Buf inputs, targets;                // (N) I32
  std::vector<Buf> residual;          // L+1 × (N,C): input of each block, then the final stream
  std::vector<Buf> ln1, ln2;          // (N,C)
  std::vector<Buf> rstd1, rstd2;      // (N) F32
  std::vector<Buf> q, k, v;           // (N,NH*hd), (N,NKV*hd) ×2; q and k after RoPE
  std::vector<Buf> att, lse;          // (N,NH*hd), (B,NH,T) F32
  std::vector<Buf> mid;               // (N,C): residual after attention
  std::vector<Buf> gate, up, hidden;  // (N,F)
  Buf lnf, rstdf;                     // (N,C), (N) F32
  Buf logits;                         // (N,V); overwritten by dlogits in training
  Buf losses;                         // (N) F32
  Buf tmp;                            // (N,C) projection output before the residual add
  // backward scratch
  Buf d_res, d_ln;             // (N,C)
  Buf d_att, d_q;              // (N,NH*hd)
  Buf d_k, d_v;                // (N,NKV*hd)
  Buf d_hidden, d_gate, d_up;  // (N,F)
  // The memory behind the views above: one allocation per dtype (activation dtype, F32, I32).
  std::vector<OwnedBuf> arenas;
};

LlamaModel::LlamaModel(const ModelConfig& config, Backend& backend)
    : config_(config),
      backend_(backend),
      layout_(llama_param_layout(config)),
      params_(backend, layout_.total, DType::F32),
      grads_(backend, layout_.total, DType::F32) {
  if (backend_.activation_dtype() != DType::F32)
    compute_copy_ = OwnedBuf(backend_, layout_.total, backend_.activation_dtype());
  compute_params_ = compute_copy_.empty() ? params_.get() : compute_copy_.get();
}

LlamaModel::~LlamaModel() = default;

void LlamaModel::init_weights(uint64_t seed) {
  std::vector<float> host(layout_.total);
  Rng rng(seed);
  for (const auto& v : layout_.views) {
    float* p = host.data() + v.offset;
    if (v.kind == ParamKind::Norm) {
      for (size_t i = 0; i < v.numel; ++i) p[i] = 1.0f;
    } else {
      for (size_t i = 0; i < v.numel; ++i)
        p[i] = static_cast<float>(rng.normal() * config_.init_std);
    }
  }
  backend_.upload(params_, host.data());
  params_changed();
}

void LlamaModel::params_changed() {
  if (!compute_copy_.empty()) backend_.copy(compute_copy_, params_);
}

LlamaModel::Weights LlamaModel::weights_for_layer(int l) const {
  const std::string p = "model.layers." + std::to_string(l) + ".";
  auto w = [&](const char* name) {
    const auto& v = layout_.find(p + name);
    return compute_params_.slice(v.offset, v.numel);
  };
  auto g = [&](const char* name) { return grad(layout_.find(p + name)); };
  return Weights{w("input_layernorm.weight"),
                 w("self_attn.q_proj.weight"),
                 w("self_attn.k_proj.weight"),
                 w("self_attn.v_proj.weight"),
                 w("self_attn.o_proj.weight"),
                 w("post_attention_layernorm.weight"),
                 w("mlp.gate_proj.weight"),
                 w("mlp.up_proj.weight"),
                 w("mlp.down_proj.weight"),
                 g("input_layernorm.weight"),
                 g("self_attn.q_proj.weight"),
                 g("self_attn.k_proj.weight"),
                 g("self_attn.v_proj.weight"),
                 g("self_attn.o_proj.weight"),
                 g("post_attention_layernorm.weight"),
                 g("mlp.gate_proj.weight"),
                 g("mlp.up_proj.weight"),
                 g("mlp.down_proj.weight")};
}

void LlamaModel::ensure_activations(int B, int T) {
  if (acts_ && acts_->T == T && acts_->B >= B) return;
  acts_.reset();  // frees the old arenas before the new ones are allocated
  acts_ = std::make_unique<Activations>();
  ++activations_generation_;
  auto& a = *acts_;
  a.B = B;
  a.T = T;
  const size_t N = static_cast<size_t>(B) * T;
  const size_t C = config_.d_model, F = config_.d_ff, V = config_.vocab_size;
  const size_t QD = static_cast<size_t>(config_.n_heads) * config_.head_dim();
  const size_t KVD = static_cast<size_t>(config_.n_kv_heads) * config_.head_dim();
  const int L = config_.n_layers;
  const DType act = backend_.activation_dtype();
  // Every view is a request (its Buf, size, dtype); then one arena per dtype holds them all,
  // each view starting on a 256-byte boundary (vector loads, cuBLASLt's preferred alignment).
  struct Request {
    Buf* view;
    size_t numel;
    DType dtype;
  };
  std::vector<Request> requests;
  auto make = [&](Buf& view, size_t n, DType t) { requests.push_back({&view, n, t}); };
  auto per_layer = [&](std::vector<Buf>& list, int count, size_t n, DType t) {
    list.resize(size_t(count));  // sized first: the requests point into it
    for (Buf& view : list) make(view, n, t);
  };
  make(a.inputs, N, DType::I32);
  make(a.targets, N, DType::I32);
  per_layer(a.residual, L + 1, N * C, act);
  per_layer(a.ln1, L, N * C, act);
  per_layer(a.ln2, L, N * C, act);
  per_layer(a.rstd1, L, N, DType::F32);
  per_layer(a.rstd2, L, N, DType::F32);
  per_layer(a.q, L, N * QD, act);
  per_layer(a.k, L, N * KVD, act);
  per_layer(a.v, L, N * KVD, act);
  per_layer(a.att, L, N * QD, act);
  per_layer(a.lse, L, static_cast<size_t>(B) * config_.n_heads * T, DType::F32);
  per_layer(a.mid, L, N * C, act);
  per_layer(a.gate, L, N * F, act);
  per_layer(a.up, L, N * F, act);
  per_layer(a.hidden, L, N * F, act);
  make(a.lnf, N * C, act);
  make(a.rstdf, N, DType::F32);
  make(a.logits, N * V, act);
  make(a.losses, N, DType::F32);
  make(a.tmp, N * C, act);
  make(a.d_res, N * C, act);
  make(a.d_ln, N * C, act);
  make(a.d_att, N * QD, act);
  make(a.d_q, N * QD, act);
  make(a.d_k, N * KVD, act);
  make(a.d_v, N * KVD, act);
  make(a.d_hidden, N * F, act);
  make(a.d_gate, N * F, act);
  make(a.d_up, N * F, act);

  constexpr size_t kAlignBytes = 256;
  std::vector<DType> dtypes{act};
  for (DType t : {DType::F32, DType::I32})
    if (t != act) dtypes.push_back(t);
  for (DType t : dtypes) {
    const size_t align = kAlignBytes / dtype_size(t);
    std::vector<size_t> offsets;
    size_t total = 0;
    for (const Request& r : requests) {
      if (r.dtype != t) continue;
      offsets.push_back(total);
      total += (r.numel + align - 1) / align * align;
    }
    if (total == 0) continue;
    a.arenas.emplace_back(backend_, total, t);
    const OwnedBuf& arena = a.arenas.back();
    size_t i = 0;
    for (const Request& r : requests)
      if (r.dtype == t) *r.view = arena.slice(offsets[i++], r.numel);
  }
}

double LlamaModel::forward_backward(const int32_t* inputs, const int32_t* targets, int B, int T,
                                    float grad_scale) {
  const double loss = forward(inputs, targets, B, T, /*training=*/true, grad_scale);
  backward(acts_->inputs.slice(0, static_cast<size_t>(B) * T), B, T);
  return loss;
}

void LlamaModel::forward_backward_device(Buf inputs, Buf targets, int B, int T, float grad_scale,
                                         Buf stats) {
  const size_t N = static_cast<size_t>(B) * T;
  LOCO_CHECK(inputs.dtype == DType::I32 && targets.dtype == DType::I32 && inputs.numel == N &&
                 targets.numel == N,
             "forward_backward_device: inputs and targets are B*T i32 tokens");
  forward_tokens(inputs, targets, B, T, /*training=*/true, grad_scale);
  backend_.accumulate_loss(stats, acts_->losses.slice(0, N));
  backward(inputs, B, T);
}

double LlamaModel::forward_loss(const int32_t* inputs, const int32_t* targets, int B, int T) {
  return forward(inputs, targets, B, T, /*training=*/false, 0.0f);
}

double LlamaModel::forward(const int32_t* inputs, const int32_t* targets, int B, int T,
                           bool training, float grad_scale) {
  LOCO_CHECK(T <= config_.max_seq_len, "sequence longer than model.max_seq_len");
  ensure_activations(B, T);
  const int N = B * T;
  Buf in_tok = acts_->inputs.slice(0, N), tgt_tok = acts_->targets.slice(0, N);
  backend_.upload(in_tok, inputs);
  backend_.upload(tgt_tok, targets);
  forward_tokens(in_tok, tgt_tok, B, T, training, grad_scale);
  std::vector<float> losses(N);
  backend_.download(losses.data(), acts_->losses.slice(0, N));
  double sum = 0.0;
  for (float x : losses) sum += x;
  return sum / N;
}

// The pre-norm blocks' residual adds run fused with the RMSNorm after them
// (add_rmsnorm_forward: the same values as add then rmsnorm_forward): mid = x + attention
// with ln2, and the block's output = mid + MLP with the next block's ln1 (or the final norm).
void LlamaModel::forward_tokens(Buf in_tok, Buf tgt_tok, int B, int T, bool training,
                                float grad_scale) {
  LOCO_CHECK(T <= config_.max_seq_len, "sequence longer than model.max_seq_len");
  ensure_activations(B, T);
  auto& a = *acts_;
  Backend& be = backend_;
  const int N = B * T;
  const int C = config_.d_model, F = config_.d_ff, V = config_.vocab_size;
  const int NH = config_.n_heads, NKV = config_.n_kv_heads, hd = config_.head_dim();
  const int QD = NH * hd, KVD = NKV * hd;
  const float eps = static_cast<float>(config_.norm_eps);
  const float theta = static_cast<float>(config_.rope_theta);
  auto rows = [&](Buf b, size_t width) { return b.slice(0, static_cast<size_t>(N) * width); };

  const auto& emb = layout_.find("model.embed_tokens.weight");
  be.embedding_forward(rows(a.residual[0], C), in_tok, compute_params_.slice(emb.offset, emb.numel),
                       N, C);  // (N,C)
  const auto& normf = layout_.find("model.norm.weight");
  for (int l = 0; l < config_.n_layers; ++l) {
    const Weights w = weights_for_layer(l);
    Buf x = rows(a.residual[l], C), ln1 = rows(a.ln1[l], C);
    if (l == 0) be.rmsnorm_forward(ln1, a.rstd1[l].slice(0, N), x, w.ln1, N, C, eps);
    // (later blocks: ln1 came with the previous block's output, below)
    Buf q = rows(a.q[l], QD), k = rows(a.k[l], KVD), v = rows(a.v[l], KVD);
    be.matmul_forward(q, ln1, w.wq, N, C, QD);  // (N,NH*hd)
    be.matmul_forward(k, ln1, w.wk, N, C, KVD);
    be.matmul_forward(v, ln1, w.wv, N, C, KVD);
    be.rope_forward(q, q, B, T, NH, hd, theta);
    be.rope_forward(k, k, B, T, NKV, hd, theta);
    Buf att = rows(a.att[l], QD);
    be.attention_forward(att, a.lse[l].slice(0, static_cast<size_t>(B) * NH * T), q, k, v, B, T, NH,
                         NKV, hd);
    Buf tmp = rows(a.tmp, C), mid = rows(a.mid[l], C);
    be.matmul_forward(tmp, att, w.wo, N, QD, C);
    Buf ln2 = rows(a.ln2[l], C);
    be.add_rmsnorm_forward(mid, ln2, a.rstd2[l].slice(0, N), x, tmp, w.ln2, N, C, eps);
    Buf gate = rows(a.gate[l], F), up = rows(a.up[l], F), hidden = rows(a.hidden[l], F);
    be.matmul_forward(gate, ln2, w.wgate, N, C, F);  // (N,F)
    be.matmul_forward(up, ln2, w.wup, N, C, F);
    be.swiglu_forward(hidden, gate, up, static_cast<size_t>(N) * F);
    be.matmul_forward(tmp, hidden, w.wdown, N, F, C);
    Buf out = rows(a.residual[l + 1], C);
    if (l + 1 < config_.n_layers) {
      be.add_rmsnorm_forward(out, rows(a.ln1[l + 1], C), a.rstd1[l + 1].slice(0, N), mid, tmp,
                             weights_for_layer(l + 1).ln1, N, C, eps);
    } else {
      be.add_rmsnorm_forward(out, rows(a.lnf, C), a.rstdf.slice(0, N), mid, tmp,
                             compute_params_.slice(normf.offset, normf.numel), N, C, eps);
    }
  }
  const auto& head =
      layout_.find(config_.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  Buf logits = rows(a.logits, V);
  be.matmul_forward(logits, rows(a.lnf, C), compute_params_.slice(head.offset, head.numel), N, C,
                    V);  // (N,V)
  // d(mean loss)/d(loss_n) = 1/N; the caller's grad_scale covers gradient accumulation.
  be.cross_entropy(a.losses.slice(0, N), logits, tgt_tok, N, V, grad_scale / N, training);
}

void LlamaModel::backward(Buf in_tok, int B, int T) {
  auto& a = *acts_;
  Backend& be = backend_;
  const int N = B * T;
  const int C = config_.d_model, F = config_.d_ff, V = config_.vocab_size;
  const int NH = config_.n_heads, NKV = config_.n_kv_heads, hd = config_.head_dim();
  const int QD = NH * hd, KVD = NKV * hd;
  const float theta = static_cast<float>(config_.rope_theta);
  auto rows = [&](Buf b, size_t width) { return b.slice(0, static_cast<size_t>(N) * width); };

  // LM head: logits now hold dlogits.
  const auto& head =
      layout_.find(config_.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  Buf d_ln = rows(a.d_ln, C), d_res = rows(a.d_res, C);
  be.matmul_backward(d_ln, grad(head), rows(a.logits, V), rows(a.lnf, C),
                     compute_params_.slice(head.offset, head.numel), N, C, V, false);
  const auto& normf = layout_.find("model.norm.weight");
  be.zero(d_res);
  be.rmsnorm_backward(d_res, grad(normf), d_ln, rows(a.residual[config_.n_layers], C),
                      compute_params_.slice(normf.offset, normf.numel), a.rstdf.slice(0, N), N, C);

  // d_res carries ∂loss/∂(residual stream) down through the blocks; each residual add passes
  // it through unchanged and each RMSNorm backward adds its branch's contribution.
  for (int l = config_.n_layers - 1; l >= 0; --l) {
    const Weights w = weights_for_layer(l);
    // residual[l+1] = mid + down(swiglu(gate(ln2), up(ln2)))
    Buf d_hidden = rows(a.d_hidden, F), d_gate = rows(a.d_gate, F), d_up = rows(a.d_up, F);
    be.matmul_backward(d_hidden, w.d_wdown, d_res, rows(a.hidden[l], F), w.wdown, N, F, C, false);
    be.swiglu_backward(d_gate, d_up, d_hidden, rows(a.gate[l], F), rows(a.up[l], F),
                       static_cast<size_t>(N) * F);
    Buf ln2 = rows(a.ln2[l], C);
    be.matmul_backward(d_ln, w.d_wgate, d_gate, ln2, w.wgate, N, C, F, false);
    be.matmul_backward(d_ln, w.d_wup, d_up, ln2, w.wup, N, C, F, true);
    be.rmsnorm_backward(d_res, w.d_ln2, d_ln, rows(a.mid[l], C), w.ln2, a.rstd2[l].slice(0, N), N,
                        C);
    // mid = residual[l] + o_proj(attention(rope(q), rope(k), v))
    Buf d_att = rows(a.d_att, QD);
    be.matmul_backward(d_att, w.d_wo, d_res, rows(a.att[l], QD), w.wo, N, QD, C, false);
    Buf d_q = rows(a.d_q, QD), d_k = rows(a.d_k, KVD), d_v = rows(a.d_v, KVD);
    be.attention_backward(d_q, d_k, d_v, d_att, rows(a.q[l], QD), rows(a.k[l], KVD),
                          rows(a.v[l], KVD), rows(a.att[l], QD),
                          a.lse[l].slice(0, static_cast<size_t>(B) * NH * T), B, T, NH, NKV, hd);
    be.rope_backward(d_q, d_q, B, T, NH, hd, theta);
    be.rope_backward(d_k, d_k, B, T, NKV, hd, theta);
    Buf ln1 = rows(a.ln1[l], C);
    be.matmul_backward(d_ln, w.d_wq, d_q, ln1, w.wq, N, C, QD, false);
    be.matmul_backward(d_ln, w.d_wk, d_k, ln1, w.wk, N, C, KVD, true);
    be.matmul_backward(d_ln, w.d_wv, d_v, ln1, w.wv, N, C, KVD, true);
    be.rmsnorm_backward(d_res, w.d_ln1, d_ln, rows(a.residual[l], C), w.ln1, a.rstd1[l].slice(0, N),
                        N, C);
  }
  const auto& emb = layout_.find("model.embed_tokens.weight");
  be.embedding_backward(grad(emb), d_res, in_tok, N, C);
}

}  // namespace loco
