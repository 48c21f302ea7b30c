// Byte-level tokenizer: token id = byte value, vocab 256. Lossless for any text.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace loco {

struct ByteTokenizer {
  static constexpr int kVocabSize = 256;
  std::vector<uint32_t> encode(const std::string& text) const;
  std::string decode(const std::vector<uint32_t>& tokens) const;
};

// `loco tokenize`: text file(s) → one shard (optionally a train/val split by fraction of
// the text, cut at a line boundary), with the byte tokenizer or a SentencePiece model
// (loco/data/text_tokenizer.hpp) that is either trained here on the training part or read
// from a .model file. Shards hold uint16 tokens when the vocabulary fits (<= 65536), uint32
// otherwise. Every part is decoded again and compared with its text before anything is
// written; a difference is an error naming its byte offset (allow_lossy: a warning).
struct TokenizeOptions {
  std::string tokenizer = "byte";  // "byte", "bpe" / "unigram" (train one), or a .model path
  int vocab_size = 0;              // bpe / unigram
  std::string model_out;           // bpe / unigram: where the trained model is written
  bool allow_lossy = false;
  int threads = 1;  // SentencePiece training
};
struct TokenizeResult {
  size_t train_tokens = 0;
  size_t val_tokens = 0;
  size_t train_bytes = 0, val_bytes = 0;  // of text
  int vocab_size = 256;
  bool u32 = false;                // shard token width
  std::string tokenizer = "byte";  // "byte" or the model's path (model_out when trained)
  bool lossless = true;
};
TokenizeResult tokenize_text_file(const std::string& input, const std::string& train_out,
                                  const std::string& val_out, double val_fraction,
                                  const TokenizeOptions& options = {});

}  // namespace loco
