// `loco bench CONFIG [--set k=v …] [--steps N] [--warmup N] [--json FILE] [--profile]`
#include "loco/train/bench.hpp"

#include <cblas.h>
#include <omp.h>
#include <sys/resource.h>
#include <time.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>

#include "loco/backend/backend.hpp"
#include "loco/compress/device_compressor.hpp"
#include "loco/core/error.hpp"
#include "loco/core/files.hpp"
#include "loco/core/hash.hpp"
#include "loco/core/rng.hpp"
#include "loco/model/llama.hpp"
#include "loco/model/param_layout.hpp"
#include "loco/ops/cpu_isa.hpp"
#include "loco/optim/optimizer.hpp"
#include "loco/train/train_step.hpp"

namespace loco {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// The per-op table of `--profile`: Backend's timing hook (Backend::set_op_timer) adds up the
// wall and CPU time of each op, synchronised around it; matmuls are keyed by shape.
class OpTable final : public Backend::OpTimer {
 public:
  struct Entry {
    double seconds = 0;      // wall
    double cpu_seconds = 0;  // process CPU time (all threads)
    long long calls = 0;
  };
  void record(const std::string& op, double wall_seconds, double cpu_seconds) override {
    Entry& e = entries_[op];
    e.seconds += wall_seconds;
    e.cpu_seconds += cpu_seconds;
    ++e.calls;
  }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  void reset() { entries_.clear(); }

 private:
  std::map<std::string, Entry> entries_;
};

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double peak_rss_mib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux: KiB
}

std::string group_digits(long long x) {
  std::string s = std::to_string(x), out;
  const int lead = static_cast<int>(s.size()) % 3;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0 && (static_cast<int>(i) - lead) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

// Median wall time of `repeats` calls of f, each synchronised, after one untimed call.
template <typename F>
double median_seconds(Backend& backend, int repeats, F&& f) {
  f();
  backend.synchronize();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    f();
    backend.synchronize();
    t.push_back(seconds_between(t0, Clock::now()));
  }
  return median_of(t);
}

// One Muon step (every Matrix view: momentum + batched Newton–Schulz; AdamW for the rest)
// on the model's current gradients, as a share of the training step.
json time_muon_step(const Config& config, LlamaModel& model, Backend& backend, double step_s) {
  OptimizerConfig oc = config.optimizer;
  oc.type = "muon";
  auto muon = make_inner_optimizer(oc, model.layout(), backend);
  int matrices = 0;
  for (const auto& v : model.layout().views) matrices += v.kind == ParamKind::Matrix;
  const double s =
      median_seconds(backend, 5, [&] { muon->step(model.params(), model.grads(), oc.lr, 1.0f); });
  return {{"ms", 1e3 * s},
          {"matrices", matrices},
          {"share_of_step", s / step_s},
          {"newton_schulz_dtype", dtype_name(backend.activation_dtype())},
          {"ns_steps", oc.ns_steps}};
}

// The compression pipeline over the whole parameter buffer (the gradients stand in for a
// pseudo-gradient), against a device-to-device copy of the same bytes.
json time_compression(const Config& config, LlamaModel& model, Backend& backend, double step_s) {
  compress::Settings st;
  if (config.distributed.compression.compressed()) {
    st = compress::settings_from_config(config.distributed.compression);
  } else {  // SparseLoCo's defaults
    st.selector = compress::Selector::ChunkedTopK;
    st.quantizer = compress::Quantizer::Q2;
    st.error_feedback = true;
    st.beta = 0.95f;
  }
  compress::DeviceCompressor compressor(
      compress::make_plan(compress::shapes_from_layout(model.layout()), st), backend);
  Buf delta = model.grads();
  size_t payload = 0;
  uint64_t step = 0;
  const double s =
      median_seconds(backend, 5, [&] { payload = compressor.compress(delta, step++).size(); });
  // One more call with a synchronisation at every phase boundary, for the phase split.
  compressor.set_phase_timing(true);
  compressor.compress(delta, step++);
  const compress::DeviceCompressor::Timings phases = compressor.timings();
  Buf copy = backend.alloc(delta.numel, DType::F32);
  const double copy_s = median_seconds(backend, 5, [&] { backend.copy(copy, delta); });
  backend.release(copy);
  return {{"ms", 1e3 * s},
          {"elements", delta.numel},
          {"selector", compress::selector_name(st.selector)},
          {"quantizer", compress::quantizer_name(st.quantizer)},
          {"rules", compress::rules_name(st.rules)},
          {"error_feedback", st.error_feedback},
          {"topk", st.topk},
          {"chunk", st.chunk},
          {"kept", compressor.stats().kept},
          {"payload_bytes", payload},
          {"copy_ms", 1e3 * copy_s},
          {"ratio_to_copy", copy_s > 0 ? s / copy_s : 0.0},
          {"phases_ms",
           {{"select", 1e3 * phases.select_s},
            {"gather", 1e3 * phases.gather_s},
            {"quantize", 1e3 * phases.quantize_s},
            {"ef_update", 1e3 * phases.ef_update_s},
            {"pack", 1e3 * phases.pack_s}}},
          {"share_of_step", s / step_s}};
}

}  // namespace

Config load_bench_config(const std::string& path, const std::vector<std::string>& overrides) {
  json j;
  try {
    j = json::parse(read_file(path), nullptr, /*allow_exceptions=*/true,
                    /*ignore_comments=*/true);
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
  for (const auto& o : overrides) apply_override(j, o);
  // config_from_json validates every key and value; unlike load_config it does not resolve
  // data.train / data.val, so a benchmark runs on a checkout without the corpus.
  return config_from_json(j, path);
}

json run_benchmark(const Config& config, const BenchOptions& options) {
  LOCO_CHECK(options.steps > 0, "bench: --steps must be positive");
  LOCO_CHECK(options.warmup >= 0, "bench: --warmup must not be negative");
  const auto& mc = config.model;
  const auto& tc = config.training;
  const int B = tc.micro_batch, T = tc.seq_len, accum = tc.grad_accum;

  auto device = make_backend(config.backend);
  Backend& backend = *device;
  std::unique_ptr<OpTable> timed;
  if (options.profile) {
    timed = std::make_unique<OpTable>();
    backend.set_op_timer(timed.get());
  }

  LlamaModel model(mc, backend);
  model.init_weights(tc.seed);
  auto optimizer = make_inner_optimizer(config.optimizer, model.layout(), backend);

  // grad_accum distinct micro-batches of uniform random tokens, made once, back to back.
  Rng rng(tc.seed ^ 0x62656e6368ULL);
  const size_t n_tok = static_cast<size_t>(B) * T;
  std::vector<int32_t> inputs(n_tok * static_cast<size_t>(accum)), targets(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    inputs[i] = static_cast<int32_t>(rng.below(static_cast<uint64_t>(mc.vocab_size)));
    targets[i] = static_cast<int32_t>(rng.below(static_cast<uint64_t>(mc.vocab_size)));
  }
  // The trainer's inner step, in the mode LOCO_STEP asks for (host, device or graph).
  TrainStep inner_step(
      model, *optimizer,
      TrainStep::Options{B, T, accum, config.optimizer.grad_clip, TrainStep::mode_from_env()});

  // Phases are timed (with a sync at each boundary) only when profiling.
  std::map<std::string, double> phases;
  auto phase = [&](const char* name, Clock::time_point& t) {
    if (!options.profile) return;
    backend.synchronize();
    const auto now = Clock::now();
    phases[name] += seconds_between(t, now);
    t = now;
  };
  double last_loss = 0.0;
  auto run_step = [&]() {
    auto t = Clock::now();
    // The schedule's value does not change the work; the peak lr keeps the steps comparable.
    inner_step.start(inputs.data(), targets.data(), config.optimizer.lr);
    phase("step (zero, forward_backward, clip, update)", t);
    last_loss = inner_step.finish().loss;
    phase("finish (read the statistics)", t);
    model.params_changed();
    backend.synchronize();
    phase("params_changed", t);
  };

  for (int s = 0; s < options.warmup; ++s) run_step();
  if (timed) timed->reset();
  phases.clear();
  std::vector<double> step_s;
  step_s.reserve(options.steps);
  backend.synchronize();
  const double cpu0 = process_cpu_seconds();
  for (int s = 0; s < options.steps; ++s) {
    const auto t0 = Clock::now();
    run_step();
    step_s.push_back(seconds_between(t0, Clock::now()));  // run_step ends synchronised
  }

  const double cpu_per_step = (process_cpu_seconds() - cpu0) / options.steps;
  // A fingerprint of the parameters after every step: equal across thread counts (and runs)
  // when the backend is deterministic.
  std::vector<float> host_params(model.num_params());
  backend.download(host_params.data(), model.params());
  const uint64_t params_hash = hash_bytes(host_params.data(), host_params.size() * sizeof(float));
  char hash_hex[17];
  std::snprintf(hash_hex, sizeof hash_hex, "%016llx", static_cast<unsigned long long>(params_hash));
  const double median = median_of(step_s);
  const double mean = std::accumulate(step_s.begin(), step_s.end(), 0.0) / step_s.size();
  double var = 0;
  for (double x : step_s) var += (x - mean) * (x - mean);
  const double stddev = step_s.size() > 1 ? std::sqrt(var / (step_s.size() - 1)) : 0.0;
  const long long tokens_per_step = static_cast<long long>(n_tok) * accum;
  const long long n_params = static_cast<long long>(model.num_params());
  // Model FLOPs per token (Kaplan / PaLM): 6·N for the parameter matmuls forward+backward
  // (N = every parameter, embeddings and LM head included) + 12·L·d·T for the attention
  // score and value products (counted as full, not causal, T×T matrices).
  const double flops_per_token = 6.0 * static_cast<double>(n_params) +
                                 12.0 * mc.n_layers * static_cast<double>(mc.d_model) * T;

  json r = {{"impl", "loco"},
            {"name", config.name},
            {"backend", device->name()},
            {"omp_threads", omp_get_max_threads()},
            {"cpu_isa", ops::cpu_isa_name(ops::cpu_isa())},
            {"blas_threads", openblas_get_num_threads()},
            {"model",
             {{"vocab_size", mc.vocab_size},
              {"d_model", mc.d_model},
              {"n_layers", mc.n_layers},
              {"n_heads", mc.n_heads},
              {"n_kv_heads", mc.n_kv_heads},
              {"d_ff", mc.d_ff},
              {"tie_embeddings", mc.tie_embeddings}}},
            {"optimizer", config.optimizer.type},
            {"step_mode", TrainStep::mode_name(inner_step.mode())},
            {"step_graph", inner_step.graph_captured()},
            {"micro_batch", B},
            {"seq_len", T},
            {"grad_accum", accum},
            {"parameters", n_params},
            {"steps", options.steps},
            {"warmup", options.warmup},
            {"tokens_per_step", tokens_per_step},
            {"step_seconds", step_s},
            {"step_median_s", median},
            {"step_mean_s", mean},
            {"step_stddev_s", stddev},
            {"step_min_s", *std::min_element(step_s.begin(), step_s.end())},
            {"step_max_s", *std::max_element(step_s.begin(), step_s.end())},
            {"tokens_per_s", tokens_per_step / median},
            {"cpu_seconds_per_step", cpu_per_step},
            {"flops_per_token", flops_per_token},
            {"flops_formula", "6*N + 12*L*d_model*seq_len, N = all parameters"},
            {"model_flops_per_s", flops_per_token * tokens_per_step / median},
            {"peak_rss_mib", peak_rss_mib()},
            {"peak_device_mem_gib", device->peak_memory_bytes() > 0
                                        ? json(double(device->peak_memory_bytes()) / (1 << 30))
                                        : json(nullptr)},
            {"peak_tflops", options.peak_tflops},
            {"mfu", flops_per_token * tokens_per_step / median / (options.peak_tflops * 1e12)},
            {"final_loss", last_loss},
            {"params_hash", hash_hex}};

  // Extras run un-profiled: they are single figures, not op tables.
  backend.set_op_timer(nullptr);
  if (options.muon) r["muon"] = time_muon_step(config, model, *device, median);
  if (options.compression) r["compression"] = time_compression(config, model, *device, median);

  std::vector<std::pair<std::string, OpTable::Entry>> ops;
  if (timed) {
    ops.assign(timed->entries().begin(), timed->entries().end());
    std::sort(ops.begin(), ops.end(),
              [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
    json jops = json::array();
    for (const auto& [name, e] : ops)
      jops.push_back({{"op", name},
                      {"ms_per_step", 1e3 * e.seconds / options.steps},
                      {"cpu_ms_per_step", 1e3 * e.cpu_seconds / options.steps},
                      {"calls_per_step", static_cast<double>(e.calls) / options.steps}});
    r["profile_ops"] = jops;
    json jph = json::object();
    for (const auto& [name, s] : phases) jph[name] = 1e3 * s / options.steps;
    r["profile_phases_ms_per_step"] = jph;
  }

  if (!options.quiet) {
    std::printf(
        "loco bench: %s | backend %s | %s parameters | B=%d T=%d accum=%d | %d OpenMP "
        "thread(s), %d BLAS thread(s), %s kernels\n",
        config.name.c_str(), device->name().c_str(), group_digits(n_params).c_str(), B, T, accum,
        omp_get_max_threads(), openblas_get_num_threads(), ops::cpu_isa_name(ops::cpu_isa()));
    std::printf("  %-14s %d warm-up + %d timed steps of %s tokens (LOCO_STEP: %s%s)\n", "steps",
                options.warmup, options.steps, group_digits(tokens_per_step).c_str(),
                TrainStep::mode_name(inner_step.mode()),
                inner_step.graph_captured() ? ", graph replayed" : "");
    std::printf("  %-14s median %.2f ms | mean %.2f ms | min %.2f ms | max %.2f ms | sd %.2f ms\n",
                "step time", median * 1e3, mean * 1e3, r["step_min_s"].get<double>() * 1e3,
                r["step_max_s"].get<double>() * 1e3, stddev * 1e3);
    std::printf("  %-14s %.0f (median step)\n", "tokens/s", tokens_per_step / median);
    std::printf("  %-14s %.2f ms per step (process user+sys, all threads)\n", "CPU time",
                cpu_per_step * 1e3);
    std::printf("  %-14s %.2f GFLOP/s (6·N + 12·L·d·T = %.4g FLOP/token, N = all parameters)\n",
                "model FLOP/s", flops_per_token * tokens_per_step / median / 1e9, flops_per_token);
    if (device->name() == "cuda")  // a CPU against an H100 peak says nothing
      std::printf("  %-14s %.1f%% of %.0f TFLOP/s (--peak-tflops)\n", "MFU",
                  100 * r["mfu"].get<double>(), options.peak_tflops);
    std::printf("  %-14s %.1f MiB\n", "peak RSS", peak_rss_mib());
    if (device->peak_memory_bytes() > 0)
      std::printf("  %-14s %.2f GiB allocated at the high-water mark\n", "device memory",
                  r["peak_device_mem_gib"].get<double>());
    std::printf("  %-14s %.9g (parameter hash %s)\n", "last loss", last_loss, hash_hex);
    if (r.contains("muon")) {
      const json& m = r["muon"];
      std::printf(
          "  %-14s %.2f ms = %.1f%% of a step (%d matrices, Newton–Schulz %d steps in "
          "%s, batched by shape)\n",
          "muon step", m["ms"].get<double>(), 100 * m["share_of_step"].get<double>(),
          m["matrices"].get<int>(), m["ns_steps"].get<int>(),
          m["newton_schulz_dtype"].get<std::string>().c_str());
    }
    if (r.contains("compression")) {
      const json& c = r["compression"];
      std::printf(
          "  %-14s %.2f ms = %.1f× a device copy of the same bytes (%.3f ms), %.1f%% "
          "of a step: %s values, %s %lld/%lld², %s, EF %s -> %s bytes\n",
          "compression", c["ms"].get<double>(), c["ratio_to_copy"].get<double>(),
          c["copy_ms"].get<double>(), 100 * c["share_of_step"].get<double>(),
          group_digits(c["elements"].get<long long>()).c_str(),
          c["selector"].get<std::string>().c_str(), c["topk"].get<long long>(),
          c["chunk"].get<long long>(), c["quantizer"].get<std::string>().c_str(),
          c["error_feedback"].get<bool>() ? "on" : "off",
          group_digits(c["payload_bytes"].get<long long>()).c_str());
      const json& p = c["phases_ms"];
      std::printf(
          "  %-14s phases (synchronised): select %.2f | gather %.2f | quantise %.2f | "
          "EF update %.2f | pack + download + checksum %.2f ms\n",
          "", p["select"].get<double>(), p["gather"].get<double>(), p["quantize"].get<double>(),
          p["ef_update"].get<double>(), p["pack"].get<double>());
    }
    if (timed) {
      std::printf("\n  per step (synchronised around every op; totals differ from above)\n");
      for (const auto& [name, s] : phases)
        std::printf("  %-34s %9.3f ms\n", name.c_str(), 1e3 * s / options.steps);
      double total = 0;
      for (const auto& op : ops) total += op.second.seconds;
      std::printf("\n  %-34s %9s %7s %9s %6s\n", "op", "ms/step", "share", "cpu ms", "calls");
      for (const auto& [name, e] : ops)
        std::printf("  %-34s %9.3f %6.1f%% %9.3f %6.0f\n", name.c_str(),
                    1e3 * e.seconds / options.steps, 100.0 * e.seconds / total,
                    1e3 * e.cpu_seconds / options.steps,
                    static_cast<double>(e.calls) / options.steps);
    }
    std::fflush(stdout);
  }
  return r;
}

BenchCommand add_bench_command(CLI::App& app) {
  struct Args {
    std::string config_path, json_path;
    std::vector<std::string> overrides;
    BenchOptions options;
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "bench",
      "Time full training steps (zero grads, forward+backward over grad_accum micro-batches, "
      "grad norm, optimizer step) on random tokens; no data files needed");
  sub->add_option("config", args->config_path, "Path to the JSON config")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--set", args->overrides,
                  "Override a config key by its dotted path, e.g. --set training.micro_batch=8 "
                  "(repeatable)")
      ->type_name("KEY=VALUE");
  sub->add_option("--steps", args->options.steps, "Timed steps")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--warmup", args->options.warmup, "Untimed steps first")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--json", args->json_path, "Also write the figures to this JSON file");
  sub->add_flag("--profile", args->options.profile,
                "Also time every backend op and step phase (synchronises after each op)");
  sub->add_option("--peak-tflops", args->options.peak_tflops,
                  "Peak dense bf16 TFLOP/s for the MFU figure (989: H100/H200 SXM)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_flag("--muon", args->options.muon,
                "Also time one Muon step (momentum + batched Newton–Schulz) on the model");
  sub->add_flag("--compression", args->options.compression,
                "Also time the outer-sync compression of the whole parameter buffer "
                "(distributed.compression, else chunked top-64/4096 + 2-bit + EF) against a "
                "device copy");
  BenchCommand cmd;
  cmd.sub = sub;
  cmd.run = [args]() {
    const Config config = load_bench_config(args->config_path, args->overrides);
    const json r = run_benchmark(config, args->options);
    if (!args->json_path.empty()) write_file_atomic(args->json_path, r.dump(2) + "\n");
    return 0;
  };
  return cmd;
}

}  // namespace loco
