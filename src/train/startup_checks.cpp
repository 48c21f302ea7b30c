#include "loco/train/startup_checks.hpp"

#include <algorithm>
#include <filesystem>

#include "loco/core/error.hpp"
#include "loco/core/hash.hpp"

namespace loco {

namespace {

std::string rank_list(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

void collect_differences(const nlohmann::json& a, const nlohmann::json& b,
                         const std::string& prefix, std::vector<KeyDifference>& out) {
  if (a.is_object() && b.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
      const auto other = b.find(it.key());
      if (other == b.end())
        out.push_back({key, it->dump(), "(missing)"});
      else
        collect_differences(*it, *other, key, out);
    }
    for (auto it = b.begin(); it != b.end(); ++it)
      if (!a.contains(it.key()))
        out.push_back(
            {prefix.empty() ? it.key() : prefix + "." + it.key(), "(missing)", it->dump()});
    return;
  }
  if (a != b) out.push_back({prefix.empty() ? "(top level)" : prefix, a.dump(), b.dump()});
}

std::string absolute_path(const std::string& p) {
  std::error_code ec;
  const auto abs = std::filesystem::absolute(p, ec);
  return (ec ? std::filesystem::path(p) : abs).lexically_normal().string();
}

}  // namespace

void fail_together(Communicator& world, const std::string& error, const std::string& what) {
  const auto failed = world.all_gather_host(error.empty() ? 0 : 1);
  if (!error.empty()) throw Error(error);
  for (size_t r = 0; r < failed.size(); ++r)
    if (failed[r]) throw Error(what + ": rank " + std::to_string(r) + " failed (see its message)");
}

std::string broadcast_string(Communicator& world, const std::string& value, int root) {
  uint64_t size = world.rank() == root ? value.size() : 0;
  world.broadcast_host(&size, sizeof size, root);
  std::string out = world.rank() == root ? value : std::string(size, '\0');
  if (size > 0) world.broadcast_host(out.data(), size, root);
  return out;
}

std::vector<KeyDifference> json_differences(const nlohmann::json& here,
                                            const nlohmann::json& there) {
  std::vector<KeyDifference> out;
  collect_differences(here, there, "", out);
  return out;
}

void require_same_config(Communicator& world, const nlohmann::json& shared_config) {
  const std::string text = shared_config.dump();
  const auto hashes = world.all_gather_host(hash_string(text));
  const std::vector<int> bad = mismatching_ranks(hashes);
  if (bad.empty()) return;
  // The reference is a rank holding the most common config; the first differing rank says
  // which keys differ from it, and every rank throws that same message.
  int reference = 0;
  while (std::find(bad.begin(), bad.end(), reference) != bad.end()) ++reference;
  const std::string reference_text = broadcast_string(world, text, reference);
  std::string detail;
  if (world.rank() == bad.front()) {
    const auto diffs = json_differences(shared_config, nlohmann::json::parse(reference_text));
    const size_t shown = std::min<size_t>(diffs.size(), 4);
    for (size_t i = 0; i < shown; ++i)
      detail += (i ? ", " : "") + diffs[i].key + " (" + diffs[i].here + " on rank " +
                std::to_string(bad.front()) + ", " + diffs[i].there + " on rank " +
                std::to_string(reference) + ")";
    if (diffs.size() > shown)
      detail += " and " + std::to_string(diffs.size() - shown) + " more key(s)";
  }
  detail = broadcast_string(world, detail, bad.front());
  throw Error("ranks disagree on the resolved config: rank(s) " + rank_list(bad) +
              " differ from rank " + std::to_string(reference) + "; rank " +
              std::to_string(bad.front()) + " in " + detail +
              " (every rank must run the same config, data and code)");
}

void require_same_run_directory(Communicator& world, const std::string& run_dir,
                                const std::string& checkpoint_root) {
  if (world.size() == 1) return;
  const std::string mine = absolute_path(run_dir) + "\n" + absolute_path(checkpoint_root);
  const auto hashes = world.all_gather_host(hash_string(mine));
  if (mismatching_ranks(hashes).empty()) return;
  // Name every rank whose directories differ from rank 0's (rank 0 writes `latest`).
  const std::string root_dirs = broadcast_string(world, mine, 0);
  std::string detail;
  for (int r = 1; r < world.size(); ++r) {
    if (hashes[r] == hashes[0]) continue;
    const std::string theirs = broadcast_string(world, mine, r);
    const std::string run = theirs.substr(0, theirs.find('\n'));
    const std::string ckpt = theirs.substr(theirs.find('\n') + 1);
    detail += "; rank " + std::to_string(r) + ": run directory " + run +
              (ckpt == root_dirs.substr(root_dirs.find('\n') + 1) ? "" : ", checkpoints " + ckpt);
  }
  throw Error(
      "ranks disagree on the run directory (--out / output.dir, checkpoint.dir): rank "
      "0: run directory " +
      root_dirs.substr(0, root_dirs.find('\n')) + ", checkpoints " +
      root_dirs.substr(root_dirs.find('\n') + 1) + detail +
      " (every rank must write into the same directories: rank 0 points `latest` at "
      "a step that must hold every rank's checkpoint file)");
}

}  // namespace loco
