// Learning-rate schedules: hand-computed values at phase boundaries (see schedule.hpp for
// the conventions: a phase of L steps runs its k-th step at fraction (k+1)/L).
#include <cmath>
#include <numbers>

#include "loco/core/error.hpp"
#include "loco/optim/schedule.hpp"
#include "support/catch.hpp"

using loco::learning_rate;
using loco::ScheduleConfig;

namespace {

ScheduleConfig make(const char* type, int warmup, double min_ratio = 0.1) {
  ScheduleConfig s;
  s.type = type;
  s.warmup_steps = warmup;
  s.min_lr_ratio = min_ratio;
  return s;
}

bool near(double a, double b) { return std::abs(a - b) <= 1e-12 * std::max(1.0, std::abs(b)); }

}  // namespace

TEST_CASE("warmup is linear from lr/W at step 0 to lr at step W-1", "[schedule]") {
  for (const char* type : {"constant", "linear", "cosine", "wsd", "infinite"}) {
    ScheduleConfig s = make(type, 10);
    s.cooldown_steps = 20;
    s.anneal_steps = 10;
    INFO(type);
    CHECK(near(learning_rate(s, 1.0, 0, 100), 0.1));
    CHECK(near(learning_rate(s, 1.0, 4, 100), 0.5));
    CHECK(near(learning_rate(s, 2.0, 4, 100), 1.0));
    CHECK(near(learning_rate(s, 1.0, 9, 100), 1.0));
    for (int i = 1; i < 10; ++i)
      CHECK(learning_rate(s, 1.0, i, 100) > learning_rate(s, 1.0, i - 1, 100));
  }
}

TEST_CASE("constant", "[schedule]") {
  ScheduleConfig s = make("constant", 0);
  for (int step : {0, 1, 50, 99}) CHECK(near(learning_rate(s, 3e-4, step, 100), 3e-4));
  s.warmup_steps = 4;
  CHECK(near(learning_rate(s, 1.0, 0, 100), 0.25));
  CHECK(near(learning_rate(s, 1.0, 3, 100), 1.0));
  CHECK(near(learning_rate(s, 1.0, 4, 100), 1.0));
  CHECK(near(learning_rate(s, 1.0, 99, 100), 1.0));
}

TEST_CASE("linear: warmup then linear decay to min at the last step", "[schedule]") {
  // W = 10, T = 110: decay phase is steps 10..109 (L = 100), f = (step-9)/100.
  ScheduleConfig s = make("linear", 10, 0.1);
  CHECK(near(learning_rate(s, 1.0, 10, 110), 1.0 - 0.9 * 0.01));
  CHECK(near(learning_rate(s, 1.0, 59, 110), 1.0 - 0.9 * 0.5));  // midpoint: 0.55
  CHECK(near(learning_rate(s, 1.0, 59, 110), 0.55));
  CHECK(near(learning_rate(s, 1.0, 109, 110), 0.1));
  CHECK(near(learning_rate(s, 2.0, 109, 110), 0.2));
  // Past the end: the final value.
  CHECK(near(learning_rate(s, 1.0, 500, 110), 0.1));
  // No warmup: step 0 is already one step into the decay.
  ScheduleConfig n = make("linear", 0, 0.0);
  CHECK(near(learning_rate(n, 1.0, 0, 4), 0.75));
  CHECK(near(learning_rate(n, 1.0, 1, 4), 0.5));
  CHECK(near(learning_rate(n, 1.0, 3, 4), 0.0));
}

TEST_CASE("cosine: warmup then cosine to min at the last step", "[schedule]") {
  ScheduleConfig s = make("cosine", 10, 0.1);
  // Decay phase 10..109, L = 100. Midpoint f = 0.5 at step 59: min + (1-min)/2 = 0.55.
  CHECK(near(learning_rate(s, 1.0, 59, 110), 0.55));
  // f = 0.25 at step 34: 0.1 + 0.9 * (1 + cos(pi/4)) / 2
  CHECK(near(learning_rate(s, 1.0, 34, 110),
             0.1 + 0.9 * 0.5 * (1.0 + std::cos(std::numbers::pi / 4))));
  CHECK(near(learning_rate(s, 1.0, 10, 110),
             0.1 + 0.9 * 0.5 * (1.0 + std::cos(std::numbers::pi / 100))));
  CHECK(near(learning_rate(s, 1.0, 109, 110), 0.1));
  // Cosine is above linear in the first half of the decay, below in the second.
  ScheduleConfig lin = make("linear", 10, 0.1);
  CHECK(learning_rate(s, 1.0, 30, 110) > learning_rate(lin, 1.0, 30, 110));
  CHECK(learning_rate(s, 1.0, 90, 110) < learning_rate(lin, 1.0, 90, 110));
}

TEST_CASE("wsd: warmup, stable, last decay_fraction of steps decays linearly", "[schedule]") {
  ScheduleConfig s = make("wsd", 10, 0.1);
  s.decay_fraction = 0.2;
  REQUIRE(loco::wsd_decay_steps(s, 100) == 20);
  // Stable: steps 10..79 at lr; decay: steps 80..99, f = (step-79)/20.
  CHECK(near(learning_rate(s, 1.0, 10, 100), 1.0));
  CHECK(near(learning_rate(s, 1.0, 50, 100), 1.0));
  CHECK(near(learning_rate(s, 1.0, 79, 100), 1.0));
  CHECK(near(learning_rate(s, 1.0, 80, 100), 1.0 - 0.9 / 20));
  CHECK(near(learning_rate(s, 1.0, 89, 100), 0.55));
  CHECK(near(learning_rate(s, 1.0, 99, 100), 0.1));
  // decay_fraction rounds: 0.25 * 10 = 2.5 -> 3 (round half away from zero).
  s.decay_fraction = 0.25;
  s.warmup_steps = 0;
  REQUIRE(loco::wsd_decay_steps(s, 10) == 3);
  CHECK(near(learning_rate(s, 1.0, 6, 10), 1.0));
  CHECK(near(learning_rate(s, 1.0, 7, 10), 1.0 - 0.9 / 3));
  CHECK(near(learning_rate(s, 1.0, 9, 10), 0.1));
  // decay_fraction 0: warmup then constant.
  s.decay_fraction = 0.0;
  CHECK(near(learning_rate(s, 1.0, 9, 10), 1.0));
}

TEST_CASE("infinite: warmup, cosine cool-down, constant, linear anneal", "[schedule]") {
  ScheduleConfig s = make("infinite", 10, 0.1);
  s.cooldown_steps = 20;
  s.const_lr_ratio = 0.5;
  s.anneal_steps = 10;
  const int T = 100;
  // Cool-down: steps 10..29, f = (step-9)/20, cosine from 1.0 to 0.5.
  CHECK(
      near(learning_rate(s, 1.0, 10, T), 0.5 + 0.5 * 0.5 * (1 + std::cos(std::numbers::pi / 20))));
  CHECK(near(learning_rate(s, 1.0, 19, T), 0.75));  // f = 0.5
  CHECK(near(learning_rate(s, 1.0, 29, T), 0.5));   // end of cool-down
  // Constant: steps 30..89.
  CHECK(near(learning_rate(s, 1.0, 30, T), 0.5));
  CHECK(near(learning_rate(s, 1.0, 60, T), 0.5));
  CHECK(near(learning_rate(s, 1.0, 89, T), 0.5));
  // Anneal: steps 90..99, f = (step-89)/10, linear from 0.5 to 0.1.
  CHECK(near(learning_rate(s, 1.0, 90, T), 0.5 - 0.4 * 0.1));
  CHECK(near(learning_rate(s, 1.0, 94, T), 0.3));
  CHECK(near(learning_rate(s, 1.0, 99, T), 0.1));
  CHECK(near(learning_rate(s, 4.0, 99, T), 0.4));
  // A longer run only lengthens the constant phase.
  CHECK(near(learning_rate(s, 1.0, 500, 1000), 0.5));
  CHECK(near(learning_rate(s, 1.0, 989, 1000), 0.5));
  CHECK(near(learning_rate(s, 1.0, 999, 1000), 0.1));
  // No anneal: stays at the constant level to the end.
  s.anneal_steps = 0;
  CHECK(near(learning_rate(s, 1.0, 99, T), 0.5));
  // Phases that do not fit are an error.
  s.anneal_steps = 71;
  CHECK_THROWS_AS(learning_rate(s, 1.0, 0, T), loco::Error);
}

TEST_CASE("decaying schedules are monotone after warmup and never below the floor", "[schedule]") {
  for (const char* type : {"linear", "cosine", "wsd", "infinite"}) {
    ScheduleConfig s = make(type, 7, 0.2);
    s.decay_fraction = 0.3;
    s.cooldown_steps = 13;
    s.const_lr_ratio = 0.6;
    s.anneal_steps = 11;
    const int T = 97;
    const double lr = 3e-3;
    INFO(type);
    CHECK(near(learning_rate(s, lr, 6, T), lr));
    for (int step = 7; step < T; ++step) {
      const double a = learning_rate(s, lr, step - 1, T);
      const double b = learning_rate(s, lr, step, T);
      CHECK(b <= a);
      CHECK(b >= 0.2 * lr * (1 - 1e-12));
      CHECK(b <= lr);
    }
    CHECK(near(learning_rate(s, lr, T - 1, T), 0.2 * lr));
  }
}

TEST_CASE("bad schedule parameters throw", "[schedule]") {
  ScheduleConfig s = make("cosine", 10);
  CHECK_THROWS_AS(learning_rate(s, 1.0, 0, 5), loco::Error);  // warmup > steps
  CHECK_THROWS_AS(learning_rate(s, 1.0, 0, 0), loco::Error);
  s.type = "exponential";
  REQUIRE_THROWS_WITH(learning_rate(s, 1.0, 20, 100), LOCO_CONTAINS("exponential"));
  ScheduleConfig w = make("wsd", 50);
  w.decay_fraction = 0.6;
  CHECK_THROWS_AS(learning_rate(w, 1.0, 0, 100), loco::Error);
  // All-warmup run (W == T) is allowed and ends at lr.
  ScheduleConfig a = make("cosine", 10);
  CHECK(near(learning_rate(a, 1.0, 9, 10), 1.0));
}
