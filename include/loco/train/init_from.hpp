// model.init_from: start a run from existing weights (continued pre-training from a released
// model, or from another run). The source is a Hugging Face directory or a loco checkpoint
// (file, step directory, run directory); only the model weights are taken — the optimizer
// state, step count and data position start fresh.
#pragma once
#include <string>
#include <vector>

#include "loco/config/config.hpp"

namespace loco {

struct InitialWeights {
  std::vector<float> params;  // host F32, llama_param_layout(model) order
  std::string kind;           // "hf" or "checkpoint"
  std::string path;           // the checkpoint file or HF directory read
  std::string
      description;  // for the log: "checkpoint run/checkpoints/step-000100/rank-0.bin (step 100)"
  std::vector<std::string> notes;  // differences that do not change shapes (rope_theta, ...)
};

// Loads `source` and checks it against `model`: every tensor must be present with the same
// shape (a mismatch names the tensor, both shapes and the model keys that differ), and every
// value finite. Throws loco::Error.
InitialWeights load_initial_weights(const ModelConfig& model, const std::string& source);

}  // namespace loco
