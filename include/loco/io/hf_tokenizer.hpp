// The tokenizer files of a Hugging Face model directory, written by `loco export-hf` next to
// config.json and model.safetensors, so AutoTokenizer loads the tokenizer the model was trained
// with (transformers' LlamaTokenizer reads a SentencePiece model):
//   tokenizer.model          the SentencePiece model, byte for byte the run's
//   tokenizer_config.json    LlamaTokenizer; no <s> added in front (loco trains without one);
//                            legacy (plain SentencePiece) handling of text
//   special_tokens_map.json  <unk>, <s>, </s> as the model names them
// A byte-level model has no Hugging Face tokenizer class that maps byte b to id b: nothing is
// written for it (ids are the bytes: encode with `list(text.encode())`).
#pragma once
#include <string>

#include "loco/config/config.hpp"

namespace loco {

class TextTokenizer;

// Writes the three files (each atomically) when `tokenizer` is a SentencePiece model; returns
// false and writes nothing for the byte tokenizer.
bool write_hf_tokenizer(const std::string& out_dir, const TextTokenizer& tokenizer,
                        const ModelConfig& model);

}  // namespace loco
