// Every parameter of the model lives in one contiguous F32 buffer; a ParamView names a
// slice of it (Hugging Face names and shapes). Gradients and optimizer state use the same
// layout, so collectives and checkpoints work on whole buffers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "loco/config/config.hpp"

namespace loco {

enum class ParamKind {
  Embedding,  // token embedding (V,C)
  Head,       // untied LM head (V,C)
  Norm,       // RMSNorm gains (C)
  Matrix,     // 2-D hidden weights: attention q/k/v/o, MLP gate/up/down
};

struct ParamView {
  std::string name;            // e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // (out_features, in_features) for matrices
  size_t offset = 0;           // in elements, into the flat buffer
  size_t numel = 0;
  ParamKind kind = ParamKind::Matrix;
  int layer = -1;  // -1 outside the blocks
  int64_t rows() const { return shape.size() == 2 ? shape[0] : 1; }
  int64_t cols() const { return shape.back(); }
};

struct ParamLayout {
  std::vector<ParamView> views;
  size_t total = 0;
  const ParamView& find(const std::string& name) const;  // throws naming the parameter
};

ParamLayout llama_param_layout(const ModelConfig& m);

}  // namespace loco
