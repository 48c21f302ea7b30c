// Subword tokenizers (loco/data/text_tokenizer.hpp) and `loco tokenize` with them: trained BPE
// and unigram models give the text back exactly, shards hold what the model encodes, the
// bytes-per-token figures behind bits per byte, and the errors.
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <unordered_map>
#include <vector>

#include "loco/config/config.hpp"
#include "loco/core/error.hpp"
#include "loco/data/shard.hpp"
#include "loco/data/stream.hpp"
#include "loco/data/text_tokenizer.hpp"
#include "loco/data/tokenizer.hpp"
#include "loco/train/bits_per_byte.hpp"
#include "support/catch.hpp"
#include "support/temp_files.hpp"

namespace fs = std::filesystem;
using namespace loco;

namespace {

using loco::testing::slurp;
using loco::testing::spit;
using loco::testing::TempDir;

// The first ~100 kB of the bundled corpus, cut at a line end.
const std::string& corpus_sample() {
  static const std::string text = [] {
    std::string all = slurp(std::string(LOCO_SOURCE_DIR) + "/data/kjv.txt");
    return all.substr(0, all.find('\n', 100000) + 1);
  }();
  return text;
}

// Texts a tokenizer must give back byte for byte.
const std::vector<std::string>& awkward_texts() {
  static const std::vector<std::string> texts = {
      "In the beginning God created the heaven and the earth.\n",
      "  leading spaces,  double  spaces and a trailing one \n",
      "\n\nnewlines first\r\nand a CR\ttab",
      "UTF-8: caf\xC3\xA9, \xE6\x97\xA5\xE6\x9C\xAC, \xE2\x98\x83, \xF0\x9F\x99\x82",
      "digits 1234567890 and 3.14159",
      " ",
      "x",
  };
  return texts;
}

const TextTokenizer& trained(const std::string& type) {
  static const TextTokenizer bpe = TextTokenizer::from_sentencepiece(
      train_sentencepiece(corpus_sample(), "bpe", 400), "test-bpe");
  static const TextTokenizer unigram = TextTokenizer::from_sentencepiece(
      train_sentencepiece(corpus_sample(), "unigram", 400), "test-unigram");
  return type == "bpe" ? bpe : unigram;
}

}  // namespace

TEST_CASE("trained BPE and unigram tokenizers give every text back exactly", "[tokenizer]") {
  for (const char* type : {"bpe", "unigram"}) {
    INFO(type);
    const TextTokenizer& tok = trained(type);
    CHECK(tok.kind() == "sentencepiece");
    CHECK(tok.vocab_size() == 400);
    const std::vector<uint32_t> ids = tok.encode(corpus_sample());
    CHECK(tok.decode(ids) == corpus_sample());
    // Subwords: well under one token per byte on the text they were trained on.
    CHECK(double(ids.size()) < 0.6 * double(corpus_sample().size()));
    for (const std::string& t : awkward_texts()) {
      INFO(t);
      CHECK(tok.decode(tok.encode(t)) == t);
    }
    CHECK(tok.encode("").empty());
  }
}

TEST_CASE("token_bytes: the bytes each token stands for", "[tokenizer]") {
  for (const char* type : {"bpe", "unigram"}) {
    INFO(type);
    const TextTokenizer& tok = trained(type);
    // Control pieces stand for nothing, byte pieces for one byte.
    CHECK(tok.token_bytes()[0] == 0);                                                // <unk>
    CHECK(tok.token_bytes()[1] == 0);                                                // <s>
    CHECK(tok.token_bytes()[2] == 0);                                                // </s>
    for (int id = 3; id < 3 + 256; ++id) CHECK(tok.token_bytes()[size_t(id)] == 1);  // <0x..>
    // Over an encoded text: its length plus the one dummy-prefix space.
    for (const std::string& t : awkward_texts()) {
      INFO(t);
      const std::vector<uint32_t> ids = tok.encode(t);
      const std::vector<int32_t> signed_ids(ids.begin(), ids.end());
      CHECK(tok.count_bytes(signed_ids.data(), signed_ids.size()) == t.size() + 1);
    }
  }
  const TextTokenizer bytes = TextTokenizer::bytes();
  CHECK(bytes.vocab_size() == 256);
  const int32_t some[] = {0, 65, 255};
  CHECK(bytes.count_bytes(some, 3) == 3);
  const int32_t outside[] = {256};
  CHECK_THROWS_WITH(bytes.count_bytes(outside, 1), LOCO_CONTAINS("outside the vocabulary"));
}

TEST_CASE("tokenize with a trained model: u16 shards that decode to the text, the model file",
          "[tokenizer]") {
  TempDir dir;
  spit(dir.file("in.txt"), corpus_sample());
  TokenizeOptions opt;
  opt.tokenizer = "bpe";
  opt.vocab_size = 420;
  opt.model_out = dir.file("m.model");
  const TokenizeResult r =
      tokenize_text_file(dir.file("in.txt"), dir.file("t.bin"), dir.file("v.bin"), 0.1, opt);
  CHECK(r.vocab_size == 420);
  CHECK_FALSE(r.u32);
  CHECK(r.lossless);
  CHECK(r.tokenizer == dir.file("m.model"));
  CHECK(r.train_bytes + r.val_bytes == corpus_sample().size());
  const TextTokenizer tok = TextTokenizer::from_spec(dir.file("m.model"));
  CHECK(tok.vocab_size() == 420);
  const std::vector<uint32_t> train = read_shard(dir.file("t.bin"), 420);
  const std::vector<uint32_t> val = read_shard(dir.file("v.bin"), 420);
  CHECK(train.size() == r.train_tokens);
  CHECK(tok.decode(train) + tok.decode(val) == corpus_sample());
  int32_t magic = 0;
  std::ifstream(dir.file("t.bin"), std::ios::binary).read(reinterpret_cast<char*>(&magic), 4);
  CHECK(magic == kShardMagicU16);

  // An existing model: the same tokens (the model is used as it is, not retrained).
  TokenizeOptions reuse;
  reuse.tokenizer = dir.file("m.model");
  tokenize_text_file(dir.file("in.txt"), dir.file("t2.bin"), dir.file("v2.bin"), 0.1, reuse);
  CHECK(read_shard(dir.file("t2.bin")) == train);
  CHECK(read_shard(dir.file("v2.bin")) == val);
}

TEST_CASE("tokenize refuses bad tokenizer options before writing anything", "[tokenizer]") {
  TempDir dir;
  spit(dir.file("in.txt"), corpus_sample());
  const std::string in = dir.file("in.txt"), out = dir.file("t.bin");
  TokenizeOptions opt;
  opt.tokenizer = "bpe";
  opt.vocab_size = 300;
  CHECK_THROWS_WITH(tokenize_text_file(in, out, "", 0.0, opt), LOCO_CONTAINS("--model-out"));
  opt.model_out = dir.file("m.model");
  opt.vocab_size = 0;
  CHECK_THROWS_WITH(tokenize_text_file(in, out, "", 0.0, opt), LOCO_CONTAINS("--vocab-size"));
  opt.vocab_size = 100;
  CHECK_THROWS_WITH(tokenize_text_file(in, out, "", 0.0, opt), LOCO_CONTAINS("too small"));
  TokenizeOptions bytes;
  bytes.vocab_size = 500;
  CHECK_THROWS_WITH(tokenize_text_file(in, out, "", 0.0, bytes),
                    LOCO_CONTAINS("--vocab-size applies to training"));
  TokenizeOptions missing;
  missing.tokenizer = dir.file("nope.model");
  CHECK_THROWS_WITH(tokenize_text_file(in, out, "", 0.0, missing), LOCO_CONTAINS("cannot open"));
  spit(dir.file("junk.model"), "this is not a protobuf");
  missing.tokenizer = dir.file("junk.model");
  CHECK_THROWS_WITH(tokenize_text_file(in, out, "", 0.0, missing),
                    LOCO_CONTAINS("not a SentencePiece model"));
  CHECK_FALSE(fs::exists(out));
  CHECK_FALSE(fs::exists(dir.file("m.model")));
}

TEST_CASE("tokenize with a normalising model: an error naming the offset, or --allow-lossy",
          "[tokenizer]") {
  TempDir dir;
  // SentencePiece's defaults fold runs of spaces: "a  b" comes back as "a b".
  const std::unordered_map<std::string, std::string> defaults = {{"model_type", "bpe"},
                                                                 {"vocab_size", "400"},
                                                                 {"byte_fallback", "true"},
                                                                 {"minloglevel", "2"},
                                                                 {"model_prefix", ""}};
  struct Lines : sentencepiece::SentenceIterator {
    std::vector<std::string> lines;
    size_t i = 0;
    bool done() const override { return i >= lines.size(); }
    void Next() override { ++i; }
    const std::string& value() const override { return lines[i]; }
    sentencepiece::util::Status status() const override { return {}; }
  } lines;
  for (size_t p = 0; p < corpus_sample().size();) {
    const size_t e = corpus_sample().find('\n', p);
    if (e > p) lines.lines.push_back(corpus_sample().substr(p, e - p));
    p = e + 1;
  }
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(defaults, &lines, &model);
  INFO(status.ToString());
  REQUIRE(status.ok());
  spit(dir.file("nfkc.model"), model);
  spit(dir.file("in.txt"), "one space\ntwo  spaces\n");
  TokenizeOptions opt;
  opt.tokenizer = dir.file("nfkc.model");
  CHECK_THROWS_WITH(tokenize_text_file(dir.file("in.txt"), dir.file("t.bin"), "", 0.0, opt),
                    LOCO_CONTAINS("decoding differs from byte"));
  CHECK_FALSE(fs::exists(dir.file("t.bin")));
  opt.allow_lossy = true;
  const TokenizeResult r = tokenize_text_file(dir.file("in.txt"), dir.file("t.bin"), "", 0.0, opt);
  CHECK_FALSE(r.lossless);
  CHECK(fs::exists(dir.file("t.bin")));
}

TEST_CASE("first_difference", "[tokenizer]") {
  CHECK(first_difference("abc", "abc") == std::string::npos);
  CHECK(first_difference("abc", "abd") == 2);
  CHECK(first_difference("ab", "abc") == 2);
  CHECK(first_difference("", "") == std::string::npos);
}

TEST_CASE("a config's data.tokenizer: resolved, loaded, its vocabulary must fit", "[tokenizer]") {
  TempDir dir;
  spit(dir.file("m.model"), trained("bpe").model_bytes());
  const std::string cfg = dir.file("c.json");
  spit(cfg, "{\"name\": \"t\", \"data\": {\"train\": \"" + std::string(LOCO_SOURCE_DIR) +
                "/data/kjv-val.bin\", \"val\": \"\", \"tokenizer\": \"" + dir.file("m.model") +
                "\"}, \"model\": {\"vocab_size\": 512}}");
  const Config c = load_config(cfg, {});
  CHECK(c.data.tokenizer == dir.file("m.model"));
  CHECK_THROWS_WITH(load_config(cfg, {"model.vocab_size=300"}),
                    LOCO_CONTAINS("smaller than the vocabulary of data.tokenizer"));
  CHECK_THROWS_WITH(load_config(cfg, {"data.tokenizer=" + dir.file("gone.model")}),
                    LOCO_CONTAINS("data.tokenizer"));
}

TEST_CASE("bits per byte: loss / (ln 2 · bytes per token)", "[tokenizer]") {
  CHECK(bits_per_byte(std::log(2.0), 1.0) == Catch::Approx(1.0));
  CHECK(bits_per_byte(2.0, 4.0) == Catch::Approx(2.0 / (4.0 * std::log(2.0))));
  // Byte shards: one byte per token.
  TokenStream val(std::string(LOCO_SOURCE_DIR) + "/data/kjv-val.bin", 32, 1, 0, 1, false, 256);
  const auto bpt = validation_bytes_per_token(val, TextTokenizer::bytes(), 2, 4, 32);
  REQUIRE(bpt.has_value());
  CHECK(*bpt == 1.0);
  // Subword shards: the windows' targets stand for more than one byte each; the figure is
  // bytes over tokens of exactly those targets.
  TempDir dir;
  const TextTokenizer& tok = trained("bpe");
  const std::vector<uint32_t> ids = tok.encode(corpus_sample());
  write_shard(dir.file("s.bin"), ids);
  TokenStream sub(dir.file("s.bin"), 16, 1, 0, 1, false, 400);
  const auto sub_bpt = validation_bytes_per_token(sub, tok, 3, 2, 16);
  REQUIRE(sub_bpt.has_value());
  uint64_t bytes = 0;
  for (size_t w = 0; w < 6; ++w)  // windows of 17 tokens, stride 16: targets 1..16 of each
    for (size_t i = 1; i <= 16; ++i) bytes += tok.token_bytes()[ids[w * 16 + i]];
  CHECK(*sub_bpt == Catch::Approx(double(bytes) / 96.0));
  CHECK(*sub_bpt > 1.5);
  // Tokens outside the tokenizer's vocabulary: no figure.
  TokenStream wide(dir.file("s.bin"), 16, 1, 0, 1, false, 400);
  CHECK_FALSE(validation_bytes_per_token(wide, TextTokenizer::bytes(), 3, 2, 16).has_value());
}
