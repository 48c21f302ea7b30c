// Scratch files for the MPI tests that run the trainer: a temporary directory made by rank 0
// (the only rank that writes run files) with its path broadcast to every rank, removed by
// rank 0 at the end of the test case; and a reader for metrics.jsonl.
#pragma once
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <system_error>
#include <vector>

#include "loco/comm/communicator.hpp"

namespace loco::testing {

class TmpDir {
 public:
  explicit TmpDir(Communicator& world, const std::string& prefix = "loco-mpi") : world_(world) {
    char buf[4096] = {0};
    if (world.rank() == 0) {
      std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX"));
      std::vector<char> t(tmpl.begin(), tmpl.end());
      t.push_back('\0');
      if (::mkdtemp(t.data()) != nullptr) std::strncpy(buf, t.data(), sizeof buf - 1);
    }
    world.broadcast_host(buf, sizeof buf, 0);
    path_ = buf;
  }
  ~TmpDir() {
    if (world_.rank() == 0 && !path_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  TmpDir(const TmpDir&) = delete;
  TmpDir& operator=(const TmpDir&) = delete;

  // A run directory below the scratch directory (created on rank 0).
  std::string run_dir(const std::string& name) const {
    const std::string d = path_ + "/" + name;
    if (world_.rank() == 0) std::filesystem::create_directories(d);
    return d;
  }
  bool ok() const { return !path_.empty(); }

 private:
  Communicator& world_;
  std::string path_;
};

// One JSON object per non-empty line.
inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace loco::testing
