// Hostfiles for `loco launch`: which nodes an elastic job may use, and the pure decisions the
// supervisor makes from them (which hosts to start on, how to restart, what an exit means).
//
// Format (Open MPI's): one host per line, "HOST [slots=N]"; '#' starts a comment; blank lines
// are ignored. Every host must offer at least the ranks per node the job starts there.
#pragma once
#include <string>
#include <vector>

namespace loco {

struct HostEntry {
  std::string name;
  int slots = 1;
  int line = 0;  // 1-based line in the file
};

// Parses hostfile text; `source` names it in messages ("hosts.txt:3: ..."). Throws
// loco::Error for a malformed line, a bad slot count or a host listed twice.
std::vector<HostEntry> parse_hostfile(const std::string& text, const std::string& source);
std::vector<HostEntry> read_hostfile(const std::string& path);

// The hosts of the next launch: those of `listed` that answered (in hostfile order), at most
// `max_nodes` of them (0: no limit). `error` says why there are fewer than `min_nodes`
// (naming the hosts that did not answer), or that a host has fewer slots than
// `ranks_per_node`; then `hosts` is empty.
struct HostChoice {
  std::vector<HostEntry> hosts;
  std::vector<std::string> not_answering;
  std::string error;
};
HostChoice choose_hosts(const std::vector<HostEntry>& listed, const std::vector<bool>& answered,
                        int min_nodes, int max_nodes, int ranks_per_node);

// The hostfile text mpirun gets: the chosen hosts with slots = ranks_per_node.
std::string mpirun_hostfile(const std::vector<HostEntry>& hosts, int ranks_per_node);

// The command of a restart: COMMAND with any "--resume X", "--resume=X" and "--overwrite"
// removed and "--resume auto" appended (continue from the newest checkpoint any node holds,
// or from step 0 when there is none yet).
std::vector<std::string> restart_command(const std::vector<std::string>& command);

// What the end of a job means to the supervisor.
enum class JobEnd {
  Done,        // exit 0
  Rescale,     // stopped at an outer sync because the supervisor asked (exit 138 after SIGUSR1)
  Definitive,  // the job itself failed for good: 1 (non-finite), 2 (a user error), while every
               // host still answers: restarting would fail the same way
  Failure,     // anything else (a node lost, a peer timed out, killed): restart
};
JobEnd classify_job_end(int exit_code, bool rescale_requested, bool hosts_lost);

// Seconds to wait before restart number `consecutive_failures` (1, 2, ...): `base` doubled
// per consecutive failure, at most `cap`.
double restart_backoff(int consecutive_failures, double base, double cap);

}  // namespace loco
