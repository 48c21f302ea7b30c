// The training loop: data → model forward/backward (with accumulation) → gradient clipping →
// inner optimizer → periodic validation, with one progress line per step, metrics as JSON
// lines and a summary.json in the run directory.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "loco/config/config.hpp"

namespace loco {

struct TrainResult {
  int steps_done = 0;
  long long tokens = 0;
  double final_train_loss = 0.0;
  double final_val_loss = -1.0;  // < 0 when there is no validation data
  double wall_seconds = 0.0;
  bool stopped_early = false;
  nlohmann::json summary;
};

// Runs the job described by `config`, writing into `run_dir` (created by the caller).
TrainResult train(const Config& config, const std::string& run_dir);

}  // namespace loco
