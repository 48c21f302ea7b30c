// What a resume may and may not change.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

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

}  // namespace loco
