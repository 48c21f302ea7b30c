// A model to evaluate or export, from either a loco checkpoint (file, step directory, or
// run/checkpoint directory: its latest step, rank 0) or a Hugging Face directory.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "loco/config/config.hpp"

namespace loco {

struct ModelSource {
  std::string kind;  // "checkpoint" or "hf"
  std::string path;  // the checkpoint file or HF directory actually read
  ModelConfig model;
  std::optional<Config> config;  // the run's resolved config (checkpoints only)
  std::vector<float> params;     // host F32, llama_param_layout(model) order
  nlohmann::json meta;           // the checkpoint's metadata, or the HF config.json fields
  // The model's tokenizer: "byte", the path of a SentencePiece model, or "" when unknown.
  // Checkpoint: the run's data.tokenizer; a SentencePiece model is looked for as
  // tokenizer.model in the checkpoint's directory and up to two above it (the run directory
  // holds the copy the trainer made), then at the configured path. HF directory: its
  // tokenizer.model if there is one, else "byte" when the vocabulary is 256.
  std::string tokenizer;
};

// `tensor` names the checkpoint tensor holding the weights (default "params").
ModelSource load_model_source(const std::string& path, const std::string& tensor = "params");

}  // namespace loco
