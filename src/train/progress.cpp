#include "loco/train/progress.hpp"

#include <spdlog/fmt/fmt.h>

#include <cmath>

namespace loco {

std::string format_duration(double seconds) {
  const long long s = std::llround(std::max(0.0, seconds));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

std::string format_count(double v) {
  if (v >= 1e9) return fmt::format("{:.2f}G", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.2f}M", v / 1e6);
  if (v >= 1e3) return fmt::format("{:.1f}k", v / 1e3);
  return fmt::format("{:.0f}", v);
}

std::string ProgressPrinter::line(int step, double loss, double lr, double grad_norm,
                                  double step_seconds, double elapsed_seconds) {
  // The ETA uses an exponential average so one slow step (validation) does not swing it.
  smoothed_step_seconds_ = smoothed_step_seconds_ == 0.0
                               ? step_seconds
                               : 0.9 * smoothed_step_seconds_ + 0.1 * step_seconds;
  const int width = static_cast<int>(std::to_string(total_steps_).size());
  const double eta = smoothed_step_seconds_ * (total_steps_ - step);
  return fmt::format(
      "step {:>{}}/{} | loss {:.4f} | lr {:.2e} | gnorm {:.3f} | {} tok/s | {} | ETA {}", step,
      width, total_steps_, loss, lr, grad_norm,
      format_count(tokens_per_step_ / std::max(step_seconds, 1e-9)),
      format_duration(elapsed_seconds), format_duration(eta));
}

}  // namespace loco
