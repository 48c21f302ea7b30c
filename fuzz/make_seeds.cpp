// Writes a seed corpus for every harness: `loco_fuzz_seeds OUTDIR` creates OUTDIR/<target>/
// with small valid inputs (the fuzzer mutates from there; it finds little from nothing in
// formats guarded by checksums and fingerprints).
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#if __has_include("loco/compress/wire.hpp")
#include "loco/compress/wire.hpp"
#endif
#include "loco/config/config.hpp"
#include "loco/data/shard.hpp"
#include "loco/io/checkpoint.hpp"
#include "loco/io/hf.hpp"
#include "loco/io/safetensors.hpp"
#include "loco/ops/bf16.hpp"

namespace fs = std::filesystem;
using namespace loco;

namespace {

void put(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  for (const char* t : {"config", "shard", "checkpoint", "safetensors", "hf_config", "compress"})
    fs::create_directories(out / t);

  // config: the shipped configs, plus one with overrides after a NUL.
  const fs::path configs = fs::path(LOCO_SOURCE_DIR) / "configs";
  if (fs::is_directory(configs))
    for (const auto& e : fs::directory_iterator(configs))
      if (e.path().extension() == ".json")
        fs::copy_file(e.path(), out / "config" / e.path().filename(),
                      fs::copy_options::overwrite_existing);
  put(out / "config" / "defaults.json", config_to_json(Config{}).dump(2));
  put(out / "config" / "overrides.json",
      std::string("{\"model\": {\"d_model\": 64} // comment\n}") + '\0' +
          "optimizer.lr=3e-4\nschedule.type=wsd\ndistributed.method=diloco");

  // shard: u16, u32, empty.
  write_shard((out / "shard" / "u16.bin").string(), {1, 2, 3, 255, 65535});
  write_shard((out / "shard" / "u32.bin").string(), {1, 70000, 3}, true);
  write_shard((out / "shard" / "empty.bin").string(), {});

  // checkpoint: a small real one and one with several dtypes.
  {
    std::vector<float> p(37, 0.25f), m(37, -1.0f);
    std::vector<uint16_t> b(5, 0x3f80);
    std::vector<int32_t> i = {1, 2, 3};
    CheckpointWriter w;
    w.set_meta(checkpoint_base_meta(Config{}, 1, 0, 100));
    w.add("params", p.data(), p.size(), DType::F32);
    w.add("adam.m", m.data(), m.size(), DType::F32);
    w.add("bf", b.data(), b.size(), StorageDType::BF16);
    w.add("ints", i.data(), i.size(), DType::I32);
    w.write((out / "checkpoint" / "multi.bin").string());
    CheckpointWriter small;
    small.set_meta({{"step", 1}});
    small.add("x", p.data(), 3, DType::F32);
    small.write((out / "checkpoint" / "small.bin").string());
    CheckpointWriter empty;
    empty.write((out / "checkpoint" / "empty.bin").string());
  }

  // safetensors: f32 + bf16 + i32 with metadata; an HF-style export.
  {
    std::vector<float> a(12, 1.5f);
    std::vector<uint16_t> b(4, ops::float_to_bf16_bits(-2.0f));
    std::vector<int32_t> c = {7, 8};
    write_safetensors((out / "safetensors" / "mixed.safetensors").string(),
                      {{"a", StorageDType::F32, {3, 4}, a.data()},
                       {"b", StorageDType::BF16, {4}, b.data()},
                       {"c", StorageDType::I32, {1, 2}, c.data()},
                       {"e", StorageDType::F16, {0}, nullptr}},
                      {{"format", "pt"}});
    ModelConfig m;
    m.vocab_size = 8;
    m.d_model = 4;
    m.n_layers = 1;
    m.n_heads = 2;
    m.n_kv_heads = 1;
    m.d_ff = 6;
    m.tie_embeddings = true;
    std::vector<float> params(llama_param_layout(m).total, 0.5f);
    export_hf_directory((out / "hf-tmp").string(), m, params.data(), StorageDType::BF16);
    fs::copy_file(out / "hf-tmp" / "model.safetensors", out / "safetensors" / "hf.safetensors",
                  fs::copy_options::overwrite_existing);
    fs::copy_file(out / "hf-tmp" / "config.json", out / "hf_config" / "config.json",
                  fs::copy_options::overwrite_existing);
    fs::remove_all(out / "hf-tmp");
    put(out / "hf_config" / "llama-like.json",
        R"({"architectures":["LlamaForCausalLM"],"hidden_size":2048,"intermediate_size":8192,
            "num_attention_heads":32,"num_key_value_heads":8,"num_hidden_layers":16,
            "vocab_size":128256,"max_position_embeddings":131072,"rms_norm_eps":1e-05,
            "rope_theta":500000.0,"tie_word_embeddings":true,"model_type":"llama",
            "rope_scaling":null,"head_dim":64})");
  }

  // compress: a real payload for every settings combination of the harness's plan.
#ifdef LOCO_FUZZ_HAVE_COMPRESS
  {
    const auto shapes = compress::shapes_from_layout(fuzz::compress_layout());
    std::mt19937 gen(5);
    std::normal_distribution<float> dist;
    std::vector<float> delta(fuzz::compress_layout().total);
    for (auto& x : delta) x = dist(gen);
    for (int i = 0; i < fuzz::kCompressSettings; ++i) {
      const compress::Plan plan = compress::make_plan(shapes, fuzz::compress_settings(uint8_t(i)));
      compress::Compressor comp(plan);
      const auto& bytes = comp.compress(delta.data(), 3);
      std::string seed(1, static_cast<char>(i));
      seed.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      put(out / "compress" / ("s" + std::to_string(i) + ".bin"), seed);
    }
  }
#endif
  std::printf("seeds written to %s\n", out.c_str());
  return 0;
}
