// `loco launch`: the elastic supervisor's command line (loco/launch/supervisor.hpp).
#include <CLI/CLI.hpp>
#include <memory>

#include "io_commands.hpp"
#include "loco/launch/supervisor.hpp"

namespace loco::cli {

IoCommand add_launch_command(CLI::App& app) {
  auto o = std::make_shared<LaunchOptions>();
  auto* sub = app.add_subcommand(
      "launch",
      "Run a job under mpirun on the hosts of a hostfile that answer, and restart it from its "
      "newest checkpoint when it fails (elastic DiLoCo; docs/launch.md)\n\n"
      "  loco launch --hostfile hosts.txt --min-nodes 2 -- loco train run.json --out runs/x\n\n"
      "SIGUSR1 to the supervisor: rescale (stop at the next outer sync with a checkpoint, "
      "restart on the hostfile's hosts). SIGINT/SIGTERM: stop at the next outer sync, no "
      "restart.");
  sub->add_option("--hostfile", o->hostfile,
                  "Hosts, one \"HOST [slots=N]\" per line; read again at every restart")
      ->required();
  sub->add_option("-r,--ranks-per-node", o->ranks_per_node,
                  "Ranks started on each host (set distributed.replica_size to it for one "
                  "DiLoCo replica per node)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--min-nodes", o->min_nodes, "Fewest hosts to run on")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-nodes", o->max_nodes, "Most hosts to run on (0: every one that answers)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--max-restarts", o->max_restarts, "Restarts after failures before giving up")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--backoff", o->backoff_s,
                  "Seconds before the first restart, doubled for each further failure in a row")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--max-backoff", o->max_backoff_s, "Longest wait before a restart (s)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--healthy-after", o->healthy_after_s,
                  "A job that ran this many seconds resets the backoff")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--probe-timeout", o->probe_timeout_s,
                  "Seconds a host has to answer `AGENT HOST true`")
      ->check(CLI::PositiveNumber);
  sub->add_option("--watch-interval", o->watch_interval_s,
                  "While the job runs, probe its hosts every this many seconds; one that stops "
                  "answering ends the job, which restarts without it (0: no probes)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--wait-for-hosts", o->wait_for_hosts_s,
                  "Seconds to keep probing while fewer than --min-nodes hosts answer")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--agent", o->agent,
                  "How to reach a host, as mpirun's plm_rsh_agent (default: "
                  "$OMPI_MCA_plm_rsh_agent, else ssh)");
  sub->add_option("--mpirun", o->mpirun, "The mpirun to start");
  sub->add_option("--mpirun-arg", o->mpirun_args,
                  "One more argument for mpirun (repeatable), e.g. --mpirun-arg=--bind-to "
                  "--mpirun-arg=none")
      ->allow_extra_args(false);  // one value per --mpirun-arg: never the COMMAND after it
  sub->add_option("--events", o->events, "Append every event as a JSON line to this file");
  sub->add_option("command", o->command,
                  "What every rank runs (after --), e.g. loco train run.json --out runs/x; "
                  "restarts replace its --resume with --resume auto")
      ->required();
  return IoCommand{sub, [o] { return run_supervisor(*o); }};
}

}  // namespace loco::cli
