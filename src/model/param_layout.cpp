#include "loco/model/param_layout.hpp"

#include "loco/core/error.hpp"

namespace loco {

const ParamView& ParamLayout::find(const std::string& name) const {
  for (const auto& v : views)
    if (v.name == name) return v;
  throw Error("no parameter named \"" + name + "\" in this model");
}

ParamLayout llama_param_layout(const ModelConfig& m) {
  ParamLayout layout;
  auto add = [&](std::string name, std::vector<int64_t> shape, ParamKind kind, int layer) {
    size_t numel = 1;
    for (int64_t d : shape) numel *= static_cast<size_t>(d);
    layout.views.push_back(
        ParamView{std::move(name), std::move(shape), layout.total, numel, kind, layer});
    layout.total += numel;
  };
  const int64_t C = m.d_model, V = m.vocab_size, F = m.d_ff;
  const int64_t q_dim = static_cast<int64_t>(m.n_heads) * m.head_dim();
  const int64_t kv_dim = static_cast<int64_t>(m.n_kv_heads) * m.head_dim();

  add("model.embed_tokens.weight", {V, C}, ParamKind::Embedding, -1);
  for (int l = 0; l < m.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {C}, ParamKind::Norm, l);
    add(p + "self_attn.q_proj.weight", {q_dim, C}, ParamKind::Matrix, l);
    add(p + "self_attn.k_proj.weight", {kv_dim, C}, ParamKind::Matrix, l);
    add(p + "self_attn.v_proj.weight", {kv_dim, C}, ParamKind::Matrix, l);
    add(p + "self_attn.o_proj.weight", {C, q_dim}, ParamKind::Matrix, l);
    add(p + "post_attention_layernorm.weight", {C}, ParamKind::Norm, l);
    add(p + "mlp.gate_proj.weight", {F, C}, ParamKind::Matrix, l);
    add(p + "mlp.up_proj.weight", {F, C}, ParamKind::Matrix, l);
    add(p + "mlp.down_proj.weight", {C, F}, ParamKind::Matrix, l);
  }
  add("model.norm.weight", {C}, ParamKind::Norm, -1);
  // A tied head reads the embedding matrix; it owns no storage of its own.
  if (!m.tie_embeddings) add("lm_head.weight", {V, C}, ParamKind::Head, -1);
  return layout;
}

}  // namespace loco
