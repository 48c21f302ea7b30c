#include "loco/io/model_source.hpp"

#include <cstring>
#include <filesystem>

#include "loco/core/error.hpp"
#include "loco/io/checkpoint.hpp"
#include "loco/io/hf.hpp"

namespace loco {

namespace {

namespace fs = std::filesystem;

// The checkpoint file behind `path`; a directory that is neither an HF directory nor holds a
// checkpoint gets a message saying what each would need, and what it lacks.
std::string resolve_model_checkpoint(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return resolve_checkpoint_file(path, 0);
  try {
    return resolve_checkpoint_file(path, 0);
  } catch (const Error&) {
    const fs::path d(path);
    std::string has;
    for (const char* name : {"config.json", "model.safetensors", "model.safetensors.index.json",
                             "rank-0.bin", "latest", "checkpoints"})
      if (fs::exists(d / name, ec)) has += (has.empty() ? "" : ", ") + std::string(name);
    throw Error(path +
                " is neither a Hugging Face directory (needs config.json and model.safetensors "
                "or model.safetensors.index.json) nor a loco checkpoint (a rank-<r>.bin file, a "
                "step directory holding rank-0.bin, or a run or checkpoint directory whose "
                "latest names a step); it holds " +
                (has.empty() ? std::string("none of these") : has));
  }
}

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

std::string checkpoint_tokenizer(const std::string& checkpoint_file, const Config& config) {
  if (config.data.tokenizer == "byte") return "byte";
  fs::path dir = fs::path(checkpoint_file).parent_path();
  for (int up = 0; up < 3 && !dir.empty(); ++up, dir = dir.parent_path())
    if (is_file(dir / "tokenizer.model")) return (dir / "tokenizer.model").string();
  return is_file(config.data.tokenizer) ? config.data.tokenizer : "";
}

}  // namespace

ModelSource load_model_source(const std::string& path, const std::string& tensor) {
  ModelSource s;
  if (is_hf_directory(path)) {
    s.kind = "hf";
    s.path = path;
    s.model = read_hf_model_config(path);
    s.params = load_hf_directory(path, s.model);
    s.meta = hf_config_json(s.model, StorageDType::F32);
    s.meta.erase("torch_dtype");
    const fs::path model_file = fs::path(path) / "tokenizer.model";
    s.tokenizer = is_file(model_file)         ? model_file.string()
                  : s.model.vocab_size == 256 ? "byte"
                                              : "";
    return s;
  }
  s.kind = "checkpoint";
  s.path = resolve_model_checkpoint(path);
  const Checkpoint c = read_checkpoint(s.path);
  s.config = config_from_checkpoint_meta(c.meta(), s.path);
  s.model = s.config->model;
  s.meta = c.meta();
  s.tokenizer = checkpoint_tokenizer(s.path, *s.config);
  const uint64_t total = llama_param_count(s.model);  // before allocating anything that big
  const CheckpointTensor& t = c.tensor(tensor);
  if (t.dtype != StorageDType::F32 || t.count != total)
    throw Error(s.path + ": tensor \"" + tensor + "\" has " + std::to_string(t.count) + " " +
                storage_dtype_name(t.dtype) + " elements, but the model in its config has " +
                std::to_string(total) + " F32 parameters");
  s.params.resize(static_cast<size_t>(total));
  c.copy_to(tensor, s.params.data(), total, StorageDType::F32);
  return s;
}

}  // namespace loco
