// The tokenizer of a run: bytes (token id = byte value, vocabulary 256) or a SentencePiece
// model (BPE or unigram, trained by `loco tokenize` or brought along, such as Llama-2's
// tokenizer.model). One value type for both so the trainer, `loco eval --text` and
// `loco export-hf` need not care which.
//
// `data.tokenizer` in a config names it: "byte", or the path of a .model file.
//
// Bits per byte: a loss in nats per token compares across tokenizers only per byte of text,
//   bits/byte = loss · (tokens / bytes) / ln 2,
// where `bytes` is what the scored tokens stand for. token_bytes() gives that length per id:
// 1 for a byte token (and a SentencePiece byte-fallback piece <0xAB>), the UTF-8 length of a
// piece with each "▁" counted as the one space it stands for, 0 for control pieces (<s>,
// </s>) and for <unk>. One approximation: SentencePiece's dummy prefix ("▁" in front of the
// text) counts as a byte though decoding drops it: one byte per encoded text.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace loco {

struct Config;

class TextTokenizer {
 public:
  // "byte", or a path to a SentencePiece .model file (loaded and checked; loco::Error names
  // the file and what is wrong).
  static TextTokenizer from_spec(const std::string& spec);
  static TextTokenizer bytes();
  // A model already in memory (a trained one); `origin` names it in messages.
  static TextTokenizer from_sentencepiece(const std::string& serialized_model,
                                          const std::string& origin);

  bool is_byte() const { return sp_ == nullptr; }
  std::string kind() const { return is_byte() ? "byte" : "sentencepiece"; }
  std::string origin() const { return origin_; }  // "byte" or the model's path
  int vocab_size() const;
  std::vector<uint32_t> encode(const std::string& text) const;
  std::string decode(const std::vector<uint32_t>& tokens) const;
  const std::vector<uint32_t>& token_bytes() const { return token_bytes_; }
  // Bytes of text the tokens stand for (sum of token_bytes()); ids must be < vocab_size().
  uint64_t count_bytes(const int32_t* tokens, size_t n) const;
  // The serialized SentencePiece model (empty for bytes): what is copied next to a run and
  // an exported model.
  const std::string& model_bytes() const;

 private:
  struct SentencePiece;
  std::shared_ptr<const SentencePiece> sp_;
  std::string origin_ = "byte";
  std::vector<uint32_t> token_bytes_;
};

// Trains a SentencePiece model on `text` (one sentence per line; lines are training examples,
// newlines themselves are encoded through byte fallback). Settings chosen so that
// decode(encode(text)) == text for any UTF-8 or binary text: identity normalisation, no
// whitespace folding, byte fallback, full character coverage; <unk> = 0, <s> = 1, </s> = 2
// (as Llama's). `type`: "bpe" or "unigram". Returns the serialized model.
std::string train_sentencepiece(const std::string& text, const std::string& type, int vocab_size,
                                int threads = 1);

// A config's data.tokenizer (a .model path: "byte" passes) loads, and its vocabulary fits
// model.vocab_size; loco::Error naming `source` and the key otherwise.
void check_tokenizer_fits(const Config& config, const std::string& source);

// Index of the first byte where a and b differ (the shorter length when one is a prefix of the
// other); npos when equal.
size_t first_difference(const std::string& a, const std::string& b);

}  // namespace loco
