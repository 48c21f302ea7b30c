#include "loco/optim/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "loco/core/error.hpp"

namespace loco {

namespace {

// Fraction of the way through a phase of `len` steps that starts at `start`: (k+1)/len.
double phase_fraction(int step, int start, int len) {
  return static_cast<double>(step - start + 1) / static_cast<double>(len);
}

double lerp(double from, double to, double f) { return from + (to - from) * f; }

double cosine_interp(double from, double to, double f) {
  return to + (from - to) * 0.5 * (1.0 + std::cos(std::numbers::pi * f));
}

[[noreturn]] void bad(const std::string& what) { throw Error("learning-rate schedule: " + what); }

}  // namespace

int wsd_decay_steps(const ScheduleConfig& s, int total_steps) {
  return static_cast<int>(std::llround(s.decay_fraction * static_cast<double>(total_steps)));
}

double learning_rate(const ScheduleConfig& s, double base_lr, int step, int total_steps) {
  const int T = total_steps;
  const int W = s.warmup_steps;
  if (T < 1) bad("total_steps = " + std::to_string(T) + ": must be >= 1");
  if (W < 0 || W > T)
    bad("warmup_steps = " + std::to_string(W) + ": must be in [0, " + std::to_string(T) + "]");
  step = std::clamp(step, 0, T - 1);

  const double peak = base_lr;
  const double floor = s.min_lr_ratio * base_lr;

  if (s.type != "constant" && s.type != "linear" && s.type != "cosine" && s.type != "wsd" &&
      s.type != "infinite")
    bad("unknown type \"" + s.type + "\" (allowed: constant, linear, cosine, wsd, infinite)");
  const int D = s.type == "wsd" ? wsd_decay_steps(s, T) : 0;
  const int C = s.cooldown_steps;
  const int A = s.anneal_steps;
  if (s.type == "wsd" && (D < 0 || W + D > T))
    bad("wsd: warmup_steps + round(decay_fraction·steps) = " + std::to_string(W + D) +
        " exceeds steps = " + std::to_string(T));
  if (s.type == "infinite" && (C < 0 || A < 0 || static_cast<long long>(W) + C + A > T))
    bad("infinite: warmup_steps + cooldown_steps + anneal_steps = " +
        std::to_string(static_cast<long long>(W) + C + A) +
        " exceeds steps = " + std::to_string(T));

  if (step < W) return peak * static_cast<double>(step + 1) / static_cast<double>(W);

  if (s.type == "constant") return peak;
  if (s.type == "linear") return lerp(peak, floor, phase_fraction(step, W, T - W));
  if (s.type == "cosine") return cosine_interp(peak, floor, phase_fraction(step, W, T - W));
  if (s.type == "wsd") {
    const int decay_start = T - D;
    if (step < decay_start) return peak;
    return lerp(peak, floor, phase_fraction(step, decay_start, D));
  }
  if (s.type == "infinite") {
    const double level = s.const_lr_ratio * base_lr;
    const int anneal_start = T - A;
    if (step >= anneal_start) return lerp(level, floor, phase_fraction(step, anneal_start, A));
    if (step < W + C) return cosine_interp(peak, level, phase_fraction(step, W, C));
    return level;
  }
  bad("unreachable");
}

}  // namespace loco
