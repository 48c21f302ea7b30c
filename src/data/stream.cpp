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

// The shards of `glob`, concatenated; `hash` = FNV-1a over the 32-bit tokens.
void load_tokens(const std::string& glob, int vocab_size, std::vector<std::string>& files,
                 std::vector<uint32_t>& tokens, uint64_t& hash) {
  files = expand_shard_glob(glob);
  for (const std::string& f : files) {
    std::vector<uint32_t> t = read_shard(f, vocab_size);
    if (tokens.empty())
      tokens = std::move(t);
    else
      tokens.insert(tokens.end(), t.begin(), t.end());
  }
  uint64_t h = 0xCBF29CE484222325ull;
  uint32_t max_token = 0;
  for (uint32_t t : tokens) {
    h = (h ^ t) * 0x100000001B3ull;
    max_token = t > max_token ? t : max_token;
  }
  hash = h;
  if (max_token > static_cast<uint32_t>(std::numeric_limits<int32_t>::max()))
    throw Error("token stream " + glob + ": token " + std::to_string(max_token) +
                " does not fit the int32 batches");
}

// Window starts of one epoch: in order, or shuffled with `rng_seed`.
void fill_order(std::vector<uint64_t>& order, uint64_t windows, int seq_len, bool shuffle,
                uint64_t rng_seed) {
  order.resize(windows);
  for (uint64_t i = 0; i < windows; ++i) order[i] = i * static_cast<uint64_t>(seq_len);
  if (!shuffle || windows < 2) return;
  std::mt19937_64 rng(rng_seed);
  for (uint64_t i = windows - 1; i > 0; --i) {
    const uint64_t j = uniform_below(rng, i + 1);
    std::swap(order[i], order[j]);
  }
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

  load_tokens(shard_glob, vocab_size, files_, tokens_, tokens_hash_);
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

TokenStream::TokenStream(const std::vector<MixtureSource>& sources, int seq_len, uint64_t seed,
                         int worker_index, int worker_count, int vocab_size)
    : glob_("mixture"),
      seq_len_(seq_len),
      seed_(seed),
      worker_index_(worker_index),
      worker_count_(worker_count),
      shuffle_(true) {
  if (seq_len < 1)
    throw Error("token stream (mixture): seq_len " + std::to_string(seq_len) + " must be >= 1");
  if (worker_count < 1 || worker_index < 0 || worker_index >= worker_count)
    throw Error("token stream (mixture): worker index " + std::to_string(worker_index) +
                " is not in [0, " + std::to_string(worker_count) + ")");
  std::vector<double> weights;
  for (const MixtureSource& m : sources) weights.push_back(m.weight);
  mixture_.emplace(weights, seed);  // throws on bad weights, naming the source's index
  uint64_t h = 0xCBF29CE484222325ull;
  for (size_t k = 0; k < sources.size(); ++k) {
    Source src;
    src.glob = sources[k].glob;
    const std::string name =
        "token stream: mixture source " + std::to_string(k) + " (" + src.glob + ")";
    try {
      load_tokens(src.glob, vocab_size, src.files, src.tokens, src.hash);
    } catch (const Error& e) {
      throw Error(name + ": " + e.what());
    }
    src.windows = total_windows(src.tokens.size(), seq_len_);
    if (src.windows == 0)
      throw Error(name + ": " + std::to_string(src.tokens.size()) +
                  " tokens give no window of seq_len+1 = " + std::to_string(seq_len_ + 1) +
                  " tokens");
    // The content, its length and the weight actually used: a changed weight is changed data.
    for (uint64_t v : {src.hash, uint64_t(src.tokens.size()), mixture_->integer_weights()[k]})
      h = (h ^ v) * 0x100000001B3ull;
    sources_.push_back(std::move(src));
  }
  tokens_hash_ = h;
  pos_ = StreamPosition{};
}

size_t TokenStream::total_tokens() const {
  if (!mixture_) return tokens_.size();
  size_t n = 0;
  for (const Source& s : sources_) n += s.tokens.size();
  return n;
}

uint64_t TokenStream::windows() const {
  return mixture_ ? kMixtureDeckSlots : total_windows(tokens_.size(), seq_len_);
}

WindowRead TokenStream::mixture_window(uint64_t deck_slot) {
  const MixtureSchedule::Pick pick = mixture_->locate(deck_slot);
  Source& src = sources_[pick.source];
  const uint64_t epoch = pick.index / src.windows, slot = pick.index % src.windows;
  if (src.order_epoch != epoch) {
    // Every source its own stream of permutations: (seed, source, epoch).
    const uint64_t source_seed =
        splitmix64(splitmix64(seed_) + 0x9E3779B97F4A7C15ull * (pick.source + 1));
    fill_order(src.order, src.windows, seq_len_, /*shuffle=*/true, splitmix64(source_seed ^ epoch));
    src.order_epoch = epoch;
  }
  return WindowRead{epoch, slot, src.order[slot], static_cast<int>(pick.source), deck_slot};
}

std::vector<TokenStream::SourceUse> TokenStream::source_use() const {
  std::vector<SourceUse> out;
  if (!mixture_) return out;
  // Every worker at pos_: slots [0, epoch·deck + global_slot) have been dealt.
  const uint64_t dealt = pos_.epoch * kMixtureDeckSlots + global_slot(pos_, worker_count_);
  for (size_t k = 0; k < sources_.size(); ++k)
    out.push_back({sources_[k].glob, mixture_->share(k), sources_[k].tokens.size(),
                   sources_[k].windows, mixture_->count_before(k, dealt)});
  return out;
}

size_t TokenStream::windows_per_worker() const {
  return static_cast<size_t>(windows() / static_cast<uint64_t>(worker_count_));
}

uint64_t TokenStream::windows_this_deal() const {
  const uint64_t w = windows();
  return pos_.start >= w ? 0 : (w - pos_.start) / static_cast<uint64_t>(worker_count_);
}

void TokenStream::shuffle_epoch() {
  if (mixture_) return;  // each source shuffles its own epochs (mixture_window)
  fill_order(order_, total_windows(tokens_.size(), seq_len_), seq_len_, shuffle_,
             splitmix64(splitmix64(seed_) ^ pos_.epoch));
}

void TokenStream::next_batch(int B, int32_t* inputs, int32_t* targets) {
  if (B < 1)
    throw Error("token stream " + glob_ + ": batch size " + std::to_string(B) + " must be >= 1");
  LOCO_CHECK(inputs != nullptr && targets != nullptr, "next_batch needs output buffers");
  const size_t L = static_cast<size_t>(seq_len_);
  for (int b = 0; b < B; ++b) {
    const uint64_t slot = pos_.start + static_cast<uint64_t>(worker_index_) +
                          static_cast<uint64_t>(worker_count_) * pos_.cursor;
    const uint32_t* w = nullptr;
    if (mixture_) {
      LOCO_CHECK(pos_.epoch < 4 && pos_.cursor < windows_this_deal(), "stream cursor out of range");
      const WindowRead read = mixture_window(pos_.epoch * kMixtureDeckSlots + slot);
      if (observer_) observer_(read);
      w = sources_[size_t(read.source)].tokens.data() + read.first_token;
    } else {
      LOCO_CHECK(pos_.cursor < windows_this_deal() && slot < order_.size(),
                 "stream cursor out of range");
      if (observer_) observer_(WindowRead{pos_.epoch, slot, order_[slot]});
      w = tokens_.data() + order_[slot];
    }
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
  if (mixture_) {
    s << "mixture of " << sources_.size() << " sources, seq_len " << seq_len_
      << ", shuffled with seed " << seed_ << " (worker " << worker_index_ << " of " << worker_count_
      << " reads deck slots " << worker_index_ << ", " << worker_index_ + worker_count_ << ", "
      << worker_index_ + 2 * worker_count_ << ", ...):";
    for (size_t k = 0; k < sources_.size(); ++k) {
      const Source& src = sources_[k];
      char hash[17];
      std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(src.hash));
      char share[32];
      std::snprintf(share, sizeof share, "%.4f", mixture_->share(k));
      s << (k ? ";" : "") << " [" << k << "] " << share << " of the windows from '" << src.glob
        << "': " << src.files.size() << (src.files.size() == 1 ? " shard, " : " shards, ")
        << src.tokens.size() << " tokens (fnv1a " << hash << "), " << src.windows
        << " windows per epoch";
    }
    return s.str();
  }
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
