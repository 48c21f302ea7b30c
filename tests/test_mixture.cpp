// Weighted mixtures of training sources (data.train as a list): the slot -> source sequence
// (loco/data/mixture.hpp) and the mixture token stream (loco/data/stream.hpp).
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "loco/core/error.hpp"
#include "loco/data/mixture.hpp"
#include "loco/data/shard.hpp"
#include "loco/data/stream.hpp"
#include "support/catch.hpp"
#include "support/temp_files.hpp"

using loco::MixtureSchedule;
using loco::MixtureSource;
using loco::StreamPosition;
using loco::TokenStream;
using loco::WindowRead;
using loco::testing::TempDir;

namespace {

std::vector<uint32_t> iota_tokens(uint32_t from, uint32_t n) {
  std::vector<uint32_t> t(n);
  for (uint32_t i = 0; i < n; ++i) t[i] = from + i;
  return t;
}

// Walks slots [0, n) in order: checks that locate's index is the running count of its source
// and that every prefix holds each source's share to within fewer than S windows; returns the
// counts.
std::vector<uint64_t> walk(const MixtureSchedule& m, uint64_t n) {
  const size_t S = m.sources();
  std::vector<uint64_t> count(S, 0);
  double worst = 0.0;
  for (uint64_t slot = 0; slot < n; ++slot) {
    const MixtureSchedule::Pick p = m.locate(slot);
    REQUIRE(p.source < S);
    REQUIRE(p.index == count[p.source]);
    ++count[p.source];
    for (size_t k = 0; k < S; ++k)
      worst = std::max(worst, std::fabs(double(count[k]) - double(slot + 1) * m.share(k)));
  }
  CHECK(worst < double(S));
  return count;
}

}  // namespace

// ------------------------------------------------------------------ the slot -> source sequence

TEST_CASE("mixture schedule: weights hold over every prefix, to within the number of sources",
          "[data][mixture]") {
  const std::vector<std::vector<double>> cases = {
      {0.95, 0.05}, {1, 2, 3}, {0.5, 0.3, 0.2, 0.001}, {7}, {1e-6, 1}};
  for (const auto& w : cases)
    for (uint64_t seed : {0ull, 1234ull, 0xFFFFFFFFFFFFFFFFull}) {
      const MixtureSchedule m(w, seed);
      const uint64_t n = 200000;
      const std::vector<uint64_t> count = walk(m, n);
      double total = 0.0;
      for (double x : w) total += x;
      for (size_t k = 0; k < w.size(); ++k) {
        // count_before is the closed form of the walk's running count.
        CHECK(m.count_before(k, n) == count[k]);
        CHECK(m.count_before(k, 0) == 0);
        // The rounded share is within 2^-32 of the given one.
        CHECK(std::fabs(m.share(k) - w[k] / total) < 1e-9);
      }
    }
}

TEST_CASE("mixture schedule: hand-checked patterns", "[data][mixture]") {
  SECTION("equal weights alternate") {
    const MixtureSchedule m({1.0, 1.0}, 42);
    for (uint64_t s = 0; s < 1000; ++s) {
      CHECK(m.locate(s).source != m.locate(s + 1).source);
      CHECK(m.locate(s).index == s / 2);
    }
  }
  SECTION("3:1 is one window of the second source in every 4 slots, periodically") {
    const MixtureSchedule m({3.0, 1.0}, 7);
    for (uint64_t s = 0; s < 4000; ++s) {
      CHECK(m.locate(s).source == m.locate(s + 4).source);
      int second = 0;
      for (uint64_t t = s; t < s + 4; ++t) second += m.locate(t).source == 1 ? 1 : 0;
      CHECK(second == 1);
    }
  }
  SECTION("95:5 replay: exactly one replay window in every 20 slots") {
    // 0.05 · 2^32 rounds to 214748365 (a share 2^-32·0.2 above 1/20): the pattern repeats
    // every 20 slots for the first ~10^9 slots.
    const MixtureSchedule m({0.95, 0.05}, 1234);
    for (uint64_t s = 0; s < 20000; s += 20) {
      int replay = 0;
      for (uint64_t t = s; t < s + 20; ++t) replay += m.locate(t).source == 1 ? 1 : 0;
      CHECK(replay == 1);
    }
    CHECK(m.count_before(1, 1000000) == 50000);
  }
  SECTION("one source takes every slot") {
    const MixtureSchedule m({2.5}, 3);
    for (uint64_t s : {0ull, 1ull, 99ull, 1ull << 40}) {
      CHECK(m.locate(s).source == 0);
      CHECK(m.locate(s).index == s);
    }
  }
  SECTION("far slots: the closed form holds past 2^32 and up to 2^62") {
    const MixtureSchedule m({0.95, 0.05}, 1234);
    for (uint64_t n : {uint64_t(1) << 33, uint64_t(1) << 50, uint64_t(1) << 62}) {
      const uint64_t a = m.count_before(0, n), b = m.count_before(1, n);
      CHECK(a + b == n);
      CHECK(std::fabs(double(b) - double(n) * m.share(1)) < 2.0);
      // locate at n agrees with the counts before it.
      const MixtureSchedule::Pick p = m.locate(n);
      CHECK(p.index == (p.source == 0 ? a : b));
    }
  }
}

TEST_CASE("mixture schedule: a pure function of (weights, seed, slot)", "[data][mixture]") {
  const MixtureSchedule a({0.9, 0.07, 0.03}, 99), b({0.9, 0.07, 0.03}, 99),
      c({0.9, 0.07, 0.03}, 100);
  bool differs = false;
  for (uint64_t s = 0; s < 5000; ++s) {
    CHECK(a.locate(s).source == b.locate(s).source);
    CHECK(a.locate(s).index == b.locate(s).index);
    differs = differs || a.locate(s).source != c.locate(s).source;
  }
  CHECK(differs);  // another seed shifts the pattern
  // Out of order and repeated queries give the same answers (no hidden state).
  for (uint64_t s : {4999ull, 3ull, 4999ull, 0ull, 1777ull})
    CHECK(a.locate(s).index == b.locate(s).index);
}

TEST_CASE("mixture schedule: bad weights are refused, naming the source", "[data][mixture]") {
  REQUIRE_THROWS_WITH(MixtureSchedule({}, 1), Catch::Matchers::Contains("at least one source"));
  REQUIRE_THROWS_WITH(
      MixtureSchedule({1.0, 0.0}, 1),
      Catch::Matchers::Contains("source 1: weight 0.000000 must be finite and > 0"));
  REQUIRE_THROWS_WITH(MixtureSchedule({-1.0, 1.0}, 1),
                      Catch::Matchers::Contains("source 0: weight -1.000000"));
  REQUIRE_THROWS_WITH(MixtureSchedule({1.0, std::numeric_limits<double>::quiet_NaN()}, 1),
                      Catch::Matchers::Contains("source 1"));
  REQUIRE_THROWS_WITH(MixtureSchedule({1.0, std::numeric_limits<double>::infinity()}, 1),
                      Catch::Matchers::Contains("source 1"));
  REQUIRE_THROWS_WITH(
      MixtureSchedule({1.0, 1e-12}, 1),
      Catch::Matchers::Contains("source 1: weight") && Catch::Matchers::Contains("below 2^-32"));
  REQUIRE_THROWS_WITH(MixtureSchedule({1.0, 1.0}, 1).count_before(2, 10),
                      Catch::Matchers::Contains("no source 2"));
}

// ------------------------------------------------------------------ the mixture stream

namespace {

// Source 0: tokens 0..1600 (200 windows of 8+1); source 1: tokens 100000..100080 (10 windows):
// a window's first token says which source and window it is.
struct TwoSources {
  TempDir dir;
  std::vector<MixtureSource> sources;
  TwoSources(double w0 = 0.8, double w1 = 0.2) {
    loco::write_shard(dir.file("new.bin"), iota_tokens(0, 1601), true);
    loco::write_shard(dir.file("old.bin"), iota_tokens(100000, 81), true);
    sources = {{dir.file("new.bin"), w0}, {dir.file("old.bin"), w1}};
  }
};

constexpr int kSeqLen = 8;

// The first input token of every window `s` reads, keyed by deck slot (batches of 1).
void read_into(TokenStream& s, int windows, std::map<uint64_t, std::vector<int32_t>>& by_slot) {
  std::vector<int32_t> in(kSeqLen), tg(kSeqLen);
  uint64_t last_slot = 0;
  s.set_window_observer([&](const WindowRead& w) { last_slot = w.deck_slot; });
  for (int i = 0; i < windows; ++i) {
    s.next_batch(1, in.data(), tg.data());
    for (int t = 0; t < kSeqLen; ++t) REQUIRE(tg[t] == in[t] + 1);  // contiguous windows
    REQUIRE(by_slot.count(last_slot) == 0);
    by_slot[last_slot] = in;
  }
  s.set_window_observer({});
}

}  // namespace

TEST_CASE("mixture stream: the windows depend on the deck slot only, not on the workers",
          "[data][mixture]") {
  TwoSources d;
  std::map<uint64_t, std::vector<int32_t>> one;
  TokenStream single(d.sources, kSeqLen, 1234, 0, 1);
  read_into(single, 600, one);  // source 1 runs through ~12 epochs of its 10 windows
  for (int K : {2, 3, 5}) {
    std::map<uint64_t, std::vector<int32_t>> many;
    for (int w = 0; w < K; ++w) {
      TokenStream s(d.sources, kSeqLen, 1234, w, K);
      read_into(s, 600 / K, many);
    }
    REQUIRE(many.size() == size_t(600 / K * K));
    for (const auto& [slot, window] : many) CHECK(window == one.at(slot));
  }
  // Each source runs through its own epochs: every window once per epoch.
  std::map<std::pair<int, uint64_t>, std::set<int32_t>> epochs;  // (source, epoch) -> starts
  TokenStream s(d.sources, kSeqLen, 1234, 0, 1);
  size_t reads = 0;
  s.set_window_observer([&](const WindowRead& w) {
    CHECK(epochs[{w.source, w.epoch}].insert(int32_t(w.first_token)).second);
    ++reads;
  });
  std::vector<int32_t> in(kSeqLen), tg(kSeqLen);
  for (int i = 0; i < 600; ++i) s.next_batch(1, in.data(), tg.data());
  CHECK(epochs.at({1, 0}).size() == 10);
  CHECK(epochs.at({1, 10}).size() == 10);
  // 600 slots at 0.8 / 0.2: 480 and 120 windows; summary figures come from the position.
  const auto use = s.source_use();
  REQUIRE(use.size() == 2);
  CHECK(use[0].windows_read == 480);
  CHECK(use[1].windows_read == 120);
  CHECK(use[1].windows == 10);
  CHECK(reads == 600);
}

TEST_CASE("mixture stream: resume and redeal continue bitwise as an uninterrupted run",
          "[data][mixture]") {
  TwoSources d(0.95, 0.05);
  std::map<uint64_t, std::vector<int32_t>> straight;
  {
    TokenStream s(d.sources, kSeqLen, 77, 0, 1);
    read_into(s, 480, straight);
  }
  SECTION("same workers: restore the saved position") {
    std::map<uint64_t, std::vector<int32_t>> resumed;
    StreamPosition saved;
    {
      TokenStream s(d.sources, kSeqLen, 77, 0, 1);
      read_into(s, 137, resumed);
      saved = s.position();
    }
    TokenStream s(d.sources, kSeqLen, 77, 0, 1);
    s.restore(saved);
    read_into(s, 480 - 137, resumed);
    CHECK(resumed == straight);
  }
  SECTION("2 workers, then 3 from the same deck slot (elastic redeal)") {
    std::map<uint64_t, std::vector<int32_t>> elastic;
    std::vector<StreamPosition> at;
    for (int w = 0; w < 2; ++w) {
      TokenStream s(d.sources, kSeqLen, 77, w, 2);
      read_into(s, 60, elastic);
      at.push_back(s.position());
    }
    REQUIRE(at[0].cursor == at[1].cursor);
    const uint64_t slot = loco::global_slot(at[0], 2);
    CHECK(slot == 120);
    for (int w = 0; w < 3; ++w) {
      TokenStream s(d.sources, kSeqLen, 77, w, 3);
      s.restore(loco::redeal(at[0].epoch, slot, 3, s.windows()));
      read_into(s, 120, elastic);
    }
    CHECK(elastic == straight);
  }
}

TEST_CASE("mixture stream: errors name the source; the hash covers content and weights",
          "[data][mixture]") {
  TwoSources d;
  const std::string missing = d.dir.file("nothing-*.bin");
  REQUIRE_THROWS_WITH(TokenStream({d.sources[0], {missing, 0.1}}, kSeqLen, 1, 0, 1),
                      Catch::Matchers::Contains("mixture source 1 (" + missing + ")"));
  loco::write_shard(d.dir.file("tiny.bin"), iota_tokens(0, 5), true);
  REQUIRE_THROWS_WITH(TokenStream({d.sources[0], {d.dir.file("tiny.bin"), 0.1}}, kSeqLen, 1, 0, 1),
                      Catch::Matchers::Contains("mixture source 1") &&
                          Catch::Matchers::Contains("5 tokens give no window"));
  // Token ids must fit the model's vocabulary in every source.
  REQUIRE_THROWS_WITH(TokenStream(d.sources, kSeqLen, 1, 0, 1, /*vocab_size=*/50000),
                      Catch::Matchers::Contains("mixture source"));
  REQUIRE_THROWS_WITH(TokenStream({d.sources[0], {d.sources[1].glob, 0.0}}, kSeqLen, 1, 0, 1),
                      Catch::Matchers::Contains("source 1: weight"));
  const TokenStream a(d.sources, kSeqLen, 1, 0, 1), same(d.sources, kSeqLen, 2, 1, 3),
      reweighted({{d.sources[0].glob, 0.7}, {d.sources[1].glob, 0.3}}, kSeqLen, 1, 0, 1);
  CHECK(a.tokens_hash() == same.tokens_hash());  // seed and workers are not the data
  CHECK(a.tokens_hash() != reweighted.tokens_hash());
  CHECK(a.total_tokens() == 1601 + 81);
  CHECK(a.is_mixture());
  CHECK(a.describe().find("0.8000 of the windows from '" + d.sources[0].glob) != std::string::npos);
}
