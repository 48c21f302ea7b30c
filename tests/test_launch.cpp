// The elastic supervisor's decisions (loco/launch/hostfile.hpp, loco/launch/supervisor.hpp):
// hostfile parsing and its errors, which hosts a launch gets, the restart command, what an
// exit code means, the backoff.
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "loco/core/error.hpp"
#include "loco/launch/hostfile.hpp"
#include "loco/launch/supervisor.hpp"
#include "support/catch.hpp"

using namespace loco;

TEST_CASE("hostfiles: Open MPI's format, comments, slots", "[launch]") {
  const auto hosts = parse_hostfile(
      "# the cluster\n"
      "node0 slots=8\n"
      "\n"
      "  node1   slots=4   # the small one\n"
      "node2\n"
      "node3 slots=2 max_slots=4\n",
      "hosts.txt");
  REQUIRE(hosts.size() == 4);
  CHECK(hosts[0].name == "node0");
  CHECK(hosts[0].slots == 8);
  CHECK(hosts[0].line == 2);
  CHECK(hosts[1].name == "node1");
  CHECK(hosts[1].slots == 4);
  CHECK(hosts[1].line == 4);
  CHECK(hosts[2].slots == 1);  // Open MPI's default
  CHECK(hosts[3].slots == 2);
  CHECK(parse_hostfile("", "empty").empty());
  CHECK(parse_hostfile("# nothing\n\n", "comments").empty());
}

TEST_CASE("hostfiles: malformed lines name the file and the line", "[launch]") {
  REQUIRE_THROWS_WITH(parse_hostfile("a\nb slots=0\n", "h.txt"),
                      LOCO_CONTAINS("h.txt:2: slots=0: want a whole number of slots >= 1"));
  REQUIRE_THROWS_WITH(parse_hostfile("a slots=x\n", "h.txt"), LOCO_CONTAINS("h.txt:1: slots=x"));
  REQUIRE_THROWS_WITH(parse_hostfile("a slots=2x\n", "h.txt"), LOCO_CONTAINS("h.txt:1: slots=2x"));
  REQUIRE_THROWS_WITH(parse_hostfile("a cpus=2\n", "h.txt"),
                      LOCO_CONTAINS("h.txt:1: unknown field \"cpus=2\""));
  REQUIRE_THROWS_WITH(parse_hostfile("a\nb\na slots=2\n", "h.txt"),
                      LOCO_CONTAINS("h.txt:3: host a is listed twice"));
  REQUIRE_THROWS_WITH(parse_hostfile("bad/host\n", "h.txt"),
                      LOCO_CONTAINS("h.txt:1: \"bad/host\" is not a host name"));
  REQUIRE_THROWS_WITH(read_hostfile("/nonexistent/hosts.txt"),
                      LOCO_CONTAINS("/nonexistent/hosts.txt"));
}

TEST_CASE("choose_hosts: the answering hosts in hostfile order, min and max", "[launch]") {
  const auto listed = parse_hostfile("n0 slots=2\nn1 slots=2\nn2 slots=2\nn3 slots=2\n", "h");
  // All answer, no maximum: all four.
  auto c = choose_hosts(listed, {true, true, true, true}, 2, 0, 2);
  CHECK(c.error.empty());
  REQUIRE(c.hosts.size() == 4);
  // n1 does not answer: the others, in order; at most 2.
  c = choose_hosts(listed, {true, false, true, true}, 2, 2, 2);
  CHECK(c.error.empty());
  REQUIRE(c.hosts.size() == 2);
  CHECK(c.hosts[0].name == "n0");
  CHECK(c.hosts[1].name == "n2");
  CHECK(c.not_answering == std::vector<std::string>{"n1"});
  // Too few answer: an error naming those that do not, and no hosts.
  c = choose_hosts(listed, {false, true, false, false}, 2, 0, 2);
  CHECK(c.hosts.empty());
  CHECK(c.error == "1 host(s) available, fewer than --min-nodes 2 (not answering: n0, n2, n3)");
  // Too few listed.
  c = choose_hosts(parse_hostfile("n0 slots=2\n", "h"), {true}, 2, 0, 2);
  CHECK(c.error == "1 host(s) available, fewer than --min-nodes 2 (the hostfile lists 1)");
  // A host with fewer slots than ranks per node.
  c = choose_hosts(parse_hostfile("n0 slots=2\nn1 slots=1\n", "h"), {true, true}, 1, 0, 2);
  CHECK(c.hosts.empty());
  CHECK(c.error ==
        "host n1 (line 2) offers 1 slot(s), fewer than the 2 rank(s) per node of "
        "this job (--ranks-per-node)");
  CHECK(mpirun_hostfile(listed, 3) == "n0 slots=3\nn1 slots=3\nn2 slots=3\nn3 slots=3\n");
}

TEST_CASE("restart_command: continue from the newest checkpoint", "[launch]") {
  using V = std::vector<std::string>;
  CHECK(restart_command(V{"loco", "train", "c.json", "--out", "r"}) ==
        V{"loco", "train", "c.json", "--out", "r", "--resume", "auto"});
  CHECK(restart_command(V{"loco", "train", "c.json", "--resume", "latest", "--out", "r"}) ==
        V{"loco", "train", "c.json", "--out", "r", "--resume", "auto"});
  CHECK(restart_command(V{"loco", "train", "--resume=runs/x/step-000010", "c.json"}) ==
        V{"loco", "train", "c.json", "--resume", "auto"});
  CHECK(restart_command(V{"loco", "train", "c.json", "--overwrite"}) ==
        V{"loco", "train", "c.json", "--resume", "auto"});
}

TEST_CASE("classify_job_end and the backoff", "[launch]") {
  CHECK(classify_job_end(0, false, false) == JobEnd::Done);
  CHECK(classify_job_end(0, true, false) == JobEnd::Done);  // finished before the rescale
  CHECK(classify_job_end(138, true, false) == JobEnd::Rescale);
  CHECK(classify_job_end(138, false, false) == JobEnd::Failure);  // someone else's SIGUSR1
  CHECK(classify_job_end(2, false, false) == JobEnd::Definitive);
  CHECK(classify_job_end(1, false, false) == JobEnd::Definitive);
  CHECK(classify_job_end(2, false, true) == JobEnd::Failure);   // a host is gone: not the user's
  CHECK(classify_job_end(4, false, false) == JobEnd::Failure);  // a peer timed out
  CHECK(classify_job_end(205, false, false) == JobEnd::Failure);
  CHECK(classify_job_end(137, false, false) == JobEnd::Failure);
  CHECK(restart_backoff(0, 1.0, 60.0) == 0.0);
  CHECK(restart_backoff(1, 1.0, 60.0) == 1.0);
  CHECK(restart_backoff(2, 1.0, 60.0) == 2.0);
  CHECK(restart_backoff(4, 1.5, 60.0) == 12.0);
  CHECK(restart_backoff(10, 1.0, 60.0) == 60.0);
  CHECK(restart_backoff(1000, 1.0, 60.0) == 60.0);
}

TEST_CASE("probe agent and this machine's names", "[launch]") {
  ::unsetenv("OMPI_MCA_plm_rsh_agent");
  CHECK(probe_agent("") == "ssh");
  CHECK(probe_agent("ssh -o BatchMode=yes") == "ssh -o BatchMode=yes");
  ::setenv("OMPI_MCA_plm_rsh_agent", "/tmp/agent : rsh", 1);
  CHECK(probe_agent("") == "/tmp/agent");
  CHECK(probe_agent("mine") == "mine");
  ::unsetenv("OMPI_MCA_plm_rsh_agent");
  CHECK(is_this_machine("localhost"));
  CHECK(is_this_machine("127.0.0.1"));
  char name[256] = {};
  REQUIRE(::gethostname(name, sizeof name - 1) == 0);
  CHECK(is_this_machine(name));
  CHECK_FALSE(is_this_machine("surely-not-this-machine.example"));
}

TEST_CASE("run_supervisor: bad options and a hostfile with too few hosts", "[launch]") {
  LaunchOptions o;
  o.hostfile = "/nonexistent";
  REQUIRE_THROWS_WITH(run_supervisor(o), LOCO_CONTAINS("no COMMAND"));
  o.command = {"true"};
  o.min_nodes = 3;
  o.max_nodes = 2;
  REQUIRE_THROWS_WITH(run_supervisor(o), LOCO_CONTAINS("--max-nodes 2 is below --min-nodes 3"));
  // Fewer hosts listed than the minimum: exit 2, nothing started (the command would fail
  // the test if it ran: it is `false`).
  char path[] = "/tmp/loco-hosts-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  const std::string text = "localhost slots=2\n";
  REQUIRE(::write(fd, text.data(), text.size()) == ssize_t(text.size()));
  ::close(fd);
  o.hostfile = path;
  o.max_nodes = 0;
  o.command = {"false"};
  CHECK(run_supervisor(o) == 2);
  // A malformed hostfile: exit 2 too.
  o.min_nodes = 1;
  o.hostfile = "/nonexistent/hosts";
  CHECK(run_supervisor(o) == 2);
  ::unlink(path);
}
