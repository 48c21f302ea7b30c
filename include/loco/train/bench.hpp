// `loco bench`: times full training steps of a config's model on random tokens (no data
// files needed) and reports step time, tokens/s, model FLOP/s and peak RSS.
//
// One timed step is exactly the trainer's inner step (src/train/trainer.cpp): zero grads →
// forward_backward over grad_accum micro-batches → global grad norm → optimizer step →
// params_changed, followed by backend.synchronize() before the clock is read, so the same
// command measures the CPU and the CUDA backend. --muon and --compression add the inner Muon
// step and the outer-sync compression (distributed.compression when the config compresses,
// else SparseLoCo's defaults: chunked top-64 of 64×64, 2-bit, error feedback) as separate
// figures, each also as a share of the training step.
#pragma once
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "loco/config/config.hpp"

namespace CLI {
class App;
}

namespace loco {

struct BenchOptions {
  int steps = 20;            // timed steps
  int warmup = 3;            // untimed steps first (allocation, page faults, thread pools)
  bool profile = false;      // also time every backend op (adds a sync per op on CUDA)
  bool quiet = false;        // no table on stdout
  double peak_tflops = 989;  // for MFU: dense bf16 peak of an H100/H200 SXM
  // Extras, timed after the training steps on the same model and backend:
  bool muon = false;         // one Muon step (momentum + batched Newton–Schulz) on the grads
  bool compression = false;  // the compression pipeline over the whole parameter buffer, and
                             // a device copy of the same bytes for scale
};

// The config's model, optimizer and batch on random tokens. Returns every figure as JSON
// (the same object `--json` writes).
nlohmann::json run_benchmark(const Config& config, const BenchOptions& options);

// Reads a JSON config and applies "--set" overrides like load_config, but does not require
// the data files to exist (a benchmark needs none).
Config load_bench_config(const std::string& path, const std::vector<std::string>& overrides);

// Registers the `bench` subcommand on `app`. After parsing, call run() when *sub was chosen.
struct BenchCommand {
  CLI::App* sub = nullptr;
  std::function<int()> run;
};
BenchCommand add_bench_command(CLI::App& app);

}  // namespace loco
