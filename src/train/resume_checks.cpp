#include "loco/train/resume_checks.hpp"

#include <filesystem>

#include "loco/core/error.hpp"
#include "loco/io/checkpoint.hpp"

namespace loco {

namespace fs = std::filesystem;

namespace {

// data.train as written in a config: its path, or "[0.95 a.bin, 0.05 b.bin]" for a mixture.
std::string train_label(const nlohmann::json& train) {
  if (train.is_string()) return train.get<std::string>();
  if (!train.is_array()) return "?";
  std::string s = "[";
  for (const auto& e : train) {
    s += (s.size() > 1 ? ", " : "");
    s += e.contains("weight") ? e["weight"].dump() + " " : std::string();
    s += e.contains("path") && e["path"].is_string() ? e["path"].get<std::string>() : "?";
  }
  return s + "]";
}

}  // namespace

std::string training_data_change(const nlohmann::json& meta, const Config& config,
                                 uint64_t data_hash) {
  std::string change;
  auto add = [&](const std::string& what) { change += (change.empty() ? "" : "; ") + what; };
  const nlohmann::json* saved = meta.contains("config") ? &meta["config"] : nullptr;
  std::string old_train;
  if (saved && saved->contains("data") && (*saved)["data"].contains("train"))
    old_train = train_label((*saved)["data"]["train"]);
  const std::string new_train = train_label(config_to_json(config)["data"]["train"]);
  const bool have_hash = meta.contains(kDataHashKey) && meta[kDataHashKey].is_number_unsigned();
  const bool other_content = have_hash && meta[kDataHashKey].get<uint64_t>() != data_hash;
  const bool other_path = !old_train.empty() && old_train != new_train;
  // With a content hash, a moved copy of the same shards is not a change.
  if (other_content || (!have_hash && other_path))
    add("data.train: " + (old_train.empty() ? std::string("?") : old_train) + " -> " + new_train +
        (other_content ? " (other content)" : ""));
  if (saved && saved->contains("training") && (*saved)["training"].contains("seq_len") &&
      (*saved)["training"]["seq_len"].is_number_integer()) {
    const int old_t = (*saved)["training"]["seq_len"].get<int>();
    if (old_t != config.training.seq_len)
      add("training.seq_len: " + std::to_string(old_t) + " -> " +
          std::to_string(config.training.seq_len));
  }
  return change;
}

}  // namespace loco

namespace loco {

std::string resolve_auto_resume(Communicator& world, const std::string& root) {
  std::error_code ec;
  const bool here = fs::exists(fs::path(root) / "latest", ec);
  const std::vector<uint64_t> seen = world.all_gather_host(here ? 1u : 0u);
  std::string without, with;
  for (size_t r = 0; r < seen.size(); ++r) {
    std::string& list = seen[r] ? with : without;
    list += (list.empty() ? "" : ", ") + std::to_string(r);
  }
  if (!with.empty() && !without.empty())
    throw Error("--resume auto: rank(s) " + with + " see " + (fs::path(root) / "latest").string() +
                " but rank(s) " + without +
                " do not: per-rank checkpoints need one file system "
                "that every rank sees (checkpoints at outer syncs, checkpoint.at_sync, also work "
                "with node-local disks)");
  return here ? "latest" : "";
}

void require_rank_file(const std::string& step_dir, int rank) {
  std::error_code ec;
  const std::string file = checkpoint_rank_file(step_dir, rank);
  if (fs::is_regular_file(file, ec)) return;
  if (fs::is_regular_file(fs::path(step_dir) / "global.bin", ec))
    throw Error(step_dir +
                " holds a checkpoint written at an outer sync (global.bin, "
                "replica-<key>.bin), not per-rank files: resume it with checkpoint.at_sync >= 1 "
                "(it then resumes on any number of replicas)");
  int ranks = 0;
  while (fs::is_regular_file(checkpoint_rank_file(step_dir, ranks), ec)) ++ranks;
  if (ranks > 0)
    throw Error("no " + file + ": " + step_dir + " holds the files of " + std::to_string(ranks) +
                " rank(s), this run has more. " + per_rank_world_size_hint());
}

std::string per_rank_world_size_hint() {
  return "Per-rank checkpoints (checkpoint.interval) resume on the same number of ranks; to "
         "change the number of replicas, write checkpoints at outer syncs (checkpoint.at_sync)";
}

}  // namespace loco
