// `loco launch`: a supervisor that keeps an elastic job running on the hosts that are there.
//
//   loco launch --hostfile hosts.txt --min-nodes 2 -- loco train run.json --out runs/x
//
// Every (re)start: read the hostfile (so hosts added to it are used), ask every listed host
// whether it answers (the launcher's remote agent, as mpirun would reach it: `AGENT HOST true`
// within --probe-timeout; this machine's own names answer without asking), keep at most
// --max-nodes of those that do, in hostfile order, and start
//
//   mpirun --hostfile <those hosts, slots = R> -np <hosts·R> --map-by ppr:R:node
//          [--mpirun-arg ...] COMMAND
//
// (R = --ranks-per-node; with distributed.replica_size = R each node is one DiLoCo replica).
// When the job ends:
//   exit 0                      done: the supervisor exits 0;
//   SIGUSR1 to the supervisor   a rescale: the signal is passed to mpirun, so the run stops at
//                               its next outer sync with a checkpoint (exit 138), and the
//                               supervisor restarts at once with the current hostfile;
//   1 or 2, every host answers  the job failed for good (non-finite, or a user error such as a
//                               missing checkpoint file): the supervisor exits with that code;
//   anything else               a failure (a node lost, a peer timed out, killed): restart with
//                               COMMAND's --resume replaced by "--resume auto" (the newest
//                               checkpoint any node holds), after a backoff that doubles with
//                               each consecutive failure (--backoff, --max-backoff; a job that
//                               ran --healthy-after seconds resets it), at most --max-restarts
//                               times; then exit 3.
// While the job runs, its hosts are probed every --watch-interval seconds: a host that stops
// answering (it vanished without closing its connections, so mpirun may wait on it for
// minutes) ends the job (SIGTERM to mpirun, SIGKILL 5 s later), which then restarts as after
// a failure. A probe pauses the passing-on of signals for up to --probe-timeout.
// Fewer hosts answering than --min-nodes: probe again every backoff until --wait-for-hosts
// seconds have passed, then exit 3 naming the hosts that did not answer. A hostfile that lists
// fewer than --min-nodes hosts, or a malformed one: exit 2 at once, nothing started.
// SIGINT / SIGTERM / SIGHUP: passed on to mpirun as SIGUSR1 (the run stops at its next outer
// sync with a checkpoint), no restart, exit 128 + the signal; a second one sends mpirun
// SIGTERM. mpirun gets SIGTERM if the supervisor itself dies.
//
// Each event (probe, launch, exit, restart, rescale) is logged with the time, and appended
// as a JSON line to --events FILE when given.
#pragma once
#include <string>
#include <vector>

namespace loco {

struct LaunchOptions {
  std::string hostfile;
  int ranks_per_node = 1;
  int min_nodes = 1;
  int max_nodes = 0;  // 0: every host that answers
  int max_restarts = 10;
  double backoff_s = 1.0;
  double max_backoff_s = 60.0;
  double healthy_after_s = 60.0;
  double probe_timeout_s = 10.0;
  double wait_for_hosts_s = 300.0;
  double watch_interval_s = 10.0;  // probe the job's hosts this often while it runs; 0: never
  std::string agent;               // "" : $OMPI_MCA_plm_rsh_agent (its first choice), else "ssh"
  std::string mpirun = "mpirun";
  std::vector<std::string> mpirun_args;
  std::vector<std::string> command;
  std::string events;  // JSON lines, "" for none
};

// Runs the supervisor until the job is done or given up; returns the exit code.
int run_supervisor(const LaunchOptions& options);

// The agent the probes use: `configured`, else the first of $OMPI_MCA_plm_rsh_agent's
// alternatives ("ssh : rsh" -> "ssh"), else "ssh".
std::string probe_agent(const std::string& configured);

// Whether `host` names this machine (localhost, 127.x, this host's name): no probe needed.
bool is_this_machine(const std::string& host);

}  // namespace loco
