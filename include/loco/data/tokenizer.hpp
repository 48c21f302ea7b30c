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
// the text, cut at a line boundary). Returns the number of tokens written per output.
struct TokenizeResult {
  size_t train_tokens = 0;
  size_t val_tokens = 0;
};
TokenizeResult tokenize_text_file(const std::string& input, const std::string& train_out,
                                  const std::string& val_out, double val_fraction);

}  // namespace loco
