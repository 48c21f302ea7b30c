// Hugging Face interop: a loco model <-> a directory that transformers'
// LlamaForCausalLM.from_pretrained() loads (config.json + model.safetensors).
//
// Our ParamLayout already uses HF's parameter names and (out_features, in_features) shapes,
// and our RoPE is HF's rotate-half convention, so the mapping is one to one: no permutation
// of q/k rows. A tied model has no lm_head.weight (HF re-ties it from tie_word_embeddings).
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loco/config/config.hpp"
#include "loco/io/dtype.hpp"

namespace loco {

// Number of parameters llama_param_layout(m) would hold, computed without building it
// (overflow-checked; throws loco::Error). Lets readers compare an untrusted config against
// the data actually present before allocating anything.
uint64_t llama_param_count(const ModelConfig& m);

// config.json for LlamaForCausalLM. torch_dtype: StorageDType::F32 -> "float32",
// BF16 -> "bfloat16".
nlohmann::json hf_config_json(const ModelConfig& m, StorageDType dtype);

// ModelConfig from an HF config.json document (only the keys that describe the network;
// init_std from initializer_range). Rejects what our model does not implement: model_type
// other than "llama", hidden_act other than "silu", attention/MLP biases, rope_scaling,
// head_dim != hidden_size / num_attention_heads. Errors name `source` and the key.
ModelConfig model_config_from_hf(const nlohmann::json& config, const std::string& source);
ModelConfig read_hf_model_config(const std::string& dir);  // <dir>/config.json

// True when `dir` looks like an HF model directory (config.json and model.safetensors or
// model.safetensors.index.json).
bool is_hf_directory(const std::string& dir);

// Writes <out_dir>/config.json and <out_dir>/model.safetensors (created if needed) from
// host F32 parameters in llama_param_layout(m) order. dtype F32 is bit-exact; BF16 rounds to
// nearest even. `metadata` goes into the safetensors "__metadata__" (with "format": "pt",
// which transformers requires).
void export_hf_directory(const std::string& out_dir, const ModelConfig& m, const float* params,
                         StorageDType dtype,
                         const std::map<std::string, std::string>& metadata = {});

// Reads an HF directory (model.safetensors, or the shards listed in
// model.safetensors.index.json) into host F32 parameters in llama_param_layout(expected)
// order (F32, BF16, F16, F64 tensors accepted). Checks config.json's shape keys, rope_theta
// and rms_norm_eps against `expected`, and every tensor's presence and shape; unexpected
// tensors are errors (except rotary_emb.inv_freq buffers of old exports). A tied model
// accepts an lm_head.weight only when it equals embed_tokens. Errors name the file and the
// tensor or key.
std::vector<float> load_hf_directory(const std::string& dir, const ModelConfig& expected);

}  // namespace loco
