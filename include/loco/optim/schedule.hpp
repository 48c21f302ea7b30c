// Learning-rate schedules for the inner optimizer (docs/algorithms.md §8). The outer lr is
// constant. The config loader validates the parameters; learning_rate() re-checks them and
// throws loco::Error when they cannot be honoured.
//
// Notation: η = base_lr, T = total_steps, W = warmup_steps, η_min = min_lr_ratio·η.
// `step` is 0-based: learning_rate(…, step, T) is the lr used for the step-th update.
//
// Every phase of L steps runs its k-th step (k = 0 … L−1) at fraction f = (k+1)/L of the
// way from the phase's start level to its end level, so the LAST step of a phase lands
// exactly on the phase's target level.
//
//   warmup (all types): steps 0 … W−1, linear: lr = η·(step+1)/W — η/W at step 0, exactly η
//            at step W−1. W = 0 means no warmup.
//   "constant": warmup, then η.
//   "linear":   warmup, then the remaining T−W steps decay linearly from η to η_min,
//               reaching η_min at the last step T−1.
//   "cosine":   warmup, then the remaining T−W steps follow η_min + (η−η_min)·(1+cos πf)/2,
//               reaching η_min at step T−1.
//   "wsd":      warmup, stable at η, then the last D = wsd_decay_steps(s, T) =
//               round(decay_fraction·T) steps decay linearly to η_min (reached at T−1).
//   "infinite": warmup; cosine cool-down over C = cooldown_steps from η to
//               η_const = const_lr_ratio·η; constant η_const; then over the last
//               A = anneal_steps a linear anneal from η_const to η_min (reached at T−1).
//               Needs W + C + A ≤ T.
//
// Steps past the end (step ≥ T) use the step-(T−1) value; step < 0 uses step 0's.
// When W = T the run is all warmup and never decays.
#pragma once
#include "loco/config/config.hpp"

namespace loco {

// The lr for the step-th update (0-based) of a run of total_steps updates.
double learning_rate(const ScheduleConfig& s, double base_lr, int step, int total_steps);

// wsd: the number of final steps that decay, round(decay_fraction · total_steps).
int wsd_decay_steps(const ScheduleConfig& s, int total_steps);

}  // namespace loco
