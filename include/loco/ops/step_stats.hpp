// The statistics of one training step kept in backend memory, so that a step can run without
// the host reading anything until it ends (Backend::adamw_multi reads them). An I32 buffer
// of kStepStatsWords words:
//
//   words [0, 2)  loss: Σ over micro-batches of that micro-batch's mean loss (f64)
//         [2, 4)  Σ g² over the gradient buffer (f64), once clip_grad_norm has run
//         4       clip scale (f32 bits): max_norm / ‖g‖ when max_norm > 0 and ‖g‖ > max_norm,
//                 else 1 — the factor the update multiplies the gradient by
//         5       1 when ‖g‖ is not finite (the update is then skipped), else 0
//         6, 7    reserved (0)
//
// Zeroed at the start of a step. Backend::adamw_multi reads words 4 and 5.
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

}  // namespace loco::ops
