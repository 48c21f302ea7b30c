// The training loop: data → model forward/backward (with accumulation) → gradient clipping →
// inner optimizer → periodic validation, with one progress line per step, metrics as JSON
// lines and a summary.json in the run directory.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loco/comm/communicator.hpp"
#include "loco/config/config.hpp"
#include "loco/train/run_dir.hpp"

namespace loco {

struct Runtime;

struct TrainResult {
  int steps_done = 0;
  long long tokens = 0;
  double final_train_loss = 0.0;  // at the last step, mean over the replicas
  double final_val_loss = -1.0;   // < 0 when there is no validation data
  double wall_seconds = 0.0;
  bool stopped_early = false;
  bool nothing_to_do = false;  // resumed from a checkpoint at training.steps: nothing ran
  int skipped_steps = 0;       // updates dropped for a non-finite gradient (nan_policy skip)
  bool finite = true;          // the final loss and parameters are finite
  // One per step: the mean over this rank's replica (over every rank with DDP).
  std::vector<double> step_losses;
  // One per sync point (each outer sync, and checkpoints with several replicas): the mean over
  // every rank of its replica's loss at that step.
  std::vector<double> sync_mean_losses;
  uint64_t params_hash = 0;  // of this rank's final parameters
  nlohmann::json summary;    // what summary.json holds ("comm" included)
};

// Runs the job described by `config` on every rank of `world` (each rank one worker; a
// 1-rank world is plain single-process training). Rank 0 claims `run_dir` first (see
// loco/train/run_dir.hpp: a lock, and a fresh start into a directory holding a run is
// refused unless `existing` is Overwrite), and writes nothing into it before every rank has
// passed its start-up checks; then config.json, metrics.jsonl and summary.json.
//
// Checkpoints (config.checkpoint.interval > 0): every `interval` steps, at the end and when a
// stop was requested, each rank writes its state (parameters, inner optimizer state and step
// count, outer-sync state, data position) to <root>/step-<N>/rank-<r>.bin; after a barrier
// rank 0 points <root>/latest at it and prunes old ones (checkpoint.keep_last).
// `resume` ("" = fresh start; else "latest", a run/step directory or a rank file, see
// resolve_resume) continues an interrupted run exactly from its checkpoint's step: records of
// metrics.jsonl past that step are dropped and a {"resume": ...} record is written. Other
// training data or seq_len than the checkpoint's is refused unless data.on_resume_change is
// "restart". A checkpoint at training.steps means there is nothing to do: nothing is written
// and the result says so (nothing_to_do).
//
// The backend, its device and the communicators come from the composition root
// (loco/runtime/runtime.hpp); the first form builds them from `config` over `world`.
TrainResult train(const Config& config, const std::string& run_dir, Runtime& runtime,
                  const std::string& resume = "", ExistingRun existing = ExistingRun::Refuse);
TrainResult train(const Config& config, const std::string& run_dir, Communicator& world,
                  const std::string& resume = "", ExistingRun existing = ExistingRun::Refuse);

}  // namespace loco
