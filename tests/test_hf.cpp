// Hugging Face interop (loco/io/hf.hpp, loco/io/model_source.hpp): config.json fields,
// export → import bit-exact (f32) and correctly rounded (bf16), shape/config validation on
// import, and the same loss from a checkpoint and from its HF export.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "loco/backend/cpu_backend.hpp"
#include "loco/core/error.hpp"
#include "loco/io/checkpoint.hpp"
#include "loco/io/hf.hpp"
#include "loco/io/model_source.hpp"
#include "loco/io/safetensors.hpp"
#include "loco/model/llama.hpp"
#include "loco/model/param_layout.hpp"
#include "loco/ops/bf16.hpp"
#include "support/catch.hpp"
#include "support/temp_files.hpp"

using namespace loco;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using loco::testing::TempDir;

ModelConfig small_model(bool tied) {
  ModelConfig m;
  m.vocab_size = 260;
  m.d_model = 32;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.d_ff = 48;
  m.max_seq_len = 64;
  m.rope_theta = 500000.0;
  m.norm_eps = 1e-6;
  m.tie_embeddings = tied;
  m.init_std = 0.1;
  return m;
}

std::vector<float> random_params(const ModelConfig& m, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 0.3f);
  std::vector<float> p(llama_param_layout(m).total);
  for (auto& x : p) x = dist(gen);
  return p;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}
void write_json(const std::string& path, const json& j) {
  std::ofstream out(path);
  out << j.dump(2);
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("HF config.json has every LlamaForCausalLM field", "[hf]") {
  const ModelConfig m = small_model(false);
  const json c = hf_config_json(m, StorageDType::BF16);
  CHECK(c["architectures"] == json::array({"LlamaForCausalLM"}));
  CHECK(c["model_type"] == "llama");
  CHECK(c["hidden_size"] == 32);
  CHECK(c["intermediate_size"] == 48);
  CHECK(c["num_attention_heads"] == 4);
  CHECK(c["num_key_value_heads"] == 2);
  CHECK(c["num_hidden_layers"] == 2);
  CHECK(c["head_dim"] == 8);
  CHECK(c["vocab_size"] == 260);
  CHECK(c["max_position_embeddings"] == 64);
  CHECK(c["rms_norm_eps"] == 1e-6);
  CHECK(c["rope_theta"] == 500000.0);
  CHECK(c["tie_word_embeddings"] == false);
  CHECK(c["torch_dtype"] == "bfloat16");
  CHECK(c["hidden_act"] == "silu");
  CHECK(c["attention_bias"] == false);
  CHECK(c["mlp_bias"] == false);
  CHECK(c["rope_scaling"].is_null());
  CHECK(hf_config_json(m, StorageDType::F32)["torch_dtype"] == "float32");
  CHECK_THROWS_WITH(hf_config_json(m, StorageDType::F16), LOCO_CONTAINS("F32 or BF16"));

  // And back.
  const ModelConfig back = model_config_from_hf(c, "config.json");
  CHECK(back.vocab_size == m.vocab_size);
  CHECK(back.d_model == m.d_model);
  CHECK(back.n_layers == m.n_layers);
  CHECK(back.n_heads == m.n_heads);
  CHECK(back.n_kv_heads == m.n_kv_heads);
  CHECK(back.d_ff == m.d_ff);
  CHECK(back.max_seq_len == m.max_seq_len);
  CHECK(back.rope_theta == m.rope_theta);
  CHECK(back.norm_eps == m.norm_eps);
  CHECK(back.tie_embeddings == m.tie_embeddings);
  CHECK(back.init_std == m.init_std);
}

TEST_CASE("llama_param_count matches the layout without building it", "[hf]") {
  for (bool tied : {false, true}) {
    const ModelConfig m = small_model(tied);
    CHECK(llama_param_count(m) == llama_param_layout(m).total);
  }
  ModelConfig huge = small_model(false);
  huge.n_layers = 2000000000;
  huge.d_model = 2000000000;
  huge.d_ff = 2000000000;
  CHECK_THROWS_WITH(llama_param_count(huge), LOCO_CONTAINS("more than 2^61 parameters"));
}

TEST_CASE("HF config.json features we do not implement are rejected", "[hf]") {
  const json base = hf_config_json(small_model(true), StorageDType::F32);
  auto err = [&](const char* key, const json& value) {
    json c = base;
    c[key] = value;
    return error_of([&] { model_config_from_hf(c, "dir/config.json"); });
  };
  CHECK_THAT(err("model_type", "mistral"),
             LOCO_CONTAINS("dir/config.json: \"model_type\" = \"mistral\" is not supported"));
  CHECK_THAT(err("hidden_act", "gelu"), LOCO_CONTAINS("\"hidden_act\""));
  CHECK_THAT(err("attention_bias", true), LOCO_CONTAINS("\"attention_bias\""));
  CHECK_THAT(err("mlp_bias", true), LOCO_CONTAINS("\"mlp_bias\""));
  CHECK_THAT(err("rope_scaling", json{{"type", "linear"}}), LOCO_CONTAINS("\"rope_scaling\""));
  CHECK_THAT(err("head_dim", 16), LOCO_CONTAINS("\"head_dim\" = 16 is not supported"));
  CHECK_THAT(err("hidden_size", "32"), LOCO_CONTAINS("\"hidden_size\" must be an integer"));
  CHECK_THAT(err("hidden_size", 30), LOCO_CONTAINS("does not divide hidden_size = 30"));
  CHECK_THAT(err("num_key_value_heads", 3),
             LOCO_CONTAINS("num_key_value_heads = 3 does not divide"));
  CHECK_THAT(err("vocab_size", -5), LOCO_CONTAINS("out of range"));
  CHECK_THAT(err("architectures", json::array({"GPT2LMHeadModel"})),
             LOCO_CONTAINS("LlamaForCausalLM"));
  json c = base;
  c.erase("num_key_value_heads");  // HF default: as many kv heads as heads
  CHECK(model_config_from_hf(c, "x").n_kv_heads == 4);
  c.erase("hidden_size");
  CHECK_THROWS_WITH(model_config_from_hf(c, "x"), LOCO_CONTAINS("missing key \"hidden_size\""));
}

TEST_CASE("export-hf then import is bit-exact in f32 (tied and untied)", "[hf]") {
  for (bool tied : {false, true}) {
    TempDir dir;
    const ModelConfig m = small_model(tied);
    const std::vector<float> params = random_params(m, tied ? 1 : 2);
    export_hf_directory(dir / "hf", m, params.data(), StorageDType::F32, {{"loco.step", "7"}});
    CHECK(is_hf_directory(dir / "hf"));
    const std::vector<float> back = load_hf_directory(dir / "hf", m);
    REQUIRE(back.size() == params.size());
    CHECK(std::memcmp(back.data(), params.data(), params.size() * 4) == 0);

    const SafetensorsFile st = read_safetensors(dir / "hf/model.safetensors");
    CHECK(st.metadata().at("format") == "pt");
    CHECK(st.metadata().at("loco.step") == "7");
    CHECK((st.find("lm_head.weight") != nullptr) == !tied);
    CHECK(st.get("model.layers.1.self_attn.k_proj.weight").shape == std::vector<int64_t>{16, 32});
    CHECK(st.get("model.layers.0.mlp.down_proj.weight").shape == std::vector<int64_t>{32, 48});
    CHECK(st.tensors().size() == llama_param_layout(m).views.size());
    const json c = read_json(dir / "hf/config.json");
    CHECK(c["tie_word_embeddings"] == tied);
    CHECK(c["torch_dtype"] == "float32");
  }
}

TEST_CASE("bf16 export rounds to nearest even", "[hf]") {
  TempDir dir;
  const ModelConfig m = small_model(true);
  std::vector<float> params = random_params(m, 3);
  // Exact ties and near-ties at the start of the embedding.
  const float one_plus_half_ulp = 1.0f + std::ldexp(1.0f, -8);      // tie → 1.0 (even)
  const float three_halves_ulp = 1.0f + 3 * std::ldexp(1.0f, -8);   // tie → 1 + 2^-6 (even)
  const float above_tie = std::nextafter(one_plus_half_ulp, 2.0f);  // → 1 + 2^-7
  params[0] = one_plus_half_ulp;
  params[1] = three_halves_ulp;
  params[2] = above_tie;
  params[3] = -one_plus_half_ulp;
  export_hf_directory(dir / "hf", m, params.data(), StorageDType::BF16);
  CHECK(read_json(dir / "hf/config.json")["torch_dtype"] == "bfloat16");
  const SafetensorsFile st = read_safetensors(dir / "hf/model.safetensors");
  CHECK(st.get("model.norm.weight").dtype == StorageDType::BF16);
  const std::vector<float> back = load_hf_directory(dir / "hf", m);
  CHECK(back[0] == 1.0f);
  CHECK(back[1] == 1.0f + std::ldexp(1.0f, -6));
  CHECK(back[2] == 1.0f + std::ldexp(1.0f, -7));
  CHECK(back[3] == -1.0f);
  for (size_t i = 0; i < params.size(); ++i)
    REQUIRE(back[i] == ops::bf16_bits_to_float(ops::float_to_bf16_bits(params[i])));
}

TEST_CASE("HF import validates the config and every tensor", "[hf]") {
  TempDir dir;
  const ModelConfig m = small_model(false);
  const std::vector<float> params = random_params(m, 4);
  const std::string hf = dir / "hf";
  export_hf_directory(hf, m, params.data(), StorageDType::F32);

  ModelConfig other = m;
  other.d_ff = 64;
  CHECK_THAT(error_of([&] { load_hf_directory(hf, other); }),
             LOCO_CONTAINS(hf + "/config.json: intermediate_size = 48 but model.d_ff = 64"));
  other = m;
  other.tie_embeddings = true;
  CHECK_THAT(error_of([&] { load_hf_directory(hf, other); }),
             LOCO_CONTAINS("tie_word_embeddings = false but model.tie_embeddings = true"));
  other = m;
  other.rope_theta = 10000.0;
  CHECK_THAT(error_of([&] { load_hf_directory(hf, other); }), LOCO_CONTAINS("rope_theta"));
  CHECK_THAT(error_of([&] { load_hf_directory(dir / "nope", m); }),
             LOCO_CONTAINS("not a directory"));

  // Tensor-level problems: rewrite model.safetensors with a damaged tensor list.
  const ParamLayout layout = llama_param_layout(m);
  auto rewrite = [&](auto edit) {
    std::vector<SafetensorsEntry> e;
    for (const auto& v : layout.views)
      e.push_back({v.name, StorageDType::F32, v.shape, params.data() + v.offset});
    edit(e);
    write_safetensors(hf + "/model.safetensors", e, {{"format", "pt"}});
    return error_of([&] { load_hf_directory(hf, m); });
  };
  // A missing tensor: the parameter count differs, reported before anything is allocated.
  CHECK_THAT(rewrite([](auto& e) { e.erase(e.begin() + 3); }),
             LOCO_CONTAINS("the safetensors files hold " + std::to_string(params.size() - 512) +
                           " parameters but the model needs " + std::to_string(params.size())));
  // Same count, wrong name.
  CHECK_THAT(rewrite([](auto& e) { e[3].name += "_renamed"; }),
             LOCO_CONTAINS("unexpected tensor \"model.layers.0.self_attn.k_proj.weight_renamed\""));
  CHECK_THAT(rewrite([](auto& e) {
               e[2].shape = {8, 128};
             }),
             LOCO_CONTAINS("tensor \"model.layers.0.self_attn.q_proj.weight\" has shape [8, 128], "
                           "expected [32, 32]"));
  CHECK_THAT(
      rewrite([&](auto& e) {
        e.push_back(
            {"model.layers.0.self_attn.q_proj.bias", StorageDType::F32, {32}, params.data()});
      }),
      LOCO_CONTAINS("hold " + std::to_string(params.size() + 32) + " parameters"));
  CHECK_THAT(rewrite([&](auto& e) { e[0].dtype = StorageDType::I32; }),
             LOCO_CONTAINS("has dtype I32"));
  // Old exports carry rotary inv_freq buffers: ignored.
  CHECK(rewrite([&](auto& e) {
          e.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq",
                       StorageDType::F32,
                       {4},
                       params.data()});
        }).empty());
}

TEST_CASE("tied models accept an lm_head equal to the embedding only", "[hf]") {
  TempDir dir;
  const ModelConfig m = small_model(true);
  const std::vector<float> params = random_params(m, 5);
  const std::string hf = dir / "hf";
  export_hf_directory(hf, m, params.data(), StorageDType::F32);
  const ParamLayout layout = llama_param_layout(m);
  const auto& emb = layout.find("model.embed_tokens.weight");
  std::vector<float> head(params.begin() + emb.offset, params.begin() + emb.offset + emb.numel);
  auto with_head = [&](const std::vector<float>& h) {
    std::vector<SafetensorsEntry> e;
    for (const auto& v : layout.views)
      e.push_back({v.name, StorageDType::F32, v.shape, params.data() + v.offset});
    e.push_back({"lm_head.weight", StorageDType::F32, emb.shape, h.data()});
    write_safetensors(hf + "/model.safetensors", e, {{"format", "pt"}});
    return error_of([&] { load_hf_directory(hf, m); });
  };
  CHECK(with_head(head).empty());
  head[17] += 1.0f;
  CHECK_THAT(with_head(head),
             LOCO_CONTAINS("\"lm_head.weight\" differs from model.embed_tokens.weight"));
}

TEST_CASE("sharded HF directories (model.safetensors.index.json) load", "[hf]") {
  TempDir dir;
  const ModelConfig m = small_model(false);
  const std::vector<float> params = random_params(m, 6);
  const ParamLayout layout = llama_param_layout(m);
  const std::string hf = dir / "hf";
  fs::create_directories(hf);
  write_json(hf + "/config.json", hf_config_json(m, StorageDType::F32));
  std::vector<SafetensorsEntry> a, b;
  json map = json::object();
  for (size_t i = 0; i < layout.views.size(); ++i) {
    const auto& v = layout.views[i];
    const bool first = i < layout.views.size() / 2;
    (first ? a : b).push_back({v.name, StorageDType::F32, v.shape, params.data() + v.offset});
    map[v.name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write_safetensors(hf + "/model-00001-of-00002.safetensors", a, {{"format", "pt"}});
  write_safetensors(hf + "/model-00002-of-00002.safetensors", b, {{"format", "pt"}});
  write_json(hf + "/model.safetensors.index.json",
             {{"metadata", json::object()}, {"weight_map", map}});
  CHECK(is_hf_directory(hf));
  const auto back = load_hf_directory(hf, m);
  CHECK(std::memcmp(back.data(), params.data(), params.size() * 4) == 0);

  map[layout.views[0].name] = "../../etc/passwd";
  write_json(hf + "/model.safetensors.index.json", {{"weight_map", map}});
  CHECK_THAT(error_of([&] { load_hf_directory(hf, m); }), LOCO_CONTAINS("not a plain file name"));
}

TEST_CASE("a checkpoint and its HF export give the same model and loss", "[hf]") {
  TempDir dir;
  Config cfg;
  cfg.model = small_model(false);
  cfg.training.seq_len = 16;
  const ModelConfig& m = cfg.model;
  const std::vector<float> params = random_params(m, 8);
  const std::string root = checkpoint_root(dir / "run");
  fs::create_directories(checkpoint_step_dir(root, 10));
  CheckpointWriter w;
  w.set_meta(checkpoint_base_meta(cfg, 1, 0, 10));
  w.add(kParamsTensor, params.data(), params.size(), DType::F32);
  w.write(checkpoint_rank_path(root, 10, 0));
  write_latest_checkpoint(root, 10);

  const ModelSource from_ckpt = load_model_source(dir / "run");
  CHECK(from_ckpt.kind == "checkpoint");
  CHECK(from_ckpt.path == checkpoint_rank_path(root, 10, 0));
  REQUIRE(from_ckpt.config.has_value());
  CHECK(from_ckpt.meta["step"] == 10);
  CHECK(from_ckpt.params == params);

  export_hf_directory(dir / "hf", from_ckpt.model, from_ckpt.params.data(), StorageDType::F32);
  const ModelSource from_hf = load_model_source(dir / "hf");
  CHECK(from_hf.kind == "hf");
  CHECK(std::memcmp(from_hf.params.data(), params.data(), params.size() * 4) == 0);

  CpuBackend backend;
  auto loss_of = [&](const ModelSource& s) {
    LlamaModel model(s.model, backend);
    backend.upload(model.params(), s.params.data());
    model.params_changed();
    std::vector<int32_t> in(2 * 16), tg(2 * 16);
    for (size_t i = 0; i < in.size(); ++i) {
      in[i] = static_cast<int32_t>((i * 37) % 260);
      tg[i] = static_cast<int32_t>((i * 11 + 3) % 260);
    }
    return model.forward_loss(in.data(), tg.data(), 2, 16);
  };
  const double a = loss_of(from_ckpt), b = loss_of(from_hf);
  CHECK(a == b);
  CHECK(std::isfinite(a));

  // A checkpoint whose params do not fit its config is named.
  CheckpointWriter bad;
  bad.set_meta(checkpoint_base_meta(cfg, 1, 0, 11));
  bad.add(kParamsTensor, params.data(), params.size() - 1, DType::F32);
  bad.write(dir / "bad.bin");
  CHECK_THAT(
      error_of([&] { load_model_source(dir / "bad.bin"); }),
      LOCO_CONTAINS("has " + std::to_string(params.size() - 1) + " F32 elements, but the model"));
}
