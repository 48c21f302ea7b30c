// Deterministic token streams. The shards' tokens are cut into windows of seq_len+1 tokens
// (stride seq_len); each epoch shuffles the window order with (seed, epoch), and worker w of
// K takes windows w, w+K, w+2K, … of that order — K workers read disjoint streams. The
// position is two integers, saved in checkpoints and restored exactly.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace loco {

struct StreamPosition {
  uint64_t epoch = 0;
  uint64_t cursor = 0;  // windows this worker has consumed in the current epoch
};

class TokenStream {
 public:
  // shuffle=false reads windows in order (validation).
  TokenStream(const std::string& shard_glob, int seq_len, uint64_t seed, int worker_index,
              int worker_count, bool shuffle = true, int vocab_size = 0);

  // inputs/targets: B*seq_len int32 each; targets are inputs shifted by one token.
  void next_batch(int B, int32_t* inputs, int32_t* targets);

  StreamPosition position() const { return pos_; }
  void restore(const StreamPosition& p);
  void reset() { restore(StreamPosition{}); }

  size_t total_tokens() const { return tokens_.size(); }
  size_t windows_per_worker() const;
  std::string describe() const;
  uint64_t tokens_hash() const { return tokens_hash_; }  // content of every shard, in order  // shards, token count, windows (for logs and hashes)

 private:
  void shuffle_epoch();
  std::string glob_;
  std::vector<std::string> files_;
  std::vector<uint32_t> tokens_;
  uint64_t tokens_hash_ = 0;     // FNV-1a of the tokens, for describe()
  std::vector<uint64_t> order_;  // window start indices for the current epoch
  int seq_len_;
  uint64_t seed_;
  int worker_index_, worker_count_;
  bool shuffle_;
  StreamPosition pos_;
};

}  // namespace loco
