// What a resume may and may not change.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "loco/comm/communicator.hpp"
#include "loco/config/config.hpp"

namespace loco {

// The checkpoint metadata key holding the training data's content hash.
inline constexpr const char* kDataHashKey = "data_hash";

// How the training data of this run differs from the checkpoint's: the shards' content
// (`data_hash`, or data.train when the checkpoint predates the hash) and training.seq_len,
// e.g. "data.train: /a/x.bin -> /b/y.bin (other content); training.seq_len: 128 -> 64".
// "" when nothing changed. The data position saved in the checkpoint only means something
// for the same windows of the same tokens.
std::string training_data_change(const nlohmann::json& meta, const Config& config,
                                 uint64_t data_hash);

// `--resume auto` with per-rank checkpoints (collective): "latest" when <root>/latest exists,
// "" (a fresh start) when it does not. Every rank must see the same (per-rank checkpoints
// live on one file system); otherwise every rank throws naming the ranks that see none.
std::string resolve_auto_resume(Communicator& world, const std::string& root);

// Per-rank resume: <step_dir>/rank-<rank>.bin must be there. When the directory holds a
// checkpoint written at outer syncs instead (global.bin), the error says how to resume it.
void require_rank_file(const std::string& step_dir, int rank);
// What to do when a per-rank checkpoint has another number of ranks than this run.
std::string per_rank_world_size_hint();

}  // namespace loco
