#include "loco/train/stop_signal.hpp"

#include <semaphore.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>

#include "loco/core/error.hpp"

namespace loco {

namespace {

// A signal handler may only touch lock-free atomics and async-signal-safe calls: it records
// the signal and wakes the watcher thread (sem_post is async-signal-safe).
volatile std::sig_atomic_t g_stop = 0;
volatile std::sig_atomic_t g_signal = 0;  // the first stop signal
sem_t g_wake;

extern "C" void on_stop_signal(int sig) {
  if (g_stop && sig == SIGINT) {  // a second Ctrl-C: die at once
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
  }
  if (!g_stop) g_signal = sig;
  g_stop = 1;
  sem_post(&g_wake);
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// What the training thread reports (see stop_note_*).
std::atomic<bool> g_in_loop{false};
std::atomic<bool> g_checkpoints_enabled{true};
std::atomic<int> g_rank{0};
std::atomic<int64_t> g_step{-1};
std::atomic<double> g_step_started{0.0};
std::atomic<double> g_step_estimate{-1.0};
std::atomic<int64_t> g_last_checkpoint{-1};
std::atomic<double> g_checkpoint_estimate{-1.0};
StopGrace g_grace;

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGUSR2:
      return "SIGUSR2";
    default:
      return "a signal";
  }
}

std::string seconds_text(double s) {
  std::ostringstream o;
  o.precision(s < 10 ? 2 : 3);
  o << s << " s";
  return o.str();
}

// Parses a non-negative number of seconds; "inf" (or "infinity") means no limit.
double parse_seconds(const char* text, const std::string& name) {
  const std::string t = text;
  if (t == "inf" || t == "infinity") return std::numeric_limits<double>::infinity();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text, &end);
  if (t.empty() || errno != 0 || end == text || *end != '\0' || !(v > 0) || std::isnan(v))
    throw Error(name + "=" + t + ": expected a number of seconds > 0 (or \"inf\")");
  return v;
}

void watch_for_stop() {
  bool decided = false;
  for (;;) {
    if (sem_wait(&g_wake) != 0) continue;  // EINTR
    if (decided || !g_stop) continue;
    decided = true;
    const int sig = g_signal;
    StopSituation s;
    s.grace = g_grace;
    s.in_loop = g_in_loop;
    s.checkpoints_enabled = g_checkpoints_enabled;
    s.step = g_step;
    s.step_elapsed = s.step >= 0 ? now_seconds() - g_step_started.load() : 0.0;
    s.step_estimate = g_step_estimate;
    s.last_checkpoint_step = g_last_checkpoint;
    s.checkpoint_estimate = g_checkpoint_estimate;
    const StopDecision d = decide_stop(s, sig);
    if (g_rank == 0 && !d.message.empty()) {
      std::fprintf(stderr, "%s\n", d.message.c_str());
      std::fflush(stderr);
    }
    if (d.exit_now) {
      std::fflush(stdout);
      ::_exit(128 + sig);
    }
  }
}

}  // namespace

StopGrace stop_grace() {
  StopGrace g;
  if (const char* env = std::getenv("LOCO_STOP_GRACE_S"); env && *env) {
    g.seconds = parse_seconds(env, "LOCO_STOP_GRACE_S");
    g.source = "LOCO_STOP_GRACE_S";
    return g;
  }
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) {
    const char* t = std::getenv("OMPI_MCA_odls_base_sigkill_timeout");
    g.seconds = t && *t ? parse_seconds(t, "OMPI_MCA_odls_base_sigkill_timeout") : 1.0;
    g.source = "Open MPI's odls_base_sigkill_timeout";
    return g;
  }
  g.source = "no limit known";
  return g;
}

StopDecision decide_stop(const StopSituation& s, int sig) {
  const std::string name = signal_name(sig);
  StopDecision d;
  if (sig == SIGUSR1 || sig == SIGUSR2) return d;  // never followed by a kill: always graceful
  if (!s.in_loop) {
    d.exit_now = true;
    d.message = "stop requested (" + name + ") during start-up: exiting (nothing trained yet)";
    return d;
  }
  if (!std::isfinite(s.grace.seconds)) return d;  // nobody is going to kill us: finish the step

  const std::string step = "step " + std::to_string(s.step + 1);
  const bool known = s.step_estimate >= 0 && (!s.checkpoints_enabled || s.checkpoint_estimate >= 0);
  const double remaining = std::max(0.0, s.step_estimate - s.step_elapsed);
  const double need = remaining + (s.checkpoints_enabled ? s.checkpoint_estimate : 0.0);
  const std::string grace = seconds_text(s.grace.seconds) + " (" + s.grace.source + ")";
  if (known && need <= 0.5 * s.grace.seconds) {
    d.message = "stop requested (" + name + "): finishing " + step +
                (s.checkpoints_enabled ? " and writing a checkpoint" : "") + " (about " +
                seconds_text(need) + "; the launcher kills after " + grace + ")";
    return d;
  }
  if (s.last_checkpoint_step < 0 && s.checkpoints_enabled) {
    d.message = "stop requested (" + name + "): no checkpoint yet, so trying to finish " + step +
                " and write one, although the launcher may kill the run after " + grace;
    return d;
  }
  d.exit_now = true;
  std::string why = known ? "finishing " + step +
                                (s.checkpoints_enabled ? " and writing a checkpoint" : "") +
                                " would take about " + seconds_text(need)
                          : "the time to finish " + step + " is not known yet";
  d.message = "stop requested (" + name + "): " + why + ", and the launcher kills after " + grace +
              ": exiting now (code " + std::to_string(128 + sig) + ")";
  if (s.checkpoints_enabled)
    d.message += " without a new checkpoint; the last one is step " +
                 std::to_string(s.last_checkpoint_step) + " (resume with --resume latest)";
  d.message +=
      ". For a stop with a fresh checkpoint send SIGUSR1 instead (mpirun forwards it), or give "
      "the ranks time (mpirun --mca odls_base_sigkill_timeout 60; LOCO_STOP_GRACE_S for other "
      "launchers); see docs/launch.md";
  return d;
}

void install_stop_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_grace = stop_grace();
    // The rank, for printing from rank 0 only, until the trainer says (launchers export it).
    for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"})
      if (const char* r = std::getenv(var); r && *r) {
        g_rank = std::atoi(r);
        break;
      }
    if (sem_init(&g_wake, 0, 0) != 0)
      throw Error(std::string("cannot create the stop semaphore: ") + std::strerror(errno));
    std::thread(watch_for_stop).detach();
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (int sig : {SIGINT, SIGTERM, SIGUSR1, SIGUSR2}) sigaction(sig, &sa, nullptr);
  });
}

bool stop_requested() { return g_stop != 0; }
void request_stop() { g_stop = 1; }
int stop_signal() { return g_signal; }
int stop_exit_code() { return g_signal ? 128 + g_signal : 0; }

void stop_note_loop_started(bool checkpoints_enabled, int rank) {
  g_checkpoints_enabled = checkpoints_enabled;
  g_rank = rank;
  g_in_loop = true;
}
void stop_note_step_started(int64_t step) {
  g_step_started = now_seconds();
  g_step = step;
}
void stop_note_step_finished(double seconds) { g_step_estimate = seconds; }
void stop_note_checkpoint(int64_t step, double seconds) {
  g_last_checkpoint = step;
  g_checkpoint_estimate = seconds;
}

}  // namespace loco
