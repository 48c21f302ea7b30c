// Stopping a run by a signal.
//
// SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 ask the trainer to stop after the current step: every
// rank agrees on the stop at the end of the step, writes a checkpoint (when checkpoints are
// on) and summary.json, and the process exits with 128 + the signal number (SIGTERM 143,
// SIGINT 130, SIGUSR1 138). A second SIGINT kills at once.
//
// Launchers do not wait long after SIGTERM: Open MPI's mpirun, on SIGTERM, sends the ranks
// SIGCONT, then SIGTERM after odls_base_sigkill_timeout seconds (default 1), then SIGKILL
// after as long again. A step plus a checkpoint of a real model takes longer than that. So
// on SIGTERM or SIGINT a watcher thread compares what finishing would take (the rest of the
// current step and a checkpoint, from the measured durations) with the grace period the
// launcher leaves (stop_grace_seconds()). When it does not fit in half of it and there is
// nothing new worth the risk — a checkpoint exists, or checkpoints are off — the process
// says so and exits at once with 128 + signal instead of being killed mid-write. SIGUSR1
// and SIGUSR2 (which mpirun forwards without killing anything) always stop gracefully.
// docs/launch.md has the details for mpirun and Slurm.
#pragma once
#include <cstdint>
#include <limits>
#include <string>

namespace loco {

// Installs the handlers and starts the watcher thread (once; later calls do nothing).
void install_stop_handlers();
bool stop_requested();
void request_stop();  // for tests and for peers that saw a stop
// The signal that asked for the stop (SIGTERM, ...), or 0 when none did.
int stop_signal();
// The exit code for a run stopped by `stop_signal()`: 128 + signal, or 0 without one.
int stop_exit_code();

// Seconds the launcher leaves between SIGTERM and SIGKILL, from the environment:
// LOCO_STOP_GRACE_S when set (a number of seconds; "inf" for no limit); else under Open MPI
// (OMPI_COMM_WORLD_SIZE is set) OMPI_MCA_odls_base_sigkill_timeout, or its default 1; else
// no limit (infinity). `source` says which, for messages. Throws loco::Error for a
// malformed value.
struct StopGrace {
  double seconds = std::numeric_limits<double>::infinity();
  std::string source;
};
StopGrace stop_grace();

// What the trainer tells the watcher, so that it can judge whether a graceful stop fits.
// All of these are cheap (a few atomic stores) and may be called from the training thread.
// Only rank 0's watcher prints its decision.
void stop_note_loop_started(bool checkpoints_enabled, int rank);
void stop_note_step_started(int64_t step);  // 0-based index of the step now running
void stop_note_step_finished(double seconds);
void stop_note_checkpoint(int64_t step, double seconds);  // written (or resumed from)

// The watcher's rule, separated for tests. Times are seconds.
struct StopSituation {
  StopGrace grace;
  bool in_loop = false;               // the training loop has started
  bool checkpoints_enabled = true;    // checkpoint.interval > 0
  int64_t step = -1;                  // the step running (0-based), -1 before the first
  double step_elapsed = 0;            // how long the running step has been going
  double step_estimate = -1;          // duration of the last step, < 0 unknown
  int64_t last_checkpoint_step = -1;  // < 0: none written or resumed from
  double checkpoint_estimate = -1;    // duration of the last checkpoint write, < 0 unknown
};
struct StopDecision {
  bool exit_now = false;
  std::string message;  // what to print (without "error: ")
};
StopDecision decide_stop(const StopSituation& s, int signal);

}  // namespace loco
