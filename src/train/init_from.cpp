#include "loco/train/init_from.hpp"

#include <cmath>
#include <map>

#include "loco/core/error.hpp"
#include "loco/io/model_source.hpp"
#include "loco/model/param_layout.hpp"

namespace loco {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The model keys whose values differ, "model.d_model = 64 there, 128 here", to explain a
// shape mismatch.
std::string differing_keys(const ModelConfig& there, const ModelConfig& here) {
  std::string s;
  auto add = [&](const char* key, const std::string& a, const std::string& b) {
    if (a != b)
      s += (s.empty() ? "" : ", ") + std::string("model.") + key + " = " + a + " there, " + b +
           " here";
  };
  add("vocab_size", std::to_string(there.vocab_size), std::to_string(here.vocab_size));
  add("d_model", std::to_string(there.d_model), std::to_string(here.d_model));
  add("n_layers", std::to_string(there.n_layers), std::to_string(here.n_layers));
  add("n_heads", std::to_string(there.n_heads), std::to_string(here.n_heads));
  add("n_kv_heads", std::to_string(there.n_kv_heads), std::to_string(here.n_kv_heads));
  add("d_ff", std::to_string(there.d_ff), std::to_string(here.d_ff));
  add("tie_embeddings", there.tie_embeddings ? "true" : "false",
      here.tie_embeddings ? "true" : "false");
  return s.empty() ? s : " (" + s + ")";
}

}  // namespace

InitialWeights load_initial_weights(const ModelConfig& model, const std::string& source) {
  const std::string where = "model.init_from = " + source + ": ";
  ModelSource src;
  try {
    src = load_model_source(source);
  } catch (const Error& e) {
    throw Error(where + e.what());
  }
  InitialWeights w;
  w.kind = src.kind;
  w.path = src.path;
  w.description = (src.kind == "hf" ? "Hugging Face directory " : "checkpoint ") + src.path;
  if (src.meta.contains("step") && src.meta["step"].is_number_integer())
    w.description += " (step " + std::to_string(src.meta["step"].get<int64_t>()) + ")";

  const ParamLayout theirs = llama_param_layout(src.model), ours = llama_param_layout(model);
  std::map<std::string, const ParamView*> by_name;
  for (const auto& v : theirs.views) by_name[v.name] = &v;
  const std::string keys = differing_keys(src.model, model);
  w.params.resize(ours.total);
  for (const auto& v : ours.views) {
    const auto it = by_name.find(v.name);
    if (it == by_name.end())
      throw Error(where + "the source has no tensor " + v.name + ", which this model needs" + keys);
    const ParamView& t = *it->second;
    if (t.shape != v.shape)
      throw Error(where + "tensor " + v.name + " has shape " + shape_text(t.shape) +
                  " in the source but " + shape_text(v.shape) + " in this model" + keys);
    const float* from = src.params.data() + t.offset;
    for (size_t i = 0; i < v.numel; ++i)
      if (!std::isfinite(from[i]))
        throw Error(where + "tensor " + v.name + " holds a non-finite value (" +
                    std::to_string(from[i]) + " at element " + std::to_string(i) + ")");
    std::copy(from, from + v.numel, w.params.begin() + static_cast<ptrdiff_t>(v.offset));
    by_name.erase(it);
  }
  if (!by_name.empty())
    throw Error(where + "the source has tensor " + by_name.begin()->first +
                ", which this model lacks" + keys);
  // Same shapes, other settings: allowed (a longer context, a new RoPE base are real uses),
  // but said in the log.
  auto note = [&](const char* key, double there, double here) {
    if (there != here)
      w.notes.push_back(std::string("model.") + key + " is " + std::to_string(there) +
                        " in the source but " + std::to_string(here) + " here");
  };
  note("rope_theta", src.model.rope_theta, model.rope_theta);
  note("norm_eps", src.model.norm_eps, model.norm_eps);
  note("max_seq_len", src.model.max_seq_len, model.max_seq_len);
  return w;
}

}  // namespace loco
