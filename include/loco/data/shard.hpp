// Token shards in llm.c's format, so existing FineWeb / TinyStories shards work:
// a header of 256 little-endian int32 — [0] magic, [1] version, [2] token count — then the
// tokens: magic 20240520 / version 1 → uint16 tokens; magic 20240801 / version 7 → uint32.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace loco {

constexpr int32_t kShardMagicU16 = 20240520;
constexpr int32_t kShardVersionU16 = 1;
constexpr int32_t kShardMagicU32 = 20240801;
constexpr int32_t kShardVersionU32 = 7;
constexpr int kShardHeaderInts = 256;

// Reads and validates one shard; errors (loco::Error) name the file and what is wrong
// (magic, version, token count vs file size, token id >= vocab_size when vocab_size > 0).
std::vector<uint32_t> read_shard(const std::string& path, int vocab_size = 0);

// Writes atomically (temporary file + rename). uint16 format when every token fits and
// !force_u32, else uint32.
void write_shard(const std::string& path, const std::vector<uint32_t>& tokens,
                 bool force_u32 = false);

// Expands a path or glob (sorted). Throws naming the pattern when nothing matches.
std::vector<std::string> expand_shard_glob(const std::string& pattern);

}  // namespace loco
