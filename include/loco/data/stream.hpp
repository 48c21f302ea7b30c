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
//
// A weighted mixture of sources (data.train as a list): the deck is then the mixture's
// endless sequence of slots (loco/data/mixture.hpp). Slot m is the `index`-th window of source
// `source`; each source runs through its own epochs, each shuffled with (seed, source, epoch).
// The deck has no epochs of its own (windows() is 2^62, never reached, so no tail is ever
// skipped): which windows a run reads depends only on how many slots were dealt, not on the
// number of workers or on restarts, and the position format (epoch 0, cursor, start) is the
// single source's.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "loco/data/mixture.hpp"

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
  // Mixtures: the source (0-based; epoch, slot and first_token are then that source's) and
  // the slot of the mixture's deck. -1: not a mixture.
  int source = -1;
  uint64_t deck_slot = 0;
};

// One source of a mixture: a shard path or glob and its weight (normalised over the sources).
struct MixtureSource {
  std::string glob;
  double weight = 1.0;
};

// Slots of a mixture's deck: never reached (at 2^62 windows).
constexpr uint64_t kMixtureDeckSlots = uint64_t(1) << 62;

class TokenStream {
 public:
  // shuffle=false reads windows in order (validation).
  TokenStream(const std::string& shard_glob, int seq_len, uint64_t seed, int worker_index,
              int worker_count, bool shuffle = true, int vocab_size = 0);
  // A weighted mixture (always shuffled). Every source needs at least one window; errors
  // name the source's glob and its index.
  TokenStream(const std::vector<MixtureSource>& sources, int seq_len, uint64_t seed,
              int worker_index, int worker_count, int vocab_size = 0);

  // inputs/targets: B*seq_len int32 each; targets are inputs shifted by one token.
  void next_batch(int B, int32_t* inputs, int32_t* targets);

  StreamPosition position() const { return pos_; }
  void restore(const StreamPosition& p);
  void reset() { restore(StreamPosition{}); }

  // Called for every window next_batch() reads, in order (empty: nothing is called).
  void set_window_observer(std::function<void(const WindowRead&)> observer) {
    observer_ = std::move(observer);
  }

  size_t total_tokens() const;
  uint64_t windows() const;  // windows per epoch (every worker together); mixtures: the deck's
  int worker_count() const { return worker_count_; }
  // Windows each worker reads in an epoch that starts at slot 0 (the first deal).
  size_t windows_per_worker() const;
  std::string describe() const;
  // Content of every shard, in order (for logs and hashes); mixtures: of every source and the
  // rounded weights.
  uint64_t tokens_hash() const { return tokens_hash_; }

  bool is_mixture() const { return mixture_.has_value(); }
  // Mixtures: the sources, and the windows of each that the workers together have been dealt
  // when every worker stands at this stream's position (the run's total, restarts included).
  struct SourceUse {
    std::string glob;
    double share = 0.0;  // the weight actually used
    uint64_t tokens = 0;
    uint64_t windows = 0;  // per epoch of the source
    uint64_t windows_read = 0;
  };
  std::vector<SourceUse> source_use() const;

 private:
  struct Source {
    std::string glob;
    std::vector<std::string> files;
    std::vector<uint32_t> tokens;
    uint64_t hash = 0;
    uint64_t windows = 0;
    std::vector<uint64_t> order;  // window starts of epoch `order_epoch`
    uint64_t order_epoch = ~uint64_t(0);
  };
  void shuffle_epoch();
  // Mixtures: the window at slot `deck_slot` of the deck (shuffling its source's epoch when
  // needed).
  WindowRead mixture_window(uint64_t deck_slot);
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
  std::optional<MixtureSchedule> mixture_;  // set: a mixture of `sources_`
  std::vector<Source> sources_;
};

}  // namespace loco
