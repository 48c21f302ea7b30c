// Hostfiles and the supervisor's decisions: see include/loco/launch/hostfile.hpp.
#include "loco/launch/hostfile.hpp"

#include <algorithm>
#include <cmath>
#include <csignal>
#include <set>
#include <sstream>

#include "loco/core/error.hpp"
#include "loco/core/files.hpp"

namespace loco {

namespace {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return {};
  const size_t b = s.find_last_not_of(" \t\r");
  return s.substr(a, b - a + 1);
}

bool valid_host_name(const std::string& h) {
  if (h.empty() || h.size() > 253) return false;
  for (char c : h) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == '_' || c == ':';
    if (!ok) return false;
  }
  return h[0] != '-';
}

}  // namespace

std::vector<HostEntry> parse_hostfile(const std::string& text, const std::string& source) {
  std::vector<HostEntry> hosts;
  std::set<std::string> seen;
  std::istringstream in(text);
  std::string raw;
  int line_no = 0;
  while (std::getline(in, raw)) {
    ++line_no;
    const std::string line = trim(raw.substr(0, raw.find('#')));
    if (line.empty()) continue;
    const std::string where = source + ":" + std::to_string(line_no) + ": ";
    std::istringstream words(line);
    HostEntry e;
    e.line = line_no;
    words >> e.name;
    if (!valid_host_name(e.name))
      throw Error(where + "\"" + e.name + "\" is not a host name (want \"HOST [slots=N]\")");
    std::string word;
    while (words >> word) {
      if (word.rfind("slots=", 0) == 0 || word.rfind("max_slots=", 0) == 0) {
        const bool max = word[0] == 'm';
        const std::string value = word.substr(max ? 10 : 6);
        size_t used = 0;
        int n = 0;
        try {
          n = std::stoi(value, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != value.size() || value.empty() || n < 1)
          throw Error(where + word + ": want a whole number of slots >= 1");
        if (!max) e.slots = n;
      } else {
        throw Error(where + "unknown field \"" + word + "\" (want \"HOST [slots=N]\")");
      }
    }
    if (!seen.insert(e.name).second) throw Error(where + "host " + e.name + " is listed twice");
    hosts.push_back(e);
  }
  return hosts;
}

std::vector<HostEntry> read_hostfile(const std::string& path) {
  return parse_hostfile(read_file(path), path);
}

HostChoice choose_hosts(const std::vector<HostEntry>& listed, const std::vector<bool>& answered,
                        int min_nodes, int max_nodes, int ranks_per_node) {
  HostChoice c;
  if (answered.size() != listed.size())
    throw Error("choose_hosts: one answer per listed host expected");
  for (size_t i = 0; i < listed.size(); ++i) {
    if (!answered[i]) {
      c.not_answering.push_back(listed[i].name);
      continue;
    }
    if (listed[i].slots < ranks_per_node) {
      c.hosts.clear();
      c.error = "host " + listed[i].name + " (line " + std::to_string(listed[i].line) +
                ") offers " + std::to_string(listed[i].slots) + " slot(s), fewer than the " +
                std::to_string(ranks_per_node) + " rank(s) per node of this job (--ranks-per-node)";
      return c;
    }
    if (max_nodes <= 0 || int(c.hosts.size()) < max_nodes) c.hosts.push_back(listed[i]);
  }
  if (int(c.hosts.size()) < min_nodes) {
    std::string missing;
    for (const std::string& h : c.not_answering) missing += (missing.empty() ? "" : ", ") + h;
    c.error = std::to_string(c.hosts.size()) + " host(s) available, fewer than --min-nodes " +
              std::to_string(min_nodes) +
              (c.not_answering.empty()
                   ? std::string(" (the hostfile lists ") + std::to_string(listed.size()) + ")"
                   : " (not answering: " + missing + ")");
    c.hosts.clear();
  }
  return c;
}

std::string mpirun_hostfile(const std::vector<HostEntry>& hosts, int ranks_per_node) {
  std::string out;
  for (const HostEntry& h : hosts)
    out += h.name + " slots=" + std::to_string(ranks_per_node) + "\n";
  return out;
}

std::vector<std::string> restart_command(const std::vector<std::string>& command) {
  std::vector<std::string> out;
  for (size_t i = 0; i < command.size(); ++i) {
    const std::string& a = command[i];
    if (a == "--overwrite" || a.rfind("--resume=", 0) == 0) continue;
    if (a == "--resume") {
      ++i;  // and its value
      continue;
    }
    out.push_back(a);
  }
  out.push_back("--resume");
  out.push_back("auto");
  return out;
}

JobEnd classify_job_end(int exit_code, bool rescale_requested, bool hosts_lost) {
  if (exit_code == 0) return JobEnd::Done;
  if (rescale_requested && exit_code == 128 + SIGUSR1) return JobEnd::Rescale;
  if ((exit_code == 1 || exit_code == 2) && !hosts_lost) return JobEnd::Definitive;
  return JobEnd::Failure;
}

double restart_backoff(int consecutive_failures, double base, double cap) {
  if (consecutive_failures < 1) return 0.0;
  const double b = base * std::ldexp(1.0, std::min(consecutive_failures - 1, 30));
  return std::min(b, cap);
}

}  // namespace loco
