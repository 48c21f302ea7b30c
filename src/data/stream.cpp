// Deterministic token streams: see include/loco/data/stream.hpp.
//
// Windows: window i covers tokens [i*seq_len, i*seq_len + seq_len + 1); there are
// W = (N - 1) / seq_len of them for N tokens. Each worker reads W / K windows per epoch (the
// same count for every worker, so data-parallel workers step together); the W % K windows at
// the tail of an epoch's order are skipped that epoch. After a redeal at slot s (the number
// of workers changed mid-epoch) each worker reads (W - s) / K' more windows that epoch, and
// the (W - s) % K' at the tail are skipped. The order is shuffled per epoch with
// std::mt19937_64 (its output is fixed by the standard) seeded from (seed, epoch), and our own
// Fisher–Yates with unbiased rejection sampling (std::shuffle and std::uniform_int_distribution
// are implementation-defined), so every platform reads the same windows.
#include "loco/data/stream.hpp"

#include <cstdio>
#include <limits>
#include <random>
#include <sstream>
#include <utility>

#include "loco/core/error.hpp"
#include "loco/data/shard.hpp"

namespace loco {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform integer in [0, bound) without modulo bias; bound > 0.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  for (;;) {
    const uint64_t r = rng();
    if (r >= threshold) return r % bound;
  }
}

uint64_t total_windows(size_t tokens, int seq_len) {
  return tokens == 0 ? 0 : (static_cast<uint64_t>(tokens) - 1) / static_cast<uint64_t>(seq_len);
}

}  // namespace

uint64_t global_slot(const StreamPosition& p, int worker_count) {
  return p.start + static_cast<uint64_t>(worker_count) * p.cursor;
}

StreamPosition redeal(uint64_t epoch, uint64_t slot, int new_count, uint64_t windows) {
  if (new_count < 1) throw Error("redeal: the number of workers must be >= 1");
  if (slot > windows)
    throw Error("redeal: slot " + std::to_string(slot) + " is past the epoch's " +
                std::to_string(windows) + " windows");
  if ((windows - slot) / static_cast<uint64_t>(new_count) == 0) return {epoch + 1, 0, 0};
  return {epoch, 0, slot};
}

TokenStream::TokenStream(const std::string& shard_glob, int seq_len, uint64_t seed,
                         int worker_index, int worker_count, bool shuffle, int vocab_size)
    : glob_(shard_glob),
      seq_len_(seq_len),
      seed_(seed),
      worker_index_(worker_index),
      worker_count_(worker_count),
      shuffle_(shuffle) {
  if (seq_len < 1)
    throw Error("token stream " + shard_glob + ": seq_len " + std::to_string(seq_len) +
                " must be >= 1");
  if (worker_count < 1 || worker_index < 0 || worker_index >= worker_count)
    throw Error("token stream " + shard_glob + ": worker index " + std::to_string(worker_index) +
                " is not in [0, " + std::to_string(worker_count) + ")");

  files_ = expand_shard_glob(shard_glob);
  for (const std::string& f : files_) {
    std::vector<uint32_t> t = read_shard(f, vocab_size);
    if (tokens_.empty())
      tokens_ = std::move(t);
    else
      tokens_.insert(tokens_.end(), t.begin(), t.end());
  }

  uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a over 32-bit tokens
  uint32_t max_token = 0;
  for (uint32_t t : tokens_) {
    h = (h ^ t) * 0x100000001B3ull;
    max_token = t > max_token ? t : max_token;
  }
  tokens_hash_ = h;
  if (max_token > static_cast<uint32_t>(std::numeric_limits<int32_t>::max()))
    throw Error("token stream " + shard_glob + ": token " + std::to_string(max_token) +
                " does not fit the int32 batches");

  const uint64_t windows = total_windows(tokens_.size(), seq_len_);
  if (windows / static_cast<uint64_t>(worker_count_) == 0)
    throw Error("token stream " + shard_glob + ": " + std::to_string(tokens_.size()) +
                " tokens give " + std::to_string(windows) +
                " windows of seq_len+1 = " + std::to_string(seq_len_ + 1) + " tokens (seq_len " +
                std::to_string(seq_len_) + "), fewer than one per worker for " +
                std::to_string(worker_count_) + " workers (need at least " +
                std::to_string(static_cast<uint64_t>(seq_len_) * worker_count_ + 1) + " tokens)");
  pos_ = StreamPosition{};
  shuffle_epoch();
}

uint64_t TokenStream::windows() const { return total_windows(tokens_.size(), seq_len_); }

size_t TokenStream::windows_per_worker() const {
  return static_cast<size_t>(windows() / static_cast<uint64_t>(worker_count_));
}

uint64_t TokenStream::windows_this_deal() const {
  const uint64_t w = windows();
  return pos_.start >= w ? 0 : (w - pos_.start) / static_cast<uint64_t>(worker_count_);
}

void TokenStream::shuffle_epoch() {
  const uint64_t windows = total_windows(tokens_.size(), seq_len_);
  order_.resize(windows);
  for (uint64_t i = 0; i < windows; ++i) order_[i] = i * static_cast<uint64_t>(seq_len_);
  if (!shuffle_ || windows < 2) return;
  std::mt19937_64 rng(splitmix64(splitmix64(seed_) ^ pos_.epoch));
  for (uint64_t i = windows - 1; i > 0; --i) {
    const uint64_t j = uniform_below(rng, i + 1);
    std::swap(order_[i], order_[j]);
  }
}

void TokenStream::next_batch(int B, int32_t* inputs, int32_t* targets) {
  if (B < 1)
    throw Error("token stream " + glob_ + ": batch size " + std::to_string(B) + " must be >= 1");
  LOCO_CHECK(inputs != nullptr && targets != nullptr, "next_batch needs output buffers");
  const size_t L = static_cast<size_t>(seq_len_);
  for (int b = 0; b < B; ++b) {
    const uint64_t slot = pos_.start + static_cast<uint64_t>(worker_index_) +
                          static_cast<uint64_t>(worker_count_) * pos_.cursor;
    LOCO_CHECK(pos_.cursor < windows_this_deal() && slot < order_.size(),
               "stream cursor out of range");
    if (observer_) observer_(WindowRead{pos_.epoch, slot, order_[slot]});
    const uint32_t* w = tokens_.data() + order_[slot];
    int32_t* in = inputs + static_cast<size_t>(b) * L;
    int32_t* tg = targets + static_cast<size_t>(b) * L;
    for (size_t i = 0; i < L; ++i) {
      in[i] = static_cast<int32_t>(w[i]);
      tg[i] = static_cast<int32_t>(w[i + 1]);
    }
    // Keep the position canonical: after the epoch's last window it reads (epoch + 1, 0, 0).
    if (++pos_.cursor == windows_this_deal()) {
      ++pos_.epoch;
      pos_.cursor = 0;
      pos_.start = 0;
      shuffle_epoch();
    }
  }
}

void TokenStream::restore(const StreamPosition& p) {
  const uint64_t w = windows();
  const uint64_t per_worker =
      p.start >= w ? 0 : (w - p.start) / static_cast<uint64_t>(worker_count_);
  if (p.cursor >= per_worker)
    throw Error("token stream " + glob_ + ": cannot restore position (epoch " +
                std::to_string(p.epoch) + ", cursor " + std::to_string(p.cursor) + ", start " +
                std::to_string(p.start) + "): the cursor must be below the " +
                std::to_string(per_worker) + " windows per worker left in the epoch after slot " +
                std::to_string(p.start) + " (did the data or seq_len/worker count change?)");
  const bool reshuffle = p.epoch != pos_.epoch || order_.empty();
  pos_ = p;
  if (reshuffle) shuffle_epoch();
}

std::string TokenStream::describe() const {
  std::ostringstream s;
  s << "glob '" << glob_ << "': " << files_.size() << (files_.size() == 1 ? " shard" : " shards")
    << " [";
  if (files_.size() <= 3) {
    for (size_t i = 0; i < files_.size(); ++i) s << (i ? ", " : "") << files_[i];
  } else {
    s << files_.front() << ", ..., " << files_.back();
  }
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(tokens_hash_));
  s << "], " << tokens_.size() << " tokens (fnv1a " << hash << "), seq_len " << seq_len_ << ", "
    << total_windows(tokens_.size(), seq_len_) << " windows, worker " << worker_index_ << " of "
    << worker_count_ << " reads " << windows_per_worker() << " per epoch, "
    << (shuffle_ ? "shuffled with seed " + std::to_string(seed_) : std::string("in order"));
  return s.str();
}

}  // namespace loco
