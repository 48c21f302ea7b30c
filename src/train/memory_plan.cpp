#include "loco/train/memory_plan.hpp"

#include <unistd.h>

#include <climits>
#include <cstdio>
#include <fstream>
#include <string>

#include "loco/core/error.hpp"
#include "loco/io/hf.hpp"

namespace loco {

namespace {

// Saturating arithmetic: a result that does not fit sets `overflow` and stays at the maximum.
struct Sat {
  bool overflow = false;
  uint64_t mul(uint64_t a, uint64_t b) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) {
      overflow = true;
      return UINT64_MAX;
    }
    return r;
  }
  uint64_t mul(uint64_t a, uint64_t b, uint64_t c) { return mul(mul(a, b), c); }
  uint64_t add(uint64_t a, uint64_t b) {
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) {
      overflow = true;
      return UINT64_MAX;
    }
    return r;
  }
};

uint64_t u(int x) { return x > 0 ? static_cast<uint64_t>(x) : 0; }

}  // namespace

uint64_t MemoryPlan::total() const {
  Sat s;
  return s.add(s.add(model_state, activations), host_tokens);
}

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int i = 0;
  while (v >= 1024.0 && i < 6) v /= 1024.0, ++i;
  char buf[32];
  std::snprintf(buf, sizeof buf, i == 0 ? "%.0f %s" : "%.2f %s", v, units[i]);
  return buf;
}

MemoryPlan plan_model_memory(const ModelConfig& m, uint64_t B, uint64_t T, int act_bytes) {
  MemoryPlan p;
  Sat s;
  try {
    p.parameters = llama_param_count(m);
  } catch (const Error&) {
    p.overflow = true;
    p.parameters = UINT64_MAX;
  }
  // Parameters and gradients (F32), plus a compute copy when activations are not F32.
  p.model_state = s.mul(p.parameters, act_bytes == 4 ? 8 : 8 + static_cast<uint64_t>(act_bytes));

  const uint64_t N = s.mul(B, T), C = u(m.d_model), F = u(m.d_ff), V = u(m.vocab_size),
                 L = u(m.n_layers), NH = u(m.n_heads);
  const uint64_t QD = s.mul(NH, u(m.head_dim())), KVD = s.mul(u(m.n_kv_heads), u(m.head_dim()));
  // Elements in the activation dtype, per token: each layer keeps ln1, ln2, mid and its input
  // (C each), q and the attention output (QD), k and v (KVD), gate, up and hidden (F); then
  // the final stream, final norm, projection scratch and two backward (C) buffers, the logits
  // (V), and the backward scratch for one layer (2 QD, 2 KVD, 3 F).
  uint64_t per_layer = s.add(s.add(s.mul(4, C), s.mul(2, QD)), s.add(s.mul(2, KVD), s.mul(3, F)));
  uint64_t per_token = s.add(s.mul(L, per_layer), s.add(s.mul(5, C), V));
  per_token = s.add(per_token, s.add(s.add(s.mul(2, QD), s.mul(2, KVD)), s.mul(3, F)));
  const uint64_t act = s.mul(N, per_token, u(act_bytes));
  // F32 statistics: two RMSNorm rstd per layer, the attention log-sum-exp (NH per token per
  // layer), the final rstd and the per-token losses; I32 inputs and targets.
  const uint64_t f32 = s.mul(s.add(s.mul(L, s.add(2, NH)), 2), N, 4);
  const uint64_t i32 = s.mul(2, N, 4);
  p.activations = s.add(act, s.add(f32, i32));
  p.overflow = p.overflow || s.overflow;
  return p;
}

MemoryPlan plan_training_memory(const Config& c, int replica_size, int act_bytes) {
  const auto& t = c.training;
  MemoryPlan p = plan_model_memory(c.model, u(t.micro_batch), u(t.seq_len), act_bytes);
  Sat s;
  // Optimizer state: AdamW keeps two moments; Muon a momentum for the matrices and AdamW's
  // two moments for the rest (at most two per parameter); SGD none.
  const uint64_t opt_copies = c.optimizer.type == "sgd" ? 0 : 2;
  // DiLoCo: the global parameters and the outer momentum, and the error-feedback buffer.
  uint64_t outer_copies = 0;
  if (c.distributed.method == "diloco")
    outer_copies = 2 + (c.distributed.compression.error_feedback ? 1 : 0);
  // One more host copy of the parameters at a time (initialisation, checkpoint download).
  const uint64_t copies = opt_copies + outer_copies + 1;
  p.model_state = s.add(p.model_state, s.mul(p.parameters, copies, 4));
  // Inputs and targets for the replica's whole batch (int32).
  p.host_tokens = s.mul(s.mul(u(replica_size), u(t.micro_batch)), s.mul(u(t.seq_len), 2 * 4));
  p.overflow = p.overflow || s.overflow;
  return p;
}

uint64_t usable_host_memory() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  uint64_t bytes = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * page : UINT64_MAX;
  // A container's cgroup (v2) limit, when there is one and it is lower.
  std::ifstream in("/sys/fs/cgroup/memory.max");
  std::string limit;
  if (in >> limit && limit != "max") {
    try {
      const uint64_t l = std::stoull(limit);
      if (l > 0 && l < bytes) bytes = l;
    } catch (...) {
    }
  }
  return bytes;
}

void check_memory_plan(const std::string& what, const MemoryPlan& p, const ModelConfig& m,
                       uint64_t B, uint64_t T, const std::string& b_key, const std::string& t_key,
                       bool host_side, uint64_t available) {
  const std::string bt =
      b_key + " = " + std::to_string(B) + " × " + t_key + " = " + std::to_string(T);
  const std::string lower =
      "lower " + b_key +
      (b_key.rfind("training.", 0) == 0 ? " (training.grad_accum keeps the batch size)"
                                        : std::string()) +
      " or " + t_key;
  Sat s;
  const uint64_t N = s.mul(B, T);
  if (s.overflow || N > static_cast<uint64_t>(INT_MAX))
    throw Error(what + ": " + bt +
                (s.overflow ? " tokens per forward pass overflows"
                            : " = " + std::to_string(N) + " tokens per forward pass") +
                ": more than the " + std::to_string(INT_MAX) + " the kernels can index; " + lower);
  const uint64_t needed = host_side ? p.total() : p.host_tokens;
  if (!p.overflow && needed <= available) return;
  const std::string model_keys = "model.n_layers = " + std::to_string(m.n_layers) +
                                 ", model.d_model = " + std::to_string(m.d_model) +
                                 ", model.d_ff = " + std::to_string(m.d_ff) +
                                 ", model.vocab_size = " + std::to_string(m.vocab_size);
  std::string msg =
      what + (p.overflow ? ": the memory needed does not fit in 64 bits"
                         : " needs about " + format_bytes(needed) + " of host memory, more " +
                               "than the " + format_bytes(available) + " this machine has");
  if (host_side)
    msg += ": activations " + format_bytes(p.activations) + " for " + bt + " tokens (" +
           model_keys + "), parameters, gradients and optimizer state " +
           format_bytes(p.model_state) + " for " + std::to_string(p.parameters) +
           " parameters, token buffers " + format_bytes(p.host_tokens);
  else
    msg += ": token buffers " + format_bytes(p.host_tokens) + " for " + bt;
  throw Error(msg + "; " + lower + ", or shrink the model");
}

}  // namespace loco
