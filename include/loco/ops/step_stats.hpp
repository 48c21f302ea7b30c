// The statistics of one training step kept in backend memory, so that a step can run without
// the host reading anything until it ends (Backend::accumulate_loss, clip_grad_norm,
// adamw_multi; loco/train/train_step.hpp). An I32 buffer of kStepStatsWords words:
//
//   words [0, 2)  loss: Σ over micro-batches of that micro-batch's mean loss (f64)
//         [2, 4)  Σ g² over the gradient buffer (f64), once clip_grad_norm has run
//         4       clip scale (f32 bits): max_norm / ‖g‖ when max_norm > 0 and ‖g‖ > max_norm,
//                 else 1 — the factor the update multiplies the gradient by
//         5       1 when ‖g‖ is not finite (the update is then skipped), else 0
//         6, 7    reserved (0)
//
// Zeroed at the start of a step. The CPU reference of the two reductions is below; the CUDA
// kernels (kernels/step_stats.cu) must give the same clip scale and flag for the same Σ g².
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace loco::ops {

inline constexpr int kStepStatsWords = 8;

struct StepStats {
  double loss_sum = 0.0;
  double grad_sum_squares = 0.0;
  float clip_scale = 1.0f;
  bool non_finite = false;
};

inline StepStats read_step_stats(const int32_t* words) {
  StepStats s;
  std::memcpy(&s.loss_sum, words, 8);
  std::memcpy(&s.grad_sum_squares, words + 2, 8);
  std::memcpy(&s.clip_scale, words + 4, 4);
  s.non_finite = words[5] != 0;
  return s;
}

// stats.loss += (Σ_n losses[n]) / n, the sum sequential in double (what the host did when it
// read the losses back).
inline void accumulate_loss(int32_t* stats, const float* losses, size_t n) {
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += losses[i];
  double loss = 0.0;
  std::memcpy(&loss, stats, 8);
  loss += n > 0 ? sum / double(n) : 0.0;
  std::memcpy(stats, &loss, 8);
}

// Given Σ g² (already in the stats): the clip scale and the non-finite flag. The scale is the
// one the host computed before this existed: float(max_norm / sqrt(Σ g²)), in double.
inline void finish_grad_norm(int32_t* stats, double max_norm) {
  double ss = 0.0;
  std::memcpy(&ss, stats + 2, 8);
  const double norm = std::sqrt(ss);
  const float clip = max_norm > 0.0 && norm > max_norm ? static_cast<float>(max_norm / norm) : 1.0f;
  std::memcpy(stats + 4, &clip, 4);
  stats[5] = std::isfinite(norm) ? 0 : 1;
}

}  // namespace loco::ops
