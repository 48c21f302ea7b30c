// Start-up agreement between the ranks of a run: every check either passes on every rank or
// makes every rank throw the same kind of message, so that no rank is left waiting in a
// collective that the others never reach.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loco/comm/communicator.hpp"

namespace loco {

// Every rank passes its own `error` ("" = fine). When any rank failed, every rank throws
// loco::Error: a failed rank its own message, the others "<what>: rank R failed (see its
// message)" naming the lowest failed rank.
void fail_together(Communicator& world, const std::string& error, const std::string& what);

// `value` from rank `root` on every rank (a host broadcast of its size, then its bytes).
std::string broadcast_string(Communicator& world, const std::string& value, int root);

// Keys (dotted paths) whose values differ between two JSON documents, in document order,
// with each side's value: {"training.steps", "8", "6"}. Objects are compared key by key;
// anything else as a whole.
struct KeyDifference {
  std::string key, here, there;
};
std::vector<KeyDifference> json_differences(const nlohmann::json& here,
                                            const nlohmann::json& there);

// The resolved config (without the paths that may differ between nodes) must be the same on
// every rank; otherwise every rank throws naming the differing ranks and the first keys that
// differ, with both values.
void require_same_config(Communicator& world, const nlohmann::json& shared_config);

// Every rank must write into the same run directory and checkpoint root: rank 0 points
// `latest` at a step whose files every rank wrote there. Otherwise every rank throws naming
// the ranks and their directories.
void require_same_run_directory(Communicator& world, const std::string& run_dir,
                                const std::string& checkpoint_root);

}  // namespace loco
