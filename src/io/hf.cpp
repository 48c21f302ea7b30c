// Hugging Face interop: see include/loco/io/hf.hpp.
#include "loco/io/hf.hpp"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include "loco/core/error.hpp"
#include "loco/core/files.hpp"
#include "loco/io/file_io.hpp"
#include "loco/io/safetensors.hpp"
#include "loco/model/param_layout.hpp"
#include "loco/ops/bf16.hpp"

namespace loco {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr uint64_t kMaxConfigBytes = 16u << 20;

json read_json_file(const std::string& path, const std::string& what) {
  AlignedBytes b = read_file_aligned(path, what, kMaxConfigBytes);
  const char* p = reinterpret_cast<const char*>(b.data.get());
  try {
    json::parser_callback_t limit = [](int depth, json::parse_event_t, json&) {
      if (depth > 64) throw Error("nested deeper than 64 levels");
      return true;
    };
    return json::parse(p, p + b.size, limit);
  } catch (const json::exception& e) {
    throw Error(path + ": not valid JSON: " + e.what());
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

int get_int(const json& c, const char* key, const std::string& source,
            std::optional<int> fallback = std::nullopt) {
  const auto it = c.find(key);
  if (it == c.end() || it->is_null()) {
    if (fallback) return *fallback;
    throw Error(source + ": missing key \"" + std::string(key) + "\"");
  }
  if (!it->is_number_integer())
    throw Error(source + ": \"" + std::string(key) + "\" must be an integer, got " + it->dump());
  const int64_t v = it->get<int64_t>();
  if (v <= 0 || v > std::numeric_limits<int>::max())
    throw Error(source + ": \"" + std::string(key) + "\" = " + std::to_string(v) +
                " is out of range (must be a positive 32-bit integer)");
  return static_cast<int>(v);
}

double get_real(const json& c, const char* key, const std::string& source, double fallback) {
  const auto it = c.find(key);
  if (it == c.end() || it->is_null()) return fallback;
  if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() <= 0)
    throw Error(source + ": \"" + std::string(key) + "\" must be a positive number, got " +
                it->dump());
  return it->get<double>();
}

void expect_value(const json& c, const char* key, const json& allowed, const std::string& source,
                  const std::string& why) {
  const auto it = c.find(key);
  if (it == c.end() || it->is_null()) return;
  if (*it != allowed)
    throw Error(source + ": \"" + std::string(key) + "\" = " + it->dump() + " is not supported (" +
                why + ")");
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

uint64_t llama_param_count(const ModelConfig& m) {
  using u128 = unsigned __int128;
  const u128 C = static_cast<u128>(std::max(m.d_model, 0));
  const u128 V = static_cast<u128>(std::max(m.vocab_size, 0));
  const u128 F = static_cast<u128>(std::max(m.d_ff, 0));
  const u128 hd = m.n_heads > 0 ? static_cast<u128>(std::max(m.d_model / m.n_heads, 0)) : 0;
  const u128 q = static_cast<u128>(std::max(m.n_heads, 0)) * hd;
  const u128 kv = static_cast<u128>(std::max(m.n_kv_heads, 0)) * hd;
  const u128 per_layer = 2 * C + q * C + 2 * kv * C + C * q + 3 * F * C;
  const u128 total = V * C + static_cast<u128>(std::max(m.n_layers, 0)) * per_layer + C +
                     (m.tie_embeddings ? 0 : V * C);
  if (total > std::numeric_limits<uint64_t>::max() / 8)
    throw Error("model shape describes more than 2^61 parameters");
  return static_cast<uint64_t>(total);
}

json hf_config_json(const ModelConfig& m, StorageDType dtype) {
  if (dtype != StorageDType::F32 && dtype != StorageDType::BF16)
    throw Error(std::string("export dtype must be F32 or BF16, got ") + storage_dtype_name(dtype));
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", m.d_model},
          {"intermediate_size", m.d_ff},
          {"num_attention_heads", m.n_heads},
          {"num_key_value_heads", m.n_kv_heads},
          {"num_hidden_layers", m.n_layers},
          {"head_dim", m.head_dim()},
          {"vocab_size", m.vocab_size},
          {"max_position_embeddings", m.max_seq_len},
          {"rms_norm_eps", m.norm_eps},
          {"rope_theta", m.rope_theta},
          {"rope_scaling", nullptr},
          {"tie_word_embeddings", m.tie_embeddings},
          {"hidden_act", "silu"},
          {"attention_bias", false},
          {"attention_dropout", 0.0},
          {"mlp_bias", false},
          {"initializer_range", m.init_std},
          {"pretraining_tp", 1},
          {"use_cache", true},
          {"torch_dtype", dtype == StorageDType::F32 ? "float32" : "bfloat16"}};
}

ModelConfig model_config_from_hf(const json& c, const std::string& source) {
  if (!c.is_object()) throw Error(source + ": config.json must be a JSON object");
  expect_value(c, "model_type", "llama", source, "only Llama models are supported");
  expect_value(c, "hidden_act", "silu", source, "Llama's MLP is SwiGLU (silu)");
  expect_value(c, "attention_bias", false, source, "our attention projections have no bias");
  expect_value(c, "mlp_bias", false, source, "our MLP projections have no bias");
  if (auto it = c.find("rope_scaling"); it != c.end() && !it->is_null())
    throw Error(source + ": \"rope_scaling\" = " + it->dump() +
                " is not supported (plain RoPE only)");
  if (auto it = c.find("architectures"); it != c.end() && it->is_array()) {
    bool llama = false;
    for (const auto& a : *it)
      llama = llama || (a.is_string() && a.get<std::string>() == "LlamaForCausalLM");
    if (!llama)
      throw Error(source + ": \"architectures\" = " + it->dump() +
                  " does not include LlamaForCausalLM");
  }
  ModelConfig m;
  m.d_model = get_int(c, "hidden_size", source);
  m.d_ff = get_int(c, "intermediate_size", source);
  m.n_heads = get_int(c, "num_attention_heads", source);
  m.n_kv_heads = get_int(c, "num_key_value_heads", source, m.n_heads);
  m.n_layers = get_int(c, "num_hidden_layers", source);
  m.vocab_size = get_int(c, "vocab_size", source);
  m.max_seq_len = get_int(c, "max_position_embeddings", source, 2048);
  m.norm_eps = get_real(c, "rms_norm_eps", source, 1e-6);
  m.rope_theta = get_real(c, "rope_theta", source, 10000.0);
  m.init_std = get_real(c, "initializer_range", source, 0.02);
  if (auto it = c.find("tie_word_embeddings"); it != c.end() && !it->is_null()) {
    if (!it->is_boolean())
      throw Error(source + ": \"tie_word_embeddings\" must be true or false, got " + it->dump());
    m.tie_embeddings = it->get<bool>();
  } else {
    m.tie_embeddings = false;  // LlamaConfig's default
  }
  if (m.d_model % m.n_heads != 0)
    throw Error(source + ": num_attention_heads = " + std::to_string(m.n_heads) +
                " does not divide hidden_size = " + std::to_string(m.d_model));
  if (m.n_heads % m.n_kv_heads != 0)
    throw Error(source + ": num_key_value_heads = " + std::to_string(m.n_kv_heads) +
                " does not divide num_attention_heads = " + std::to_string(m.n_heads));
  if (m.head_dim() % 2 != 0)
    throw Error(source + ": head_dim = " + std::to_string(m.head_dim()) +
                " is odd; RoPE needs an even head_dim");
  if (auto it = c.find("head_dim"); it != c.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() != m.head_dim())
      throw Error(source + ": \"head_dim\" = " + it->dump() +
                  " is not supported: our model uses hidden_size / num_attention_heads = " +
                  std::to_string(m.head_dim()));
  }
  return m;
}

ModelConfig read_hf_model_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  return model_config_from_hf(read_json_file(path, "config.json"), path);
}

bool is_hf_directory(const std::string& dir) {
  std::error_code ec;
  const fs::path d(dir);
  return fs::is_directory(d, ec) && fs::is_regular_file(d / "config.json", ec) &&
         (fs::is_regular_file(d / "model.safetensors", ec) ||
          fs::is_regular_file(d / "model.safetensors.index.json", ec));
}

void export_hf_directory(const std::string& out_dir, const ModelConfig& m, const float* params,
                         StorageDType dtype, const std::map<std::string, std::string>& metadata) {
  const json config = hf_config_json(m, dtype);  // validates dtype
  const ParamLayout layout = llama_param_layout(m);
  make_directories(out_dir);

  std::vector<uint16_t> bf16;
  if (dtype == StorageDType::BF16) {
    bf16.resize(layout.total);
    ops::convert_f32_to_bf16(bf16.data(), params, layout.total);
  }
  std::vector<SafetensorsEntry> entries;
  for (const auto& v : layout.views) {
    const void* data = dtype == StorageDType::F32
                           ? static_cast<const void*>(params + v.offset)
                           : static_cast<const void*>(bf16.data() + v.offset);
    entries.push_back(SafetensorsEntry{v.name, dtype, v.shape, data});
  }
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = "pt";
  if (!meta.count("producer")) meta["producer"] = "loco";
  write_safetensors((fs::path(out_dir) / "model.safetensors").string(), entries, meta);
  write_file_durably((fs::path(out_dir) / "config.json").string(), config.dump(2) + "\n");
}

std::vector<float> load_hf_directory(const std::string& dir, const ModelConfig& expected) {
  const fs::path d(dir);
  std::error_code ec;
  if (!fs::is_directory(d, ec))
    throw Error(dir +
                ": not a directory (expected a Hugging Face model directory with "
                "config.json and model.safetensors)");
  const std::string config_path = (d / "config.json").string();
  const ModelConfig got = read_hf_model_config(dir);
  auto mismatch = [&](const char* hf_key, const std::string& hf_value, const char* our_key,
                      const std::string& our_value) {
    throw Error(config_path + ": " + hf_key + " = " + hf_value + " but model." + our_key + " = " +
                our_value + " (the Hugging Face model does not match the configured model)");
  };
  auto num = [](double x) { return json(x).dump(); };
  if (got.vocab_size != expected.vocab_size)
    mismatch("vocab_size", std::to_string(got.vocab_size), "vocab_size",
             std::to_string(expected.vocab_size));
  if (got.d_model != expected.d_model)
    mismatch("hidden_size", std::to_string(got.d_model), "d_model",
             std::to_string(expected.d_model));
  if (got.n_layers != expected.n_layers)
    mismatch("num_hidden_layers", std::to_string(got.n_layers), "n_layers",
             std::to_string(expected.n_layers));
  if (got.n_heads != expected.n_heads)
    mismatch("num_attention_heads", std::to_string(got.n_heads), "n_heads",
             std::to_string(expected.n_heads));
  if (got.n_kv_heads != expected.n_kv_heads)
    mismatch("num_key_value_heads", std::to_string(got.n_kv_heads), "n_kv_heads",
             std::to_string(expected.n_kv_heads));
  if (got.d_ff != expected.d_ff)
    mismatch("intermediate_size", std::to_string(got.d_ff), "d_ff", std::to_string(expected.d_ff));
  if (got.tie_embeddings != expected.tie_embeddings)
    mismatch("tie_word_embeddings", got.tie_embeddings ? "true" : "false", "tie_embeddings",
             expected.tie_embeddings ? "true" : "false");
  if (got.rope_theta != expected.rope_theta)
    mismatch("rope_theta", num(got.rope_theta), "rope_theta", num(expected.rope_theta));
  if (got.norm_eps != expected.norm_eps)
    mismatch("rms_norm_eps", num(got.norm_eps), "norm_eps", num(expected.norm_eps));

  // Which files hold the tensors.
  std::vector<std::string> files;
  const fs::path single = d / "model.safetensors";
  const fs::path index = d / "model.safetensors.index.json";
  if (fs::is_regular_file(single, ec)) {
    files.push_back(single.string());
  } else if (fs::is_regular_file(index, ec)) {
    const json idx = read_json_file(index.string(), "safetensors index");
    const auto map = idx.is_object() ? idx.find("weight_map") : idx.end();
    if (!idx.is_object() || map == idx.end() || !map->is_object())
      throw Error(index.string() + ": no \"weight_map\" object");
    std::set<std::string> names;
    for (auto it = map->begin(); it != map->end(); ++it) {
      if (!it->is_string()) throw Error(index.string() + ": weight_map values must be file names");
      const std::string f = it->get<std::string>();
      if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
        throw Error(index.string() + ": weight_map names file " + json(f).dump() +
                    ", which is not a plain file name in the directory");
      names.insert(f);
    }
    for (const auto& f : names) files.push_back((d / f).string());
  } else {
    throw Error(dir + ": no model.safetensors or model.safetensors.index.json");
  }

  // Read and validate every file first: the config's parameter count is checked against
  // what the files hold before anything of the config's size is allocated.
  std::vector<SafetensorsFile> sts;
  uint64_t present = 0;
  for (const auto& file : files) {
    sts.push_back(read_safetensors(file));
    for (const auto& t : sts.back().tensors())
      if (!t.name.ends_with("rotary_emb.inv_freq") &&
          !(t.name == "lm_head.weight" && expected.tie_embeddings))
        present += t.numel;
  }
  const uint64_t want = llama_param_count(expected);
  if (present != want)
    throw Error(dir + ": the safetensors files hold " + std::to_string(present) +
                " parameters but the model needs " + std::to_string(want) +
                " (wrong model, missing or extra tensors)");
  const ParamLayout layout = llama_param_layout(expected);
  std::vector<float> params(layout.total);
  std::vector<bool> filled(layout.views.size(), false);
  std::vector<float> tied_head;  // an lm_head.weight found in a tied model
  std::string tied_head_file;
  for (const auto& st : sts) {
    const std::string& file = st.path();
    for (const auto& t : st.tensors()) {
      if (t.name.ends_with("rotary_emb.inv_freq")) continue;
      if (t.name == "lm_head.weight" && expected.tie_embeddings) {
        const auto& emb = layout.find("model.embed_tokens.weight");
        if (t.shape != emb.shape)
          throw Error(file + ": tensor \"lm_head.weight\" has shape " + shape_str(t.shape) +
                      ", expected " + shape_str(emb.shape));
        tied_head.resize(static_cast<size_t>(t.numel));
        st.to_f32(t, tied_head.data());
        tied_head_file = file;
        continue;
      }
      size_t i = 0;
      while (i < layout.views.size() && layout.views[i].name != t.name) ++i;
      if (i == layout.views.size())
        throw Error(file + ": unexpected tensor \"" + t.name +
                    "\": not a parameter of the configured model");
      const ParamView& v = layout.views[i];
      if (filled[i])
        throw Error(file + ": tensor \"" + t.name + "\" appears in more than one file");
      if (t.shape != v.shape)
        throw Error(file + ": tensor \"" + t.name + "\" has shape " + shape_str(t.shape) +
                    ", expected " + shape_str(v.shape) + " for the configured model");
      st.to_f32(t, params.data() + v.offset);
      filled[i] = true;
    }
  }
  for (size_t i = 0; i < layout.views.size(); ++i)
    if (!filled[i])
      throw Error(dir + ": missing tensor \"" + layout.views[i].name + "\" (shape " +
                  shape_str(layout.views[i].shape) + ")");
  if (!tied_head.empty()) {
    const auto& emb = layout.find("model.embed_tokens.weight");
    if (std::memcmp(tied_head.data(), params.data() + emb.offset, tied_head.size() * 4) != 0)
      throw Error(tied_head_file +
                  ": tensor \"lm_head.weight\" differs from "
                  "model.embed_tokens.weight, but the model ties them "
                  "(tie_word_embeddings = true)");
  }
  return params;
}

}  // namespace loco
