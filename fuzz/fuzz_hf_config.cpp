// libFuzzer harness: Hugging Face config.json interpretation (model_config_from_hf), the
// first thing `loco eval HF_DIR` and model.init_from read.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "loco/core/error.hpp"
#include "loco/io/hf.hpp"
#include "loco/model/param_layout.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;
  }
  try {
    const loco::ModelConfig m = loco::model_config_from_hf(j, "config.json");
    try {
      (void)loco::llama_param_count(m);  // overflow-checked; may refuse absurd shapes
    } catch (const loco::Error&) {
    }
    // An accepted config must describe a layout we can compute (without allocating it).
    if (m.head_dim() <= 0 || m.head_dim() % 2 != 0 || m.n_heads % m.n_kv_heads != 0)
      __builtin_trap();
    const auto back =
        loco::model_config_from_hf(loco::hf_config_json(m, loco::StorageDType::F32), "roundtrip");
    if (back.d_model != m.d_model || back.n_kv_heads != m.n_kv_heads ||
        back.tie_embeddings != m.tie_embeddings || back.rope_theta != m.rope_theta)
      __builtin_trap();
  } catch (const loco::Error&) {
  }
  return 0;
}
