// The run directory's life cycle (rank 0):
//
//   1. claim — before anything else: create the directory if needed, take an exclusive lock
//      on <dir>/.loco.lock (a second run into the same directory is refused at once, naming
//      the process holding it), and refuse a fresh start into a directory that already holds
//      a run (config.json, metrics.jsonl, summary.json or a checkpoint) unless the run is
//      resumed or ExistingRun::Overwrite was asked for;
//   2. begin — only after every rank has passed its start-up checks: with Overwrite, remove
//      the previous run's files; write config.json. Nothing in the directory changes before.
//
// The lock is released when the RunDirectory is destroyed or the process ends (flock).
#pragma once
#include <string>
#include <vector>

#include "loco/config/config.hpp"

namespace loco {

enum class ExistingRun { Refuse, Overwrite };

// Files of a previous run in `dir` / `checkpoint_root` ("config.json", "checkpoints/latest",
// "checkpoints/step-000100", ...), empty when there are none.
std::vector<std::string> previous_run_files(const std::string& dir,
                                            const std::string& checkpoint_root);

class RunDirectory {
 public:
  // Throws loco::Error naming the directory and what is wrong.
  RunDirectory(std::string dir, std::string checkpoint_root, bool resuming, ExistingRun existing);
  ~RunDirectory();
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;

  void begin(const Config& config);
  const std::string& path() const { return dir_; }

 private:
  std::string dir_, checkpoint_root_;
  ExistingRun existing_;
  int lock_fd_ = -1;
  bool created_ = false;  // the directory did not exist before this run
  bool began_ = false;
};

}  // namespace loco
