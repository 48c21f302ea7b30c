#include "loco/train/resume_checks.hpp"

namespace loco {

std::string training_data_change(const nlohmann::json& meta, const Config& config,
                                 uint64_t data_hash) {
  std::string change;
  auto add = [&](const std::string& what) { change += (change.empty() ? "" : "; ") + what; };
  const nlohmann::json* saved = meta.contains("config") ? &meta["config"] : nullptr;
  std::string old_train;
  if (saved && saved->contains("data") && (*saved)["data"].contains("train") &&
      (*saved)["data"]["train"].is_string())
    old_train = (*saved)["data"]["train"].get<std::string>();
  const bool have_hash = meta.contains(kDataHashKey) && meta[kDataHashKey].is_number_unsigned();
  const bool other_content = have_hash && meta[kDataHashKey].get<uint64_t>() != data_hash;
  const bool other_path = !old_train.empty() && old_train != config.data.train;
  // With a content hash, a moved copy of the same shards is not a change.
  if (other_content || (!have_hash && other_path))
    add("data.train: " + (old_train.empty() ? std::string("?") : old_train) + " -> " +
        config.data.train + (other_content ? " (other content)" : ""));
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
