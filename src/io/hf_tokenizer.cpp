// Tokenizer files of an exported Hugging Face directory (loco/io/hf_tokenizer.hpp).
#include "loco/io/hf_tokenizer.hpp"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "loco/core/error.hpp"
#include "loco/core/files.hpp"
#include "loco/data/text_tokenizer.hpp"

namespace loco {

bool write_hf_tokenizer(const std::string& out_dir, const TextTokenizer& tokenizer,
                        const ModelConfig& model) {
  if (tokenizer.is_byte()) return false;
  if (tokenizer.vocab_size() > model.vocab_size)
    throw Error("export-hf: the tokenizer " + tokenizer.origin() + " has " +
                std::to_string(tokenizer.vocab_size()) + " pieces, more than the model's " +
                std::to_string(model.vocab_size) + " embeddings");
  namespace fs = std::filesystem;
  const fs::path dir(out_dir);
  const nlohmann::json specials = {
      {"unk_token", "<unk>"}, {"bos_token", "<s>"}, {"eos_token", "</s>"}};
  nlohmann::json config = specials;
  config["tokenizer_class"] = "LlamaTokenizer";
  config["add_bos_token"] = false;
  config["add_eos_token"] = false;
  config["legacy"] = true;
  config["clean_up_tokenization_spaces"] = false;
  config["model_max_length"] = model.max_seq_len;
  config["sp_model_kwargs"] = nlohmann::json::object();
  write_file_atomic((dir / "tokenizer.model").string(), tokenizer.model_bytes());
  write_file_atomic((dir / "tokenizer_config.json").string(), config.dump(2) + "\n");
  write_file_atomic((dir / "special_tokens_map.json").string(), specials.dump(2) + "\n");
  return true;
}

}  // namespace loco
