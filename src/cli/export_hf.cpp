// `loco export-hf SOURCE OUTDIR [--dtype f32|bf16]`: a checkpoint (file, step directory or
// run directory) or an HF directory → an HF directory (config.json + model.safetensors) that
// transformers' LlamaForCausalLM.from_pretrained() loads, plus the tokenizer files when the
// model was trained with a SentencePiece tokenizer (loco/io/hf_tokenizer.hpp).
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>

#include "io_commands.hpp"
#include "loco/data/text_tokenizer.hpp"
#include "loco/io/hf.hpp"
#include "loco/io/hf_tokenizer.hpp"
#include "loco/io/model_source.hpp"

namespace loco::cli {

namespace {

struct ExportArgs {
  std::string source, out_dir, dtype = "f32", tensor = "params";
};

int run_export(const ExportArgs& a) {
  const ModelSource src = load_model_source(a.source, a.tensor);
  const StorageDType dtype = a.dtype == "bf16" ? StorageDType::BF16 : StorageDType::F32;
  std::map<std::string, std::string> meta{{"loco.source", src.path},
                                          {"loco.source_kind", src.kind}};
  if (src.meta.contains("step") && src.meta["step"].is_number_integer())
    meta["loco.step"] = std::to_string(src.meta["step"].get<int64_t>());
  // The tokenizer is checked before anything is written.
  std::optional<TextTokenizer> tokenizer;
  if (!src.tokenizer.empty()) tokenizer = TextTokenizer::from_spec(src.tokenizer);
  export_hf_directory(a.out_dir, src.model, src.params.data(), dtype, meta);
  const bool wrote_tokenizer = tokenizer && write_hf_tokenizer(a.out_dir, *tokenizer, src.model);
  spdlog::info(
      "exported {} parameters ({}) from {} to {}/ (config.json, model.safetensors{})",
      src.params.size(), a.dtype, src.path, a.out_dir,
      wrote_tokenizer ? ", tokenizer.model, tokenizer_config.json, special_tokens_map.json" : "");
  if (!wrote_tokenizer)
    spdlog::info("no tokenizer written: {}",
                 tokenizer ? "byte-level model (token id = byte value; no Hugging Face class "
                             "maps bytes to ids 0..255)"
                           : "the source does not say which tokenizer it was trained with");
  return 0;
}

}  // namespace

IoCommand add_export_hf_command(CLI::App& app) {
  auto args = std::make_shared<ExportArgs>();
  auto* sub =
      app.add_subcommand("export-hf",
                         "Export a checkpoint's model as a Hugging Face LlamaForCausalLM directory "
                         "(config.json + model.safetensors)");
  sub->add_option("source", args->source,
                  "Checkpoint file, step directory, run directory (latest checkpoint), or an HF "
                  "directory")
      ->required();
  sub->add_option("out_dir", args->out_dir, "Output directory (created if needed)")->required();
  sub->add_option("--dtype", args->dtype,
                  "Tensor dtype: f32 (bit-exact) or bf16 (rounded to "
                  "nearest even)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  sub->add_option("--tensor", args->tensor,
                  "Checkpoint tensor holding the weights (default: params)");
  return IoCommand{sub, [args] { return run_export(*args); }};
}

}  // namespace loco::cli
