// The tiny training job the MPI tests start from, and helpers they share.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

namespace loco::testing {

// The source tree (for the bundled corpus): $LOCO_SOURCE_DIR, else the configured one.
inline std::string source_dir() {
  if (const char* env = std::getenv("LOCO_SOURCE_DIR"); env && *env) return env;
  return LOCO_SOURCE_DIR;
}

// Ring all-reduce bytes per rank, computed here: 2(K−1)/K·S rounded to the nearest byte.
inline uint64_t ring_ar(uint64_t S, int K) {
  return static_cast<uint64_t>(std::llround(2.0 * (K - 1) * static_cast<double>(S) / K));
}

struct TinyJob {
  std::string name = "mpi-test";
  int steps = 6;
  int micro_batch = 2;
  int seq_len = 32;
  int eval_batches = 2;
  double timeout_s = 120.0;
};

// A 2-layer, d_model 32 Llama on the bundled KJV shards: AdamW with clipping, cosine with 2
// warmup steps, DDP with replica size 1. Callers patch the JSON before it is validated.
inline nlohmann::json tiny_job_json(const TinyJob& job) {
  const std::string src = source_dir();
  return nlohmann::json{
      {"name", job.name},
      {"backend", "cpu"},
      {"model",
       {{"vocab_size", 256},
        {"d_model", 32},
        {"n_layers", 2},
        {"n_heads", 2},
        {"n_kv_heads", 1},
        {"d_ff", 64},
        {"max_seq_len", job.seq_len}}},
      {"data", {{"train", src + "/data/kjv-train.bin"}, {"val", src + "/data/kjv-val.bin"}}},
      {"optimizer", {{"type", "adamw"}, {"lr", 3e-3}, {"weight_decay", 0.1}, {"grad_clip", 1.0}}},
      {"schedule", {{"type", "cosine"}, {"warmup_steps", 2}}},
      {"training",
       {{"steps", job.steps},
        {"micro_batch", job.micro_batch},
        {"grad_accum", 1},
        {"seq_len", job.seq_len},
        {"eval_interval", 0},
        {"eval_batches", job.eval_batches},
        {"log_interval", 1000},
        {"seed", 77}}},
      {"distributed", {{"method", "ddp"}, {"replica_size", 1}, {"timeout_s", job.timeout_s}}}};
}

// DiLoCo with the given outer settings on top of a tiny job.
inline nlohmann::json tiny_diloco_json(const TinyJob& job, nlohmann::json outer) {
  nlohmann::json j = tiny_job_json(job);
  j["distributed"]["method"] = "diloco";
  j["distributed"]["outer"] = std::move(outer);
  return j;
}

}  // namespace loco::testing
