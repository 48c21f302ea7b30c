// Byte-level tokenizer and `loco tokenize`: see include/loco/data/tokenizer.hpp.
#include "loco/data/tokenizer.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>

#include "loco/core/error.hpp"
#include "loco/core/files.hpp"
#include "loco/data/shard.hpp"
#include "loco/data/text_tokenizer.hpp"

namespace loco {
namespace {

// One shard holds at most INT32_MAX tokens (its header's count is an int32), and a byte
// tokenizer makes one token per byte: the limit on the text, checked before reading it.
constexpr uint64_t kMaxTextBytes = static_cast<uint64_t>(std::numeric_limits<int32_t>::max());

// Size of a regular file; anything else (a device such as /dev/zero, a FIFO, a directory)
// is refused before reading, since it may never end.
uint64_t text_file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Error(path + ": cannot open text file: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    throw Error(path +
                ": not a regular file (tokenize reads text files; a device, pipe or "
                "directory is refused)");
  return static_cast<uint64_t>(st.st_size);
}

std::string read_file_bytes(const std::string& path, uint64_t expected) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open text file: " + std::strerror(errno));
  std::string text;
  text.resize(static_cast<size_t>(expected));
  in.read(text.data(), static_cast<std::streamsize>(expected));
  if (in.bad() || static_cast<uint64_t>(in.gcount()) != expected)
    throw Error(path + ": read failed (got " + std::to_string(in.gcount()) + " of " +
                std::to_string(expected) + " bytes; did the file change while reading?)");
  return text;
}

// An output must be neither an input nor the other output: writing it would destroy the
// text being read, or the shard just written.
void check_outputs(const std::string& input, const std::vector<std::string>& inputs,
                   const std::string& train_out, const std::string& val_out) {
  for (const std::string& in : inputs) {
    if (same_file(train_out, in))
      throw Error("tokenize " + input + ": --train " + train_out + " is the input file " + in +
                  " (it would be overwritten); choose another output path");
    if (!val_out.empty() && same_file(val_out, in))
      throw Error("tokenize " + input + ": --val " + val_out + " is the input file " + in +
                  " (it would be overwritten); choose another output path");
  }
  if (!val_out.empty() && same_file(train_out, val_out))
    throw Error("tokenize " + input + ": --train " + train_out + " and --val " + val_out +
                " are the same file (the validation shard would replace the training shard)");
}

std::string fraction_text(double f) {
  std::ostringstream s;
  s << f;
  return s.str();
}

}  // namespace

std::vector<uint32_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<uint32_t> tokens(text.size());
  for (size_t i = 0; i < text.size(); ++i) tokens[i] = static_cast<unsigned char>(text[i]);
  return tokens;
}

std::string ByteTokenizer::decode(const std::vector<uint32_t>& tokens) const {
  std::string text(tokens.size(), '\0');
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= static_cast<uint32_t>(kVocabSize))
      throw Error("byte tokenizer: token " + std::to_string(tokens[i]) + " at index " +
                  std::to_string(i) + " is not a byte (vocab " + std::to_string(kVocabSize) + ")");
    text[i] = static_cast<char>(static_cast<unsigned char>(tokens[i]));
  }
  return text;
}

// The input may be one path or a glob; matched files are concatenated byte for byte in sorted
// order. The split point: target = floor(n * (1 - val_fraction)); the cut is the first line
// start (a position just after '\n', strictly inside the text) at or after the target, or else
// the last one before it. scripts/make-corpus.sh implements the same rule.
TokenizeResult tokenize_text_file(const std::string& input, const std::string& train_out,
                                  const std::string& val_out, double val_fraction,
                                  const TokenizeOptions& options) {
  const bool train_model = options.tokenizer == "bpe" || options.tokenizer == "unigram";
  if (train_model && options.model_out.empty())
    throw Error("tokenize " + input + ": training a " + options.tokenizer +
                " tokenizer needs an output path for the model (--model-out)");
  if (train_model && options.vocab_size <= 0)
    throw Error("tokenize " + input + ": training a " + options.tokenizer +
                " tokenizer needs a vocabulary size (--vocab-size)");
  if (!train_model && options.vocab_size > 0)
    throw Error("tokenize " + input +
                ": --vocab-size applies to training a tokenizer (bpe, "
                "unigram), not to \"" +
                options.tokenizer + "\"");
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    throw Error("tokenize " + input + ": val_fraction " + fraction_text(val_fraction) +
                " is outside [0, 1)");
  if (train_out.empty()) throw Error("tokenize " + input + ": no train output path given");
  if (val_fraction > 0.0 && val_out.empty())
    throw Error("tokenize " + input + ": val_fraction " + fraction_text(val_fraction) +
                " needs a validation output path");
  if (val_fraction == 0.0 && !val_out.empty())
    throw Error("tokenize " + input + ": validation output " + val_out +
                " given but val_fraction is 0");

  const std::vector<std::string> inputs = expand_shard_glob(input);
  check_outputs(input, inputs, train_out, val_out);
  std::vector<uint64_t> sizes;
  uint64_t total = 0;
  for (const std::string& path : inputs) {
    sizes.push_back(text_file_size(path));
    total += sizes.back();
    if (total > kMaxTextBytes)
      throw Error("tokenize " + input + ": the text is larger than " +
                  std::to_string(kMaxTextBytes) + " bytes (" + path + " brings it to " +
                  std::to_string(total) +
                  "); one shard holds at most that many byte tokens: split the text");
  }
  std::string text;
  text.reserve(static_cast<size_t>(total));
  for (size_t i = 0; i < inputs.size(); ++i) text += read_file_bytes(inputs[i], sizes[i]);
  if (text.empty()) throw Error("tokenize " + input + ": the input is empty");

  const size_t n = text.size();
  size_t cut = n;
  if (val_fraction > 0.0) {
    const double target_d = std::floor(static_cast<double>(n) * (1.0 - val_fraction));
    const size_t target = target_d <= 0.0 ? 0 : static_cast<size_t>(target_d);
    cut = 0;
    // Forward: first '\n' at index >= target-1 gives a line start >= target.
    size_t nl = text.find('\n', target == 0 ? 0 : target - 1);
    if (nl != std::string::npos && nl + 1 < n) {
      cut = nl + 1;
    } else if (target >= 2) {
      // Backward: last '\n' at index <= target-2 gives a line start < target.
      nl = text.rfind('\n', target - 2);
      if (nl != std::string::npos) cut = nl + 1;
    }
    if (cut == 0 || cut >= n)
      throw Error("tokenize " + input + ": cannot split " + fraction_text(val_fraction) + " of " +
                  std::to_string(n) +
                  " bytes for validation at a line boundary (no line break inside the text)");
  }

  const std::string train_text = text.substr(0, cut), val_text = text.substr(cut);
  text.clear();
  TokenizeResult result;
  const TextTokenizer tok = train_model
                                ? TextTokenizer::from_sentencepiece(
                                      train_sentencepiece(train_text, options.tokenizer,
                                                          options.vocab_size, options.threads),
                                      options.model_out)
                                : TextTokenizer::from_spec(options.tokenizer);
  result.vocab_size = tok.vocab_size();
  result.u32 = tok.vocab_size() > 65536;
  result.tokenizer = tok.origin();
  // Encode and check everything before writing anything.
  auto encode_checked = [&](const std::string& part, const char* which) {
    std::vector<uint32_t> tokens = tok.encode(part);
    const size_t at = first_difference(tok.decode(tokens), part);
    if (at != std::string::npos) {
      result.lossless = false;
      const std::string why = "tokenize " + input + ": the " + tok.origin() +
                              " tokenizer does not reproduce the " + which +
                              " text: decoding differs from byte " + std::to_string(at) +
                              " on (a normalising model, or bytes it cannot represent)";
      if (!options.allow_lossy) throw Error(why + "; pass --allow-lossy to write it anyway");
      std::fprintf(stderr, "warning: %s\n", why.c_str());
    }
    return tokens;
  };
  const std::vector<uint32_t> train = encode_checked(train_text, "training");
  std::vector<uint32_t> val;
  if (val_fraction > 0.0) val = encode_checked(val_text, "validation");
  if (train_model) write_file_atomic(options.model_out, tok.model_bytes());
  write_shard(train_out, train, result.u32);
  result.train_tokens = train.size();
  result.train_bytes = train_text.size();
  if (val_fraction > 0.0) {
    write_shard(val_out, val, result.u32);
    result.val_tokens = val.size();
    result.val_bytes = val_text.size();
  }
  return result;
}

}  // namespace loco
