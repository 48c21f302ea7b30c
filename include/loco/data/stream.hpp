// Deterministic token streams. The shards' tokens are cut into windows of seq_len+1 tokens
// (stride seq_len); each epoch shuffles the window order with (seed, epoch), and worker w of
// K takes slots w, w+K, w+2K, … of that order — K workers read disjoint streams. The
// position is a few integers, saved in checkpoints and restored exactly.
//
// One global cursor. K workers that step together have consumed exactly the slots
// [0, start + K·cursor) of the epoch's order: the epoch's windows are dealt out like cards
// from one deck. That is what lets a run change its number of workers (elastic training)
// without reading a window twice or skipping one: the new workers are dealt the rest of the
// deck from `global_slot()` on (`redeal`), each taking slots start + w, start + w + K', …
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace loco {

struct StreamPosition {
  uint64_t epoch = 0;
  uint64_t cursor = 0;  // windows this worker has consumed in the current epoch (this deal)
  // The slot of the epoch's order at which the current deal began: 0, unless the number of
  // workers changed during this epoch.
  uint64_t start = 0;
};

// Where K workers that all stand at `p` are in their epoch: the next slot of the deck.
uint64_t global_slot(const StreamPosition& p, int worker_count);

// The position for every worker of a new deal among `new_count` workers, continuing from
// slot `slot` of epoch `epoch`, in an epoch of `windows` windows. When fewer than
// `new_count` slots are left in the epoch, those are skipped (as the tail of every epoch
// that K does not divide is) and the deal starts at the next epoch's slot 0.
StreamPosition redeal(uint64_t epoch, uint64_t slot, int new_count, uint64_t windows);

// One window read by a stream (for exactness checks: which windows each worker consumed).
struct WindowRead {
  uint64_t epoch = 0;
  uint64_t slot = 0;         // index into the epoch's (shuffled) order
  uint64_t first_token = 0;  // the window covers tokens [first_token, first_token + seq_len]
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

  // Called for every window next_batch() reads, in order (empty: nothing is called).
  void set_window_observer(std::function<void(const WindowRead&)> observer) {
    observer_ = std::move(observer);
  }

  size_t total_tokens() const { return tokens_.size(); }
  uint64_t windows() const;  // windows per epoch (every worker together)
  int worker_count() const { return worker_count_; }
  // Windows each worker reads in an epoch that starts at slot 0 (the first deal).
  size_t windows_per_worker() const;
  std::string describe() const;
  uint64_t tokens_hash() const {
    return tokens_hash_;
  }  // content of every shard, in order  // shards, token count, windows (for logs and hashes)

 private:
  void shuffle_epoch();
  // Windows each worker reads in the current deal (from pos_.start to the epoch's end).
  uint64_t windows_this_deal() const;
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
  std::function<void(const WindowRead&)> observer_;
};

}  // namespace loco
