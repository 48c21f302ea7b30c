// `loco launch`, the elastic supervisor: see include/loco/launch/supervisor.hpp.
#include "loco/launch/supervisor.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "loco/core/error.hpp"
#include "loco/core/files.hpp"
#include "loco/launch/hostfile.hpp"

namespace loco {

namespace fs = std::filesystem;

// How long mpirun has to end after our SIGTERM (a host of the job stopped answering) before
// it gets SIGKILL: it may be stuck trying to reach the lost host's daemon.
constexpr double kEndGraceSeconds = 5.0;
using Clock = std::chrono::steady_clock;

namespace {

// ------------------------------------------------------------------ signals

std::atomic<int> g_rescale_requests{0};
std::atomic<int> g_stop_requests{0};
std::atomic<int> g_stop_signal{0};

void on_signal(int sig) {
  if (sig == SIGUSR1) {
    g_rescale_requests.fetch_add(1);
  } else {
    g_stop_signal.store(sig);
    g_stop_requests.fetch_add(1);
  }
}

void install_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGUSR1, SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string clock_text() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string join(const std::vector<std::string>& v, const char* sep = " ") {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// ------------------------------------------------------------------ child processes

// Starts argv[0] (searched in PATH) in a process group of its own (terminal signals reach the
// supervisor only, which decides what to pass on), with the default signal handling, to get
// SIGTERM when the supervisor dies. stderr_fd >= 0: the child's stdout and stderr go there.
pid_t spawn(const std::vector<std::string>& argv, int stderr_fd = -1) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0)
    throw Error(std::string("cannot start ") + argv[0] + ": fork: " + std::strerror(errno));
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);  // the supervisor died before prctl
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGUSR1, SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
    if (stderr_fd >= 0) {
      ::dup2(stderr_fd, 1);
      ::dup2(stderr_fd, 2);
    }
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "loco launch: cannot run %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also from here: no race with the first signal we send
  return pid;
}

// Exit status as a shell reports it: the code, or 128 + the signal.
int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 255;
}

// ------------------------------------------------------------------ probing

struct ProbeResult {
  bool answered = false;
  std::string reason;  // why not
};

// Asks every host at once, `agent HOST true`, within `timeout_s`.
std::vector<ProbeResult> probe_hosts(const std::vector<HostEntry>& hosts, const std::string& agent,
                                     double timeout_s) {
  struct Probe {
    pid_t pid = -1;
    int fd = -1;
    bool done = false;
  };
  std::vector<ProbeResult> results(hosts.size());
  std::vector<Probe> probes(hosts.size());
  const std::vector<std::string> agent_words = split_words(agent);
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (is_this_machine(hosts[i].name)) {
      results[i].answered = true;
      probes[i].done = true;
      continue;
    }
    char path[] = "/tmp/loco-probe-XXXXXX";
    const int fd = ::mkstemp(path);
    if (fd >= 0) ::unlink(path);
    std::vector<std::string> argv = agent_words;
    argv.push_back(hosts[i].name);
    argv.push_back("true");
    try {
      probes[i].pid = spawn(argv, fd);
      probes[i].fd = fd;
    } catch (const Error& e) {
      results[i].reason = e.what();
      probes[i].done = true;
      if (fd >= 0) ::close(fd);
    }
  }
  const auto t0 = Clock::now();
  for (;;) {
    bool all = true;
    for (size_t i = 0; i < hosts.size(); ++i) {
      Probe& p = probes[i];
      if (p.done) continue;
      int status = 0;
      if (::waitpid(p.pid, &status, WNOHANG) == p.pid) {
        p.done = true;
        const int code = exit_code_of(status);
        results[i].answered = code == 0;
        if (code != 0) {
          std::string text(512, '\0');
          const ssize_t n = ::pread(p.fd, text.data(), text.size(), 0);
          text.resize(n > 0 ? size_t(n) : 0);
          while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
          const size_t nl = text.rfind('\n');
          if (nl != std::string::npos) text = text.substr(nl + 1);
          results[i].reason =
              "agent exit " + std::to_string(code) + (text.empty() ? "" : ": " + text);
        }
      } else {
        all = false;
      }
    }
    if (all) break;
    if (seconds_since(t0) > timeout_s) {
      for (size_t i = 0; i < hosts.size(); ++i) {
        Probe& p = probes[i];
        if (p.done) continue;
        ::kill(-p.pid, SIGKILL);
        ::waitpid(p.pid, nullptr, 0);
        p.done = true;
        results[i].reason = "no answer within " + fmt::format("{:g}", timeout_s) + " s";
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (Probe& p : probes)
    if (p.fd >= 0) ::close(p.fd);
  return results;
}

// ------------------------------------------------------------------ the supervisor

class Supervisor {
 public:
  explicit Supervisor(const LaunchOptions& o) : o_(o), agent_(probe_agent(o.agent)) {
    if (!o_.events.empty()) {
      events_.open(o_.events, std::ios::app);
      if (!events_) throw Error("cannot open --events file " + o_.events);
    }
    char tmpl[] = "/tmp/loco-launch-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr)
      throw Error(std::string("cannot create a scratch directory in /tmp: ") +
                  std::strerror(errno));
    scratch_ = tmpl;
  }
  ~Supervisor() {
    std::error_code ec;
    fs::remove_all(scratch_, ec);
  }

  int run();

 private:
  void event(const std::string& what, nlohmann::json fields) {
    fields["event"] = what;
    fields["time"] = unix_now();
    if (events_) events_ << fields.dump() << std::endl;
  }
  // Reads the hostfile and probes its hosts until at least min_nodes answer.
  // Returns the hosts, or an exit code (> 0) through `code`.
  std::vector<HostEntry> hosts_for_launch(int& code);
  // Sleeps `seconds` unless a stop or rescale request arrives. False: stop requested.
  bool pause(double seconds);

  const LaunchOptions& o_;
  std::string agent_;
  std::string scratch_;
  std::ofstream events_;
};

bool Supervisor::pause(double seconds) {
  const int rescales = g_rescale_requests.load();
  const auto t0 = Clock::now();
  while (seconds_since(t0) < seconds) {
    if (g_stop_requests.load() > 0) return false;
    if (g_rescale_requests.load() != rescales) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return g_stop_requests.load() == 0;
}

std::vector<HostEntry> Supervisor::hosts_for_launch(int& code) {
  code = 0;
  const auto t0 = Clock::now();
  int attempt = 0;
  for (;;) {
    std::vector<HostEntry> listed;
    try {
      listed = read_hostfile(o_.hostfile);
    } catch (const Error& e) {
      spdlog::error("loco launch: {}", e.what());
      code = 2;
      return {};
    }
    if (int(listed.size()) < o_.min_nodes) {
      std::vector<std::string> names;
      for (const HostEntry& h : listed) names.push_back(h.name);
      spdlog::error(
          "loco launch: the hostfile {} lists {} host(s){}, fewer than --min-nodes {}: "
          "add hosts to it or lower --min-nodes",
          o_.hostfile, listed.size(), names.empty() ? "" : " (" + join(names, ", ") + ")",
          o_.min_nodes);
      event("give_up", {{"reason", "hostfile lists fewer hosts than --min-nodes"}});
      code = 2;
      return {};
    }
    const std::vector<ProbeResult> probes = probe_hosts(listed, agent_, o_.probe_timeout_s);
    std::vector<bool> answered;
    nlohmann::json record = nlohmann::json::object();
    for (size_t i = 0; i < listed.size(); ++i) {
      answered.push_back(probes[i].answered);
      record[listed[i].name] = probes[i].answered ? "answers" : probes[i].reason;
      if (!probes[i].answered)
        spdlog::warn("[{}] loco launch: host {} does not answer ({})", clock_text(), listed[i].name,
                     probes[i].reason);
    }
    event("probe", {{"hosts", record}});
    const HostChoice choice =
        choose_hosts(listed, answered, o_.min_nodes, o_.max_nodes, o_.ranks_per_node);
    if (choice.error.empty()) return choice.hosts;
    if (choice.not_answering.empty()) {  // a slot count: waiting does not help
      spdlog::error("loco launch: {}: {}", o_.hostfile, choice.error);
      code = 2;
      return {};
    }
    const double waited = seconds_since(t0);
    if (waited >= o_.wait_for_hosts_s) {
      spdlog::error("loco launch: giving up: {} after waiting {:.0f} s (--wait-for-hosts)",
                    choice.error, waited);
      event("give_up", {{"reason", choice.error}});
      code = 3;
      return {};
    }
    ++attempt;
    const double wait = restart_backoff(attempt, o_.backoff_s, o_.max_backoff_s);
    spdlog::warn("[{}] loco launch: {}; probing again in {:.1f} s", clock_text(), choice.error,
                 wait);
    if (!pause(wait)) {
      code = 128 + g_stop_signal.load();
      return {};
    }
  }
}

int Supervisor::run() {
  int restarts = 0, consecutive_failures = 0, launches = 0;
  for (;;) {
    int code = 0;
    const std::vector<HostEntry> hosts = hosts_for_launch(code);
    if (code != 0) return code;
    if (g_stop_requests.load() > 0) return 128 + g_stop_signal.load();
    const int handled_rescales = g_rescale_requests.load();

    const std::string hostfile = scratch_ + "/hostfile-" + std::to_string(launches);
    write_file_atomic(hostfile, mpirun_hostfile(hosts, o_.ranks_per_node));
    std::vector<std::string> argv = {o_.mpirun,
                                     "--hostfile",
                                     hostfile,
                                     "-np",
                                     std::to_string(hosts.size() * size_t(o_.ranks_per_node)),
                                     "--map-by",
                                     "ppr:" + std::to_string(o_.ranks_per_node) + ":node"};
    argv.insert(argv.end(), o_.mpirun_args.begin(), o_.mpirun_args.end());
    const std::vector<std::string> command =
        launches == 0 ? o_.command : restart_command(o_.command);
    argv.insert(argv.end(), command.begin(), command.end());
    std::vector<std::string> names;
    for (const HostEntry& h : hosts) names.push_back(h.name);
    spdlog::info("[{}] loco launch: launch {} on {} node(s) ({}), {} rank(s): {}", clock_text(),
                 launches + 1, hosts.size(), join(names, ", "), hosts.size() * o_.ranks_per_node,
                 join(argv));
    event("launch", {{"launch", launches + 1}, {"hosts", names}, {"argv", argv}});
    const auto t_start = Clock::now();
    pid_t pid = -1;
    try {
      pid = spawn(argv);
    } catch (const Error& e) {
      spdlog::error("loco launch: {}", e.what());
      return 2;
    }
    ++launches;

    // Wait for the job, passing requests on, and watching that its hosts still answer.
    int status = 0, stops_sent = 0;
    bool rescale = false;
    auto last_watch = Clock::now();
    std::optional<Clock::time_point> ending_since;  // when a lost host made us end the job
    bool killed = false;
    for (;;) {
      const pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) break;
      if (r < 0 && errno != EINTR) {
        status = 255 << 8;
        break;
      }
      // A host that vanished without closing its connections (power, a cut link) can leave
      // mpirun waiting on it for minutes, even after the survivors gave up and aborted: end
      // the job ourselves (SIGTERM, then SIGKILL); the surviving nodes' daemons then end
      // their ranks, and the restart below goes on without the host.
      if (ending_since) {
        if (!killed && seconds_since(*ending_since) > kEndGraceSeconds) {
          ::kill(pid, SIGKILL);
          killed = true;
        }
      } else if (o_.watch_interval_s > 0 && !rescale && stops_sent == 0 &&
                 seconds_since(last_watch) >= o_.watch_interval_s) {
        const std::vector<ProbeResult> now = probe_hosts(hosts, agent_, o_.probe_timeout_s);
        last_watch = Clock::now();
        std::vector<std::string> silent;
        for (size_t i = 0; i < hosts.size(); ++i)
          if (!now[i].answered) {
            silent.push_back(hosts[i].name);
            spdlog::warn(
                "[{}] loco launch: host {} of launch {} stopped answering ({}): ending "
                "the job (SIGTERM to mpirun, SIGKILL {:g} s later)",
                clock_text(), hosts[i].name, launches, now[i].reason, kEndGraceSeconds);
          }
        if (!silent.empty()) {
          event("host_lost", {{"launch", launches}, {"hosts", silent}});
          ::kill(pid, SIGTERM);
          ending_since = Clock::now();
        }
      }
      if (g_rescale_requests.load() != handled_rescales && !rescale && stops_sent == 0) {
        rescale = true;
        spdlog::info(
            "[{}] loco launch: rescale requested (SIGUSR1): the run stops at its next "
            "outer sync with a checkpoint, then restarts with the hostfile's hosts",
            clock_text());
        event("rescale", {{"launch", launches}});
        ::kill(pid, SIGUSR1);
      }
      const int stops = g_stop_requests.load();
      if (stops > stops_sent) {
        if (stops_sent == 0) {
          spdlog::warn(
              "[{}] loco launch: stop requested (signal {}): the run stops at its next "
              "outer sync with a checkpoint; no restart (again: stop at once)",
              clock_text(), g_stop_signal.load());
          ::kill(pid, SIGUSR1);
        } else {
          ::kill(pid, SIGTERM);
        }
        stops_sent = stops;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const int exit_code = exit_code_of(status);
    const double ran = seconds_since(t_start);
    spdlog::info("[{}] loco launch: launch {} ended: exit {} after {:.1f} s", clock_text(),
                 launches, exit_code, ran);
    event("exit", {{"launch", launches}, {"code", exit_code}, {"seconds", ran}});
    if (stops_sent > 0) return exit_code == 0 ? 0 : 128 + g_stop_signal.load();

    // Lost hosts make any exit a failure (a survivor may report the lost peer as an error).
    bool lost = false;
    if (exit_code != 0 && !(rescale && exit_code == 128 + SIGUSR1)) {
      const std::vector<ProbeResult> now = probe_hosts(hosts, agent_, o_.probe_timeout_s);
      for (size_t i = 0; i < hosts.size(); ++i)
        if (!now[i].answered) {
          lost = true;
          spdlog::warn("[{}] loco launch: host {} of launch {} does not answer ({})", clock_text(),
                       hosts[i].name, launches, now[i].reason);
        }
    }
    switch (classify_job_end(exit_code, rescale, lost)) {
      case JobEnd::Done:
        spdlog::info(
            "loco launch: the job is done after {} launch(es), {} restart(s) after "
            "failures",
            launches, restarts);
        event("done", {{"launches", launches}, {"restarts", restarts}});
        return 0;
      case JobEnd::Definitive:
        spdlog::error(
            "loco launch: the job failed with exit {} ({}), every host answers: not "
            "restarting",
            exit_code, exit_code == 2 ? "a user error: see its message" : "non-finite");
        event("give_up", {{"reason", "job exit " + std::to_string(exit_code)}});
        return exit_code;
      case JobEnd::Rescale:
        consecutive_failures = 0;
        continue;
      case JobEnd::Failure:
        break;
    }
    if (restarts >= o_.max_restarts) {
      spdlog::error("loco launch: giving up: the job failed {} time(s) (--max-restarts {})",
                    restarts + 1, o_.max_restarts);
      event("give_up", {{"reason", "--max-restarts"}});
      return 3;
    }
    ++restarts;
    consecutive_failures = ran >= o_.healthy_after_s ? 1 : consecutive_failures + 1;
    const double wait = restart_backoff(consecutive_failures, o_.backoff_s, o_.max_backoff_s);
    spdlog::warn(
        "[{}] loco launch: restart {} of at most {} in {:.1f} s (from the newest "
        "checkpoint: --resume auto)",
        clock_text(), restarts, o_.max_restarts, wait);
    event("restart", {{"restart", restarts}, {"backoff_s", wait}});
    if (!pause(wait)) return 128 + g_stop_signal.load();
  }
}

}  // namespace

std::string probe_agent(const std::string& configured) {
  if (!configured.empty()) return configured;
  if (const char* env = std::getenv("OMPI_MCA_plm_rsh_agent"); env != nullptr && *env != '\0') {
    std::string first = env;
    const size_t colon = first.find(':');
    if (colon != std::string::npos) first = first.substr(0, colon);
    while (!first.empty() && first.back() == ' ') first.pop_back();
    if (!first.empty()) return first;
  }
  return "ssh";
}

bool is_this_machine(const std::string& host) {
  if (host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1") return true;
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return false;
  const std::string mine = name;
  return host == mine || host == mine.substr(0, mine.find('.'));
}

int run_supervisor(const LaunchOptions& options) {
  if (options.command.empty()) throw Error("loco launch: no COMMAND given (after --)");
  if (options.min_nodes < 1) throw Error("loco launch: --min-nodes must be >= 1");
  if (options.max_nodes != 0 && options.max_nodes < options.min_nodes)
    throw Error("loco launch: --max-nodes " + std::to_string(options.max_nodes) +
                " is below --min-nodes " + std::to_string(options.min_nodes));
  if (options.ranks_per_node < 1) throw Error("loco launch: --ranks-per-node must be >= 1");
  install_handlers();
  Supervisor s(options);
  return s.run();
}

}  // namespace loco
