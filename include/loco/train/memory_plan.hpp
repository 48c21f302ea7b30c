// How much memory a run will allocate, computed before allocating any of it, so that a
// config asking for more than the machine has (micro_batch = 1e8, a 100k-wide model) stops at
// once with a message naming the keys responsible, instead of a bare std::bad_alloc, a
// wrapped byte count or minutes of swapping.
//
// The sums mirror LlamaModel's buffers (parameters, gradients, activations for one B×T
// forward/backward), the inner optimizer's and the outer sync's state, and the trainer's
// host token buffers. Arithmetic saturates instead of wrapping: a plan that overflows 64 bits
// is reported as such.
#pragma once
#include <cstdint>
#include <string>

#include "loco/config/config.hpp"

namespace loco {

struct MemoryPlan {
  uint64_t parameters = 0;   // model parameters, F32
  uint64_t model_state = 0;  // parameters + gradients + optimizer and outer-sync state, bytes
  uint64_t activations = 0;  // one forward/backward of micro_batch × seq_len tokens, bytes
  uint64_t host_tokens = 0;  // the trainer's input/target buffers, bytes
  bool overflow = false;     // some product did not fit in 64 bits
  uint64_t total() const;    // saturating sum
};

// Activation bytes of LlamaModel for B×T tokens with `act_bytes`-byte activations.
MemoryPlan plan_model_memory(const ModelConfig& m, uint64_t B, uint64_t T, int act_bytes);
// Everything one rank of `config` allocates (replica_size ranks share each batch).
MemoryPlan plan_training_memory(const Config& config, int replica_size, int act_bytes);

// Physical memory of this machine (the smaller of RAM and a cgroup limit), bytes.
uint64_t usable_host_memory();

// Throws loco::Error when B·T does not fit the kernels' int indices or the plan does not fit
// in `available` bytes: `what` names the job ("this run", "eval"), `b_key`/`t_key` the config
// keys or options that set B and T (e.g. "training.micro_batch", "training.seq_len").
// `host_side` = false when the model lives in device memory (only host_tokens is checked).
void check_memory_plan(const std::string& what, const MemoryPlan& plan, const ModelConfig& m,
                       uint64_t B, uint64_t T, const std::string& b_key, const std::string& t_key,
                       bool host_side, uint64_t available);

std::string format_bytes(uint64_t bytes);  // "1.50 GiB"

}  // namespace loco
