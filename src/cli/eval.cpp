// `loco eval SOURCE (--data GLOB | --token-file FILE | --text FILE)`: mean next-token loss of a
// checkpoint's or HF directory's model on the given tokens, as one JSON object on stdout.
// Optionally writes the logits (--logits) and the gradient of the mean loss with respect to
// every parameter (--grads) as safetensors files.
//
// Tokens are cut into windows of seq_len + 1 (stride seq_len, in order, as the trainer's
// validation does); the loss is the mean over every predicted token.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io_commands.hpp"
#include "loco/backend/backend.hpp"
#include "loco/core/error.hpp"
#include "loco/data/shard.hpp"
#include "loco/data/text_tokenizer.hpp"
#include "loco/io/file_io.hpp"
#include "loco/io/model_source.hpp"
#include "loco/io/safetensors.hpp"
#include "loco/model/llama.hpp"
#include "loco/model/param_layout.hpp"
#include "loco/ops/attention.hpp"
#include "loco/ops/embedding.hpp"
#include "loco/ops/matmul.hpp"
#include "loco/ops/rmsnorm.hpp"
#include "loco/ops/rope.hpp"
#include "loco/ops/swiglu.hpp"
#include "loco/ops/vector_ops.hpp"
#include "loco/train/bits_per_byte.hpp"
#include "loco/train/memory_plan.hpp"

namespace loco::cli {

namespace {

struct EvalArgs {
  std::string source, data, token_file, text, tensor = "params", backend = "cpu", tokenizer;
  std::string logits_out, grads_out;
  int seq_len = 0, batch_size = 8, max_batches = 0;
};

// Integers separated by whitespace and/or commas, or one JSON array of integers.
std::vector<uint32_t> read_token_file(const std::string& path) {
  const AlignedBytes b = read_file_aligned(path, "token file", 1ull << 32);
  const std::string text(reinterpret_cast<const char*>(b.data.get()), b.size);
  const size_t first = text.find_first_not_of(" \t\r\n");
  std::vector<uint32_t> tokens;
  if (first != std::string::npos && text[first] == '[') {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ": not a valid JSON array of token ids: " + e.what());
    }
    for (size_t i = 0; i < j.size(); ++i) {
      if (!j[i].is_number_unsigned() || j[i].get<uint64_t>() > 0xFFFFFFFFull)
        throw Error(path + ": element " + std::to_string(i) + " is not a token id (" + j[i].dump() +
                    ")");
      tokens.push_back(static_cast<uint32_t>(j[i].get<uint64_t>()));
    }
    return tokens;
  }
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (std::isspace(c) || c == ',') {
      ++i;
      continue;
    }
    if (!std::isdigit(c))
      throw Error(path + ": byte " + std::to_string(i) + ": expected a token id (digits), found '" +
                  std::string(1, text[i]) + "'");
    uint64_t v = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      v = v * 10 + static_cast<uint64_t>(text[i] - '0');
      if (v > 0xFFFFFFFFull)
        throw Error(path + ": byte " + std::to_string(i) + ": token id too large");
      ++i;
    }
    tokens.push_back(static_cast<uint32_t>(v));
  }
  return tokens;
}

// Logits of every position of B×T tokens, by a forward pass on the host written with the
// reference op templates (LlamaModel keeps its logits private). Cross-checked against
// LlamaModel's loss by the caller.
std::vector<float> host_logits(const ModelConfig& m, const std::vector<float>& params,
                               const int32_t* tokens, int B, int T) {
  const ParamLayout layout = llama_param_layout(m);
  auto w = [&](const std::string& name) { return params.data() + layout.find(name).offset; };
  const int N = B * T, C = m.d_model, F = m.d_ff, V = m.vocab_size, NH = m.n_heads,
            NKV = m.n_kv_heads, hd = m.head_dim();
  const size_t n = static_cast<size_t>(N);
  std::vector<float> x(n * C), h(n * C), q(n * NH * hd), k(n * NKV * hd), v(n * NKV * hd),
      att(n * NH * hd), lse(static_cast<size_t>(B) * NH * T), tmp(n * C), gate(n * F), up(n * F),
      act(n * F), rstd(n), logits(n * V);
  const float eps = static_cast<float>(m.norm_eps);
  ops::embedding_forward(x.data(), tokens, w("model.embed_tokens.weight"), N, C);
  for (int l = 0; l < m.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ops::rmsnorm_forward(h.data(), rstd.data(), x.data(), w(p + "input_layernorm.weight"), N, C,
                         eps);
    ops::matmul_forward(q.data(), h.data(), w(p + "self_attn.q_proj.weight"), N, C, NH * hd);
    ops::matmul_forward(k.data(), h.data(), w(p + "self_attn.k_proj.weight"), N, C, NKV * hd);
    ops::matmul_forward(v.data(), h.data(), w(p + "self_attn.v_proj.weight"), N, C, NKV * hd);
    ops::rope_forward(q.data(), q.data(), B, T, NH, hd, m.rope_theta);
    ops::rope_forward(k.data(), k.data(), B, T, NKV, hd, m.rope_theta);
    ops::attention_forward(att.data(), lse.data(), q.data(), k.data(), v.data(), B, T, NH, NKV, hd);
    ops::matmul_forward(tmp.data(), att.data(), w(p + "self_attn.o_proj.weight"), N, NH * hd, C);
    ops::add(x.data(), x.data(), tmp.data(), n * C);
    ops::rmsnorm_forward(h.data(), rstd.data(), x.data(), w(p + "post_attention_layernorm.weight"),
                         N, C, eps);
    ops::matmul_forward(gate.data(), h.data(), w(p + "mlp.gate_proj.weight"), N, C, F);
    ops::matmul_forward(up.data(), h.data(), w(p + "mlp.up_proj.weight"), N, C, F);
    ops::swiglu_forward(act.data(), gate.data(), up.data(), n * F);
    ops::matmul_forward(tmp.data(), act.data(), w(p + "mlp.down_proj.weight"), N, F, C);
    ops::add(x.data(), x.data(), tmp.data(), n * C);
  }
  ops::rmsnorm_forward(h.data(), rstd.data(), x.data(), w("model.norm.weight"), N, C, eps);
  const float* head = m.tie_embeddings ? w("model.embed_tokens.weight") : w("lm_head.weight");
  ops::matmul_forward(logits.data(), h.data(), head, N, C, V);
  return logits;
}

int run_eval(const EvalArgs& a) {
  const int sources = !a.data.empty() + !a.token_file.empty() + !a.text.empty();
  if (sources != 1) throw Error("eval: give exactly one of --data, --token-file, --text");
  const ModelSource src = load_model_source(a.source, a.tensor);
  const ModelConfig& m = src.model;

  std::vector<uint32_t> tokens;
  std::string token_source;
  if (!a.data.empty()) {
    for (const auto& f : expand_shard_glob(a.data)) {
      auto t = read_shard(f, m.vocab_size);
      tokens.insert(tokens.end(), t.begin(), t.end());
    }
    token_source = a.data;
  } else if (!a.token_file.empty()) {
    tokens = read_token_file(a.token_file);
    token_source = a.token_file;
  }
  // The tokenizer: --tokenizer, else the model's own (ModelSource::tokenizer).
  const std::string tokenizer_spec = !a.tokenizer.empty() ? a.tokenizer : src.tokenizer;
  std::optional<TextTokenizer> tokenizer;
  if (!tokenizer_spec.empty()) tokenizer = TextTokenizer::from_spec(tokenizer_spec);
  if (!a.text.empty()) {
    if (!tokenizer)
      throw Error("eval: " + src.path +
                  " does not say which tokenizer it was trained with; pass --tokenizer byte or "
                  "--tokenizer PATH.model");
    const AlignedBytes b = read_file_aligned(a.text, "text file", 1ull << 32);
    tokens = tokenizer->encode(std::string(reinterpret_cast<const char*>(b.data.get()), b.size));
    token_source = a.text;
  }
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] >= static_cast<uint32_t>(m.vocab_size))
      throw Error(token_source + ": token " + std::to_string(tokens[i]) + " at index " +
                  std::to_string(i) + " is >= vocab_size " + std::to_string(m.vocab_size));
  if (tokens.size() < 2)
    throw Error(token_source + ": need at least 2 tokens, got " + std::to_string(tokens.size()));

  int T = a.seq_len;
  if (T <= 0) {
    T = src.config ? src.config->training.seq_len : std::min(m.max_seq_len, 128);
    T = static_cast<int>(std::min<size_t>(static_cast<size_t>(T), tokens.size() - 1));
  }
  if (T > m.max_seq_len)
    throw Error("eval: --seq-len " + std::to_string(T) + " exceeds the model's max_seq_len " +
                std::to_string(m.max_seq_len));
  size_t windows = (tokens.size() - 1) / static_cast<size_t>(T);
  if (windows == 0)
    throw Error(token_source + ": " + std::to_string(tokens.size()) +
                " tokens do not fill one window of seq_len + 1 = " + std::to_string(T + 1));
  if (a.max_batches > 0)
    windows = std::min(windows, static_cast<size_t>(a.max_batches) * a.batch_size);

  std::vector<int32_t> inputs(windows * T), targets(windows * T);
  for (size_t wdx = 0; wdx < windows; ++wdx)
    for (int t = 0; t < T; ++t) {
      inputs[wdx * T + t] = static_cast<int32_t>(tokens[wdx * T + t]);
      targets[wdx * T + t] = static_cast<int32_t>(tokens[wdx * T + t + 1]);
    }

  auto backend = make_backend(a.backend);
  const uint64_t B_max = std::min<uint64_t>(static_cast<uint64_t>(a.batch_size), windows);
  check_memory_plan(
      "eval",
      plan_model_memory(m, B_max, T, static_cast<int>(dtype_size(backend->activation_dtype()))), m,
      B_max, static_cast<uint64_t>(T), "--batch-size", "--seq-len", backend->name() == "cpu",
      usable_host_memory());
  LlamaModel model(m, *backend);
  backend->upload(model.params(), src.params.data());
  model.params_changed();
  const bool want_grads = !a.grads_out.empty();
  if (want_grads) backend->zero(model.grads());
  double loss_sum = 0.0;
  for (size_t start = 0; start < windows; start += a.batch_size) {
    const int B = static_cast<int>(std::min<size_t>(a.batch_size, windows - start));
    const int32_t* in = inputs.data() + start * T;
    const int32_t* tg = targets.data() + start * T;
    const double loss =
        want_grads ? model.forward_backward(in, tg, B, T, static_cast<float>(double(B) / windows))
                   : model.forward_loss(in, tg, B, T);
    loss_sum += loss * B;
  }
  const double loss = loss_sum / static_cast<double>(windows);
  if (!std::isfinite(loss)) {
    // Say where: the first tensor holding a NaN or inf, else the computation overflowed.
    std::string where;
    for (const auto& v : model.layout().views)
      for (size_t i = 0; i < v.numel && where.empty(); ++i)
        if (!std::isfinite(src.params[v.offset + i]))
          where = "tensor " + v.name + " holds " + std::to_string(src.params[v.offset + i]) +
                  " at element " + std::to_string(i);
    if (where.empty()) where = "the computation overflowed (all weights are finite)";
    throw Error("eval: the loss of " + src.path + " is " + std::to_string(loss) + ": " + where);
  }

  nlohmann::json out = {{"source", src.path},
                        {"kind", src.kind},
                        {"tokens_from", token_source},
                        {"backend", backend->name()},
                        {"seq_len", T},
                        {"windows", windows},
                        {"tokens_evaluated", windows * T},
                        {"loss", loss},
                        {"perplexity", std::exp(loss)}};
  if (tokenizer) {
    out["tokenizer"] = tokenizer->origin();
    // Bytes the scored tokens stand for (loco/data/text_tokenizer.hpp), when every one is in
    // the tokenizer's vocabulary (shards of another tokenizer: no figure).
    const bool known = std::all_of(targets.begin(), targets.end(), [&](int32_t t) {
      return t >= 0 && t < tokenizer->vocab_size();
    });
    if (known) {
      const uint64_t bytes = tokenizer->count_bytes(targets.data(), targets.size());
      if (bytes > 0) {
        out["bytes_evaluated"] = bytes;
        out["bits_per_byte"] = bits_per_byte(loss, double(bytes) / double(targets.size()));
      }
    }
  }
  if (src.meta.contains("step")) out["step"] = src.meta["step"];

  if (!a.logits_out.empty()) {
    const size_t V = m.vocab_size;
    std::vector<float> logits(windows * T * V);
    double check_sum = 0.0;
    for (size_t start = 0; start < windows; start += a.batch_size) {
      const int B = static_cast<int>(std::min<size_t>(a.batch_size, windows - start));
      const std::vector<float> l = host_logits(m, src.params, inputs.data() + start * T, B, T);
      std::copy(l.begin(), l.end(), logits.begin() + static_cast<ptrdiff_t>(start * T * V));
      for (size_t r = 0; r < static_cast<size_t>(B) * T; ++r) {
        const float* row = l.data() + r * V;
        const double mx = *std::max_element(row, row + V);
        double se = 0.0;
        for (size_t i = 0; i < V; ++i) se += std::exp(double(row[i]) - mx);
        check_sum += mx + std::log(se) - row[targets[start * T + r]];
      }
    }
    const double check = check_sum / static_cast<double>(windows * T);
    out["logits_loss"] = check;
    // Same ops, different order of work: agreement to ~1e-5 relative on the CPU; bf16 on
    // CUDA is looser.
    const double tol = backend->activation_dtype() == DType::F32 ? 1e-4 : 5e-2;
    if (std::abs(check - loss) > tol * std::max(1.0, std::abs(loss)))
      throw Error("eval: internal mismatch: the loss of the written logits is " +
                  std::to_string(check) + " but the model's loss is " + std::to_string(loss));
    std::vector<int64_t> shape{static_cast<int64_t>(windows), T, static_cast<int64_t>(V)};
    write_safetensors(a.logits_out,
                      {{"logits", StorageDType::F32, shape, logits.data()},
                       {"input_ids", StorageDType::I32, {shape[0], shape[1]}, inputs.data()},
                       {"labels", StorageDType::I32, {shape[0], shape[1]}, targets.data()}},
                      {{"format", "pt"}, {"loss", std::to_string(loss)}, {"source", src.path}});
    out["logits"] = a.logits_out;
  }
  if (want_grads) {
    std::vector<float> grads(model.num_params());
    backend->download(grads.data(), model.grads());
    std::vector<SafetensorsEntry> entries;
    for (const auto& v : model.layout().views)
      entries.push_back({v.name, StorageDType::F32, v.shape, grads.data() + v.offset});
    write_safetensors(a.grads_out, entries,
                      {{"format", "pt"},
                       {"what", "gradient of the mean loss"},
                       {"loss", std::to_string(loss)},
                       {"source", src.path}});
    out["grads"] = a.grads_out;
  }
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace

IoCommand add_eval_command(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  auto* sub = app.add_subcommand(
      "eval",
      "Loss (and optionally logits and gradients) of a checkpoint's or HF directory's "
      "model on token shards, a token file or a text file; prints JSON");
  sub->add_option("source", args->source,
                  "Checkpoint file, step directory, run directory (latest checkpoint), or an HF "
                  "directory (config.json + model.safetensors)")
      ->required();
  sub->add_option("--data", args->data, "Token shard path or glob (llm.c format)");
  sub->add_option("--token-file", args->token_file,
                  "File of token ids (whitespace/comma separated, or a JSON array)");
  sub->add_option("--text", args->text,
                  "Text file, encoded with the model's tokenizer (the run's data.tokenizer, an "
                  "HF directory's tokenizer.model) or --tokenizer");
  sub->add_option("--tokenizer", args->tokenizer,
                  "byte or the path of a SentencePiece .model file (default: the model's)")
      ->type_name("byte|PATH");
  sub->add_option("--seq-len", args->seq_len,
                  "Tokens per window (default: the run's training.seq_len, HF: min(128, "
                  "max_position_embeddings), at most the number of tokens - 1)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--batch-size", args->batch_size, "Windows per forward pass (default 8)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-batches", args->max_batches, "Evaluate at most this many batches (0: all)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--backend", args->backend, "cpu (default), cuda or auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  sub->add_option("--tensor", args->tensor,
                  "Checkpoint tensor holding the weights (default: params)");
  sub->add_option("--logits", args->logits_out,
                  "Write logits (windows, seq_len, vocab) F32, input_ids and labels to this "
                  "safetensors file");
  sub->add_option("--grads", args->grads_out,
                  "Write the gradient of the mean loss for every parameter (HF names) to this "
                  "safetensors file");
  return IoCommand{sub, [args] { return run_eval(*args); }};
}

}  // namespace loco::cli
