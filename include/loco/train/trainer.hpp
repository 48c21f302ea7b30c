// The training loop: data → model forward/backward (with accumulation) → gradient clipping →
// inner optimizer → periodic validation, with one progress line per step, metrics as JSON
// lines and a summary.json in the run directory.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loco/config/config.hpp"
#include "loco/dist/communicator.hpp"

namespace loco {

struct Runtime;

struct TrainResult {
  int steps_done = 0;
  long long tokens = 0;
  double final_train_loss = 0.0;
  double final_val_loss = -1.0;  // < 0 when there is no validation data
  double wall_seconds = 0.0;
  bool stopped_early = false;
  std::vector<double> step_losses;  // mean over all ranks, one per step
  uint64_t params_hash = 0;         // of this rank's final parameters
  nlohmann::json summary;           // what summary.json holds ("comm" included)
};

// Runs the job described by `config` on every rank of `world` (each rank one worker; a
// 1-rank world is plain single-process training). Rank 0 prints progress and writes
// metrics.jsonl and summary.json into `run_dir` (created by the caller).
//
// Checkpoints (config.checkpoint.interval > 0): every `interval` steps, at the end and when a
// stop was requested, each rank writes its state (parameters, inner optimizer state and step
// count, outer-sync state, data position) to <root>/step-<N>/rank-<r>.bin; after a barrier
// rank 0 points <root>/latest at it and prunes old ones (checkpoint.keep_last).
// `resume` ("" = fresh start; else "latest", a run/step directory or a rank file, see
// resolve_resume) continues an interrupted run exactly from its checkpoint's step.
//
// The backend, its device and the communicators come from the composition root
// (loco/runtime/runtime.hpp); the first form builds them from `config` over `world`.
TrainResult train(const Config& config, const std::string& run_dir, Runtime& runtime,
                  const std::string& resume = "");
TrainResult train(const Config& config, const std::string& run_dir, Communicator& world,
                  const std::string& resume = "");

}  // namespace loco
