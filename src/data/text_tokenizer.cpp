// Byte or SentencePiece tokenization behind one type (loco/data/text_tokenizer.hpp).
#include "loco/data/text_tokenizer.hpp"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <unordered_map>

#include "loco/config/config.hpp"
#include "loco/core/error.hpp"

namespace loco {

struct TextTokenizer::SentencePiece {
  sentencepiece::SentencePieceProcessor processor;
  std::string serialized;
};

namespace {

const std::string kNoModel;

// Training sentences: the text's lines, without their '\n' (empty lines skipped).
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::string& text) : text_(text) { Next(); }
  bool done() const override { return done_; }
  void Next() override {
    while (pos_ < text_.size()) {
      size_t end = text_.find('\n', pos_);
      if (end == std::string::npos) end = text_.size();
      line_.assign(text_, pos_, end - pos_);
      pos_ = end + 1;
      if (!line_.empty()) return;
    }
    done_ = true;
  }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::string& text_;
  size_t pos_ = 0;
  std::string line_;
  bool done_ = false;
};

// Bytes of text a piece stands for: "▁" (U+2581, 3 bytes of UTF-8) is the one space it marks;
// every other byte of the piece is itself.
uint32_t piece_text_bytes(const std::string& piece) {
  static const std::string kSpaceMark = "\xE2\x96\x81";
  size_t marks = 0;
  for (size_t at = piece.find(kSpaceMark); at != std::string::npos;
       at = piece.find(kSpaceMark, at + kSpaceMark.size()))
    ++marks;
  return uint32_t(piece.size() - 2 * marks);
}

}  // namespace

TextTokenizer TextTokenizer::bytes() {
  TextTokenizer t;
  t.token_bytes_.assign(256, 1);
  return t;
}

TextTokenizer TextTokenizer::from_spec(const std::string& spec) {
  if (spec == "byte") return bytes();
  std::ifstream in(spec, std::ios::binary);
  if (!in)
    throw Error("tokenizer " + spec +
                ": cannot open (data.tokenizer is \"byte\" or the path of a SentencePiece "
                ".model file)");
  std::string serialized((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error("tokenizer " + spec + ": read failed");
  return from_sentencepiece(serialized, spec);
}

TextTokenizer TextTokenizer::from_sentencepiece(const std::string& serialized,
                                                const std::string& origin) {
  auto sp = std::make_shared<SentencePiece>();
  sp->serialized = serialized;
  const auto status = sp->processor.LoadFromSerializedProto(serialized);
  if (!status.ok())
    throw Error("tokenizer " + origin + ": not a SentencePiece model: " + status.ToString());
  const int n = sp->processor.GetPieceSize();
  if (n < 1) throw Error("tokenizer " + origin + ": the model has no pieces");
  TextTokenizer t;
  t.origin_ = origin;
  t.token_bytes_.resize(size_t(n));
  for (int id = 0; id < n; ++id) {
    uint32_t b;
    if (sp->processor.IsByte(id))
      b = 1;
    else if (sp->processor.IsControl(id) || sp->processor.IsUnknown(id))
      b = 0;
    else
      b = piece_text_bytes(sp->processor.IdToPiece(id));
    t.token_bytes_[size_t(id)] = b;
  }
  t.sp_ = std::move(sp);
  return t;
}

int TextTokenizer::vocab_size() const { return int(token_bytes_.size()); }

const std::string& TextTokenizer::model_bytes() const { return sp_ ? sp_->serialized : kNoModel; }

std::vector<uint32_t> TextTokenizer::encode(const std::string& text) const {
  if (!sp_) {
    std::vector<uint32_t> tokens(text.size());
    for (size_t i = 0; i < text.size(); ++i) tokens[i] = static_cast<unsigned char>(text[i]);
    return tokens;
  }
  std::vector<int> ids;
  const auto status = sp_->processor.Encode(text, &ids);
  if (!status.ok()) throw Error("tokenizer " + origin_ + ": encoding failed: " + status.ToString());
  return std::vector<uint32_t>(ids.begin(), ids.end());
}

std::string TextTokenizer::decode(const std::vector<uint32_t>& tokens) const {
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] >= uint32_t(vocab_size()))
      throw Error("tokenizer " + origin_ + ": token " + std::to_string(tokens[i]) + " at index " +
                  std::to_string(i) + " is outside the vocabulary (" +
                  std::to_string(vocab_size()) + ")");
  if (!sp_) {
    std::string text(tokens.size(), '\0');
    for (size_t i = 0; i < tokens.size(); ++i) text[i] = static_cast<char>(tokens[i]);
    return text;
  }
  const std::vector<int> ids(tokens.begin(), tokens.end());
  std::string text;
  const auto status = sp_->processor.Decode(ids, &text);
  if (!status.ok()) throw Error("tokenizer " + origin_ + ": decoding failed: " + status.ToString());
  return text;
}

uint64_t TextTokenizer::count_bytes(const int32_t* tokens, size_t n) const {
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    const int32_t t = tokens[i];
    if (t < 0 || t >= vocab_size())
      throw Error("tokenizer " + origin_ + ": token " + std::to_string(t) +
                  " is outside the vocabulary (" + std::to_string(vocab_size()) + ")");
    bytes += token_bytes_[size_t(t)];
  }
  return bytes;
}

std::string train_sentencepiece(const std::string& text, const std::string& type, int vocab_size,
                                int threads) {
  if (type != "bpe" && type != "unigram")
    throw Error("tokenizer training: type \"" + type + "\" is not \"bpe\" or \"unigram\"");
  // 3 control pieces + 256 byte pieces come first; the rest are learned.
  if (vocab_size < 260)
    throw Error("tokenizer training: vocab size " + std::to_string(vocab_size) +
                " is too small: the 256 byte pieces and <unk>, <s>, </s> take 259");
  const std::unordered_map<std::string, std::string> options = {
      {"model_type", type},
      {"vocab_size", std::to_string(vocab_size)},
      {"character_coverage", "1.0"},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_digits", "true"},
      {"max_sentence_length", "65536"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"num_threads", std::to_string(std::max(1, threads))},
      {"minloglevel", "2"},
  };
  LineIterator lines(text);
  std::string serialized;
  const auto status = sentencepiece::SentencePieceTrainer::Train(options, &lines, &serialized);
  if (!status.ok())
    throw Error("tokenizer training (" + type + ", vocab " + std::to_string(vocab_size) +
                "): " + status.ToString());
  return serialized;
}

void check_tokenizer_fits(const Config& config, const std::string& source) {
  if (config.data.tokenizer == "byte") return;
  TextTokenizer tok;
  try {
    tok = TextTokenizer::from_spec(config.data.tokenizer);
  } catch (const Error& e) {
    throw Error(source + ": data.tokenizer: " + e.what());
  }
  if (tok.vocab_size() > config.model.vocab_size)
    throw Error(source + ": model.vocab_size = " + std::to_string(config.model.vocab_size) +
                ": smaller than the vocabulary of data.tokenizer " + config.data.tokenizer + " (" +
                std::to_string(tok.vocab_size()) + " pieces)");
}

size_t first_difference(const std::string& a, const std::string& b) {
  const size_t n = std::min(a.size(), b.size());
  const auto m = std::mismatch(a.begin(), a.begin() + ptrdiff_t(n), b.begin());
  const size_t at = size_t(m.first - a.begin());
  if (at < n) return at;
  return a.size() == b.size() ? std::string::npos : n;
}

}  // namespace loco
