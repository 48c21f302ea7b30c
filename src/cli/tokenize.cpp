// `loco tokenize INPUT --train OUT.bin [--val OUT.bin --val-fraction F]
//                [--tokenizer byte|bpe|unigram|PATH.model] [--vocab-size N] [--model-out PATH]`:
// text → llm.c token shards, with the byte tokenizer, a SentencePiece model trained here on the
// training part of the text, or an existing SentencePiece .model file
// (loco/data/tokenizer.hpp for the rules).
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "io_commands.hpp"
#include "loco/data/tokenizer.hpp"

namespace loco::cli {

namespace {

struct TokenizeArgs {
  std::string input, train_out, val_out;
  double val_fraction = 0.0;
  TokenizeOptions options;
};

int run_tokenize(const TokenizeArgs& a) {
  const TokenizeResult r =
      tokenize_text_file(a.input, a.train_out, a.val_out, a.val_fraction, a.options);
  auto per_token = [](size_t bytes, size_t tokens) {
    return tokens ? double(bytes) / double(tokens) : 0.0;
  };
  spdlog::info(
      "tokenized {} with {} (vocab {}, {} shards): {} train tokens ({:.3f} bytes/token) → "
      "{}{}{}",
      a.input, r.tokenizer, r.vocab_size, r.u32 ? "uint32" : "uint16", r.train_tokens,
      per_token(r.train_bytes, r.train_tokens), a.train_out,
      a.val_out.empty() ? std::string()
                        : fmt::format(", {} validation tokens → {}", r.val_tokens, a.val_out),
      r.lossless ? "; round trip exact" : "; round trip NOT exact (--allow-lossy)");
  if (a.options.tokenizer == "bpe" || a.options.tokenizer == "unigram")
    spdlog::info(
        "tokenizer model → {} (set data.tokenizer to this path and model.vocab_size to "
        "{})",
        a.options.model_out, r.vocab_size);
  return 0;
}

}  // namespace

IoCommand add_tokenize_command(CLI::App& app) {
  auto a = std::make_shared<TokenizeArgs>();
  auto* sub = app.add_subcommand(
      "tokenize",
      "Turn a text file into token shards (llm.c format): bytes, or a SentencePiece BPE / "
      "unigram model trained here or read from a .model file");
  sub->add_option("input", a->input, "Text file (or a glob: files concatenated in sorted order)")
      ->required();
  sub->add_option("--train", a->train_out, "Output shard for training tokens")->required();
  sub->add_option("--val", a->val_out, "Output shard for validation tokens");
  sub->add_option("--val-fraction", a->val_fraction,
                  "Fraction of the text (cut at a line) kept for validation")
      ->check(CLI::Range(0.0, 0.99));
  sub->add_option("--tokenizer", a->options.tokenizer,
                  "byte (default), bpe or unigram (train a SentencePiece model on the training "
                  "part), or the path of a SentencePiece .model file")
      ->type_name("byte|bpe|unigram|PATH");
  sub->add_option("--vocab-size", a->options.vocab_size,
                  "Vocabulary size of the model to train (bpe, unigram; >= 260)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--model-out", a->options.model_out,
                  "Where the trained model is written (bpe, unigram)");
  sub->add_option("--threads", a->options.threads, "Threads for training (default 1)")
      ->check(CLI::PositiveNumber);
  sub->add_flag("--allow-lossy", a->options.allow_lossy,
                "Write the shards even when decoding does not give the text back");
  return IoCommand{sub, [a] { return run_tokenize(*a); }};
}

}  // namespace loco::cli
