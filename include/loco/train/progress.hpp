// The one-line-per-step progress report:
//   step  120/600 | loss 2.3456 | lr 9.87e-04 | gnorm 0.412 | 41.2k tok/s | 0:31 | ETA 2:04
#pragma once
#include <string>

namespace loco {

std::string format_duration(double seconds);  // "0:07", "12:34", "1:02:03"
std::string format_count(double value);       // "950", "41.2k", "3.10M", "1.25G"

class ProgressPrinter {
 public:
  ProgressPrinter(int total_steps, long long tokens_per_step)
      : total_steps_(total_steps), tokens_per_step_(tokens_per_step) {}
  std::string line(int step, double loss, double lr, double grad_norm, double step_seconds,
                   double elapsed_seconds);

 private:
  int total_steps_;
  long long tokens_per_step_;
  double smoothed_step_seconds_ = 0.0;
};

}  // namespace loco
