// Data layer: llm.c shards, byte tokenizer, deterministic token streams, the bundled corpus.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "loco/core/error.hpp"
#include "loco/data/shard.hpp"
#include "loco/data/stream.hpp"
#include "loco/data/tokenizer.hpp"
#include "support/catch.hpp"

namespace fs = std::filesystem;
using loco::StreamPosition;
using loco::TokenStream;

namespace {

// A fresh directory per test case, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("loco_test_data_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

void put_le(std::string& s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

uint64_t get_le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(static_cast<unsigned char>(s[at + i])) << (8 * i);
  return v;
}

// A hand-built shard: header [magic, version, count, 0...] then `tokens` of `token_bytes` each.
std::string raw_shard(int32_t magic, int32_t version, int32_t count,
                      const std::vector<uint32_t>& tokens, int token_bytes) {
  std::string s;
  put_le(s, static_cast<uint32_t>(magic), 4);
  put_le(s, static_cast<uint32_t>(version), 4);
  put_le(s, static_cast<uint32_t>(count), 4);
  s.append(253 * 4, '\0');
  for (uint32_t t : tokens) put_le(s, t, token_bytes);
  return s;
}

// Tokens 0..n-1 (uint32 shard): every window's first input token is its start index.
std::vector<uint32_t> iota_tokens(uint32_t from, uint32_t n) {
  std::vector<uint32_t> t(n);
  for (uint32_t i = 0; i < n; ++i) t[i] = from + i;
  return t;
}

// Reads `windows` windows one at a time; returns their start indices and checks that each
// window is contiguous (the synthetic tokens are positions) and targets are inputs shifted.
std::vector<int32_t> take_starts(TokenStream& s, int seq_len, int windows) {
  std::vector<int32_t> in(seq_len), tg(seq_len), starts;
  for (int w = 0; w < windows; ++w) {
    s.next_batch(1, in.data(), tg.data());
    for (int i = 0; i < seq_len; ++i) {
      REQUIRE(in[i] == in[0] + i);
      REQUIRE(tg[i] == in[i] + 1);
    }
    starts.push_back(in[0]);
  }
  return starts;
}

std::string source_dir() { return LOCO_SOURCE_DIR; }

}  // namespace

// ------------------------------------------------------------------------------------ shards

TEST_CASE("shard round trip, uint16, header bytes as llm.c writes them", "[data][shard]") {
  TempDir dir;
  const std::string path = dir.file("a.bin");
  const std::vector<uint32_t> tokens = {0, 1, 255, 256, 0x1234, 50256, 65535, 7};
  loco::write_shard(path, tokens);

  const std::string bytes = read_bytes(path);
  REQUIRE(bytes.size() == 1024 + 2 * tokens.size());
  CHECK(get_le(bytes, 0, 4) == 20240520);
  CHECK(get_le(bytes, 4, 4) == 1);
  CHECK(get_le(bytes, 8, 4) == tokens.size());
  for (size_t i = 12; i < 1024; ++i) REQUIRE(bytes[i] == '\0');
  // Little-endian uint16: 0x1234 → 34 12.
  CHECK(static_cast<unsigned char>(bytes[1024 + 2 * 4]) == 0x34);
  CHECK(static_cast<unsigned char>(bytes[1024 + 2 * 4 + 1]) == 0x12);
  for (size_t i = 0; i < tokens.size(); ++i) CHECK(get_le(bytes, 1024 + 2 * i, 2) == tokens[i]);
  // Exactly the bytes of a hand-built llm.c shard.
  CHECK(bytes == raw_shard(20240520, 1, int32_t(tokens.size()), tokens, 2));

  CHECK(loco::read_shard(path) == tokens);
  CHECK(loco::read_shard(path, 65536) == tokens);
}

TEST_CASE("shard round trip, uint32 (forced and automatic)", "[data][shard]") {
  TempDir dir;
  SECTION("force_u32 with small tokens") {
    const std::vector<uint32_t> tokens = {0, 1, 2, 65535};
    loco::write_shard(dir.file("f.bin"), tokens, /*force_u32=*/true);
    const std::string bytes = read_bytes(dir.file("f.bin"));
    REQUIRE(bytes.size() == 1024 + 4 * tokens.size());
    CHECK(bytes == raw_shard(20240801, 7, 4, tokens, 4));
    CHECK(loco::read_shard(dir.file("f.bin")) == tokens);
  }
  SECTION("a token above 65535 switches to uint32") {
    const std::vector<uint32_t> tokens = {5, 65536, 128255, 0xFFFFFFFFu, 0x01020304u};
    loco::write_shard(dir.file("g.bin"), tokens);
    const std::string bytes = read_bytes(dir.file("g.bin"));
    REQUIRE(bytes.size() == 1024 + 4 * tokens.size());
    CHECK(get_le(bytes, 0, 4) == 20240801);
    CHECK(get_le(bytes, 4, 4) == 7);
    CHECK(get_le(bytes, 8, 4) == 5);
    CHECK(static_cast<unsigned char>(bytes[1024 + 16]) == 0x04);  // little-endian
    CHECK(static_cast<unsigned char>(bytes[1024 + 19]) == 0x01);
    CHECK(loco::read_shard(dir.file("g.bin")) == tokens);
  }
  SECTION("empty shard") {
    loco::write_shard(dir.file("e.bin"), {});
    CHECK(fs::file_size(dir.file("e.bin")) == 1024);
    CHECK(loco::read_shard(dir.file("e.bin")).empty());
  }
}

TEST_CASE("write_shard replaces atomically and leaves no temporary files", "[data][shard]") {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  loco::write_shard(path, iota_tokens(0, 1000));
  loco::write_shard(path, {9, 8, 7});
  CHECK(loco::read_shard(path) == std::vector<uint32_t>{9, 8, 7});
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    (void)e;
    ++entries;
  }
  CHECK(entries == 1);
  REQUIRE_THROWS_WITH(loco::write_shard(dir.file("no/such/dir/x.bin"), {1}),
                      LOCO_CONTAINS("no/such/dir/x.bin"));
}

TEST_CASE("corrupt shards give errors naming the file and the values", "[data][shard]") {
  TempDir dir;
  const std::string p = dir.file("bad.bin");
  const std::vector<uint32_t> three = {1, 2, 3};

  SECTION("missing file") {
    REQUIRE_THROWS_AS(loco::read_shard(dir.file("missing.bin")), loco::Error);
    REQUIRE_THROWS_WITH(loco::read_shard(dir.file("missing.bin")),
                        LOCO_CONTAINS("missing.bin") && LOCO_CONTAINS("cannot open"));
  }
  SECTION("wrong magic") {
    write_bytes(p, raw_shard(12345, 1, 3, three, 2));
    REQUIRE_THROWS_AS(loco::read_shard(p), loco::Error);
    REQUIRE_THROWS_WITH(loco::read_shard(p), LOCO_CONTAINS(p + ": bad magic 12345") &&
                                                 LOCO_CONTAINS("20240520") &&
                                                 LOCO_CONTAINS("20240801"));
  }
  SECTION("wrong version for the uint16 magic") {
    write_bytes(p, raw_shard(20240520, 7, 3, three, 2));
    REQUIRE_THROWS_WITH(loco::read_shard(p), LOCO_CONTAINS(p + ": bad version 7") &&
                                                 LOCO_CONTAINS("magic 20240520") &&
                                                 LOCO_CONTAINS("expected 1"));
  }
  SECTION("wrong version for the uint32 magic") {
    write_bytes(p, raw_shard(20240801, 1, 3, three, 4));
    REQUIRE_THROWS_WITH(loco::read_shard(p),
                        LOCO_CONTAINS(p + ": bad version 1") && LOCO_CONTAINS("expected 7"));
  }
  SECTION("truncated: fewer tokens than the header says") {
    write_bytes(p, raw_shard(20240520, 1, 10, {1, 2, 3, 4, 5}, 2));
    REQUIRE_THROWS_WITH(loco::read_shard(p), LOCO_CONTAINS(p + ": truncated") &&
                                                 LOCO_CONTAINS("10 tokens") &&
                                                 LOCO_CONTAINS("1034 bytes"));
  }
  SECTION("truncated mid-token (uint32)") {
    std::string s = raw_shard(20240801, 7, 3, three, 4);
    s.pop_back();
    write_bytes(p, s);
    REQUIRE_THROWS_WITH(loco::read_shard(p), LOCO_CONTAINS(p + ": truncated"));
  }
  SECTION("trailing bytes after the last token") {
    write_bytes(p, raw_shard(20240520, 1, 3, {1, 2, 3, 4}, 2));
    REQUIRE_THROWS_WITH(loco::read_shard(p),
                        LOCO_CONTAINS(p + ": 2 trailing bytes") && LOCO_CONTAINS("3 tokens"));
  }
  SECTION("negative token count") {
    write_bytes(p, raw_shard(20240520, 1, -4, {}, 2));
    REQUIRE_THROWS_WITH(loco::read_shard(p), LOCO_CONTAINS(p) && LOCO_CONTAINS("-4"));
  }
  SECTION("file shorter than the 1024-byte header") {
    write_bytes(p, raw_shard(20240520, 1, 0, {}, 2).substr(0, 100));
    REQUIRE_THROWS_WITH(loco::read_shard(p), LOCO_CONTAINS(p + ": file is 100 bytes") &&
                                                 LOCO_CONTAINS("too small") &&
                                                 LOCO_CONTAINS("1024"));
    write_bytes(p, "");
    REQUIRE_THROWS_WITH(loco::read_shard(p), LOCO_CONTAINS(p + ": file is 0 bytes"));
  }
  SECTION("token >= vocab_size") {
    loco::write_shard(p, {1, 2, 300, 4, 999});
    REQUIRE_THROWS_WITH(loco::read_shard(p, 256), LOCO_CONTAINS(p + ": token 300 at index 2") &&
                                                      LOCO_CONTAINS("vocab_size 256"));
    REQUIRE_THROWS_WITH(loco::read_shard(p, 300), LOCO_CONTAINS("token 300 at index 2"));
    REQUIRE_THROWS_WITH(loco::read_shard(p, 301), LOCO_CONTAINS("token 999 at index 4"));
    CHECK(loco::read_shard(p, 1000).size() == 5);
    CHECK(loco::read_shard(p, 0).size() == 5);  // 0: no check
  }
}

TEST_CASE("shard globs expand sorted; no match names the pattern", "[data][shard]") {
  TempDir dir;
  for (const char* name : {"train_002.bin", "train_000.bin", "train_010.bin", "train_001.bin"})
    loco::write_shard(dir.file(name), {1});
  loco::write_shard(dir.file("val_000.bin"), {1});
  fs::create_directories(dir.path / "train_dir.bin");  // directories are not shards

  const auto files = loco::expand_shard_glob(dir.file("train_*.bin"));
  REQUIRE(files == std::vector<std::string>{dir.file("train_000.bin"), dir.file("train_001.bin"),
                                            dir.file("train_002.bin"), dir.file("train_010.bin")});
  CHECK(loco::expand_shard_glob(dir.file("val_000.bin")) ==
        std::vector<std::string>{dir.file("val_000.bin")});
  CHECK(loco::expand_shard_glob(dir.file("*_00[01].bin")).size() == 3);

  const std::string none = dir.file("test_*.bin");
  REQUIRE_THROWS_AS(loco::expand_shard_glob(none), loco::Error);
  REQUIRE_THROWS_WITH(loco::expand_shard_glob(none), LOCO_CONTAINS("'" + none + "'"));
  REQUIRE_THROWS_WITH(loco::expand_shard_glob(dir.file("missing.bin")),
                      LOCO_CONTAINS("missing.bin"));
  REQUIRE_THROWS_WITH(loco::expand_shard_glob(dir.file("train_dir*")), LOCO_CONTAINS("train_dir*"));
}

// ------------------------------------------------------------------------------- tokenizer

TEST_CASE("byte tokenizer round-trips arbitrary bytes", "[data][tokenizer]") {
  loco::ByteTokenizer tok;
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  all += "h\xC3\xA9llo \xE2\x9C\x93 \xE6\x97\xA5\xE6\x9C\xAC";  // "héllo ✓ 日本" in UTF-8
  all.push_back('\0');

  const auto ids = tok.encode(all);
  REQUIRE(ids.size() == all.size());
  for (int b = 0; b < 256; ++b) REQUIRE(ids[b] == static_cast<uint32_t>(b));
  CHECK(ids[257] == 0xC3);  // é is two bytes
  CHECK(ids[258] == 0xA9);
  CHECK(ids.back() == 0);
  CHECK(tok.decode(ids) == all);
  CHECK(tok.encode("").empty());
  CHECK(tok.decode({}).empty());
  REQUIRE_THROWS_WITH(tok.decode({65, 256}), LOCO_CONTAINS("256") && LOCO_CONTAINS("index 1"));
}

TEST_CASE("tokenize_text_file splits at a line boundary", "[data][tokenizer]") {
  TempDir dir;
  loco::ByteTokenizer tok;
  // 10 lines of 10 bytes: n = 100; fraction 0.25 → target 75, inside line 8 (bytes 70..79);
  // the cut is the next line start, 80.
  std::string text;
  for (int i = 0; i < 10; ++i) text += "line " + std::to_string(i) + " \xC3\xA9\n";
  REQUIRE(text.size() == 100);
  write_bytes(dir.file("in.txt"), text);

  auto r = loco::tokenize_text_file(dir.file("in.txt"), dir.file("t.bin"), dir.file("v.bin"), 0.25);
  CHECK(r.train_tokens == 80);
  CHECK(r.val_tokens == 20);
  const auto train = loco::read_shard(dir.file("t.bin"), 256);
  const auto val = loco::read_shard(dir.file("v.bin"), 256);
  CHECK(tok.decode(train) == text.substr(0, 80));
  CHECK(tok.decode(val) == text.substr(80));

  SECTION("a target on a line start cuts there") {
    r = loco::tokenize_text_file(dir.file("in.txt"), dir.file("t.bin"), dir.file("v.bin"), 0.3);
    CHECK(r.train_tokens == 70);
    CHECK(r.val_tokens == 30);
  }
  SECTION("no line break after the target: the last line start before it") {
    write_bytes(dir.file("in2.txt"), "ab\ncd\nefghijklmnopqrstuvwxyz");
    r = loco::tokenize_text_file(dir.file("in2.txt"), dir.file("t.bin"), dir.file("v.bin"), 0.1);
    CHECK(r.train_tokens == 6);
    CHECK(tok.decode(loco::read_shard(dir.file("v.bin"))) == "efghijklmnopqrstuvwxyz");
  }
  SECTION("fraction 0: everything is training data") {
    r = loco::tokenize_text_file(dir.file("in.txt"), dir.file("all.bin"), "", 0.0);
    CHECK(r.train_tokens == 100);
    CHECK(r.val_tokens == 0);
    CHECK(tok.decode(loco::read_shard(dir.file("all.bin"))) == text);
  }
  SECTION("a glob of inputs is concatenated in sorted order") {
    write_bytes(dir.file("part_b.txt"), "B\n");
    write_bytes(dir.file("part_a.txt"), "A\n");
    r = loco::tokenize_text_file(dir.file("part_*.txt"), dir.file("p.bin"), "", 0.0);
    CHECK(tok.decode(loco::read_shard(dir.file("p.bin"))) == "A\nB\n");
  }
  SECTION("errors") {
    const std::string in = dir.file("in.txt");
    REQUIRE_THROWS_WITH(loco::tokenize_text_file(in, dir.file("t.bin"), dir.file("v.bin"), 1.0),
                        LOCO_CONTAINS("val_fraction 1"));
    REQUIRE_THROWS_WITH(loco::tokenize_text_file(in, dir.file("t.bin"), dir.file("v.bin"), -0.1),
                        LOCO_CONTAINS("-0.1"));
    REQUIRE_THROWS_WITH(loco::tokenize_text_file(in, dir.file("t.bin"), "", 0.1),
                        LOCO_CONTAINS("validation output"));
    REQUIRE_THROWS_WITH(loco::tokenize_text_file(dir.file("nope.txt"), dir.file("t.bin"), "", 0),
                        LOCO_CONTAINS("nope.txt"));
    write_bytes(dir.file("one.txt"), "a single line without a break");
    REQUIRE_THROWS_WITH(
        loco::tokenize_text_file(dir.file("one.txt"), dir.file("t.bin"), dir.file("v.bin"), 0.5),
        LOCO_CONTAINS("one.txt") && LOCO_CONTAINS("line boundary"));
    write_bytes(dir.file("empty.txt"), "");
    REQUIRE_THROWS_WITH(loco::tokenize_text_file(dir.file("empty.txt"), dir.file("t.bin"), "", 0),
                        LOCO_CONTAINS("empty"));
  }
}

// --------------------------------------------------------------------------------- streams

TEST_CASE("token streams: windows, targets, shard order", "[data][stream]") {
  TempDir dir;
  // Two uint32 shards holding positions 0..99 and 100..240: 241 tokens, seq_len 8 → 30 windows.
  loco::write_shard(dir.file("s_0.bin"), iota_tokens(0, 100), true);
  loco::write_shard(dir.file("s_1.bin"), iota_tokens(100, 141), true);
  const std::string glob = dir.file("s_*.bin");

  TokenStream s(glob, 8, 1, 0, 1, /*shuffle=*/false);
  CHECK(s.total_tokens() == 241);
  CHECK(s.windows_per_worker() == 30);
  // In order, batched: B=3 gives windows 0, 1, 2 back to back; targets = inputs shifted by one.
  std::vector<int32_t> in(3 * 8), tg(3 * 8);
  s.next_batch(3, in.data(), tg.data());
  for (int i = 0; i < 24; ++i) {
    CHECK(in[i] == i);
    CHECK(tg[i] == i + 1);
  }
  CHECK(s.position().epoch == 0);
  CHECK(s.position().cursor == 3);
  // Windows span the shard boundary (99 | 100) seamlessly.
  const auto starts = take_starts(s, 8, 27);
  CHECK(starts.front() == 24);
  CHECK(starts.back() == 232);  // the last window ends on the last token, 240
  CHECK(s.position().epoch == 1);
  CHECK(s.position().cursor == 0);

  const std::string d = s.describe();
  CHECK(d.find("2 shards") != std::string::npos);
  CHECK(d.find("241 tokens") != std::string::npos);
  CHECK(d.find("30 windows") != std::string::npos);
  CHECK(d.find("in order") != std::string::npos);
  CHECK(d.find('\n') == std::string::npos);
  // The description changes with the content.
  loco::write_shard(dir.file("s_1.bin"), iota_tokens(101, 141), true);
  TokenStream changed(glob, 8, 1, 0, 1, false);
  CHECK(changed.describe() != d);
}

TEST_CASE("token streams: same seed reproduces, other seeds differ", "[data][stream]") {
  TempDir dir;
  loco::write_shard(dir.file("s.bin"), iota_tokens(0, 801), true);  // 100 windows of 8+1
  const std::string p = dir.file("s.bin");
  TokenStream a(p, 8, 42, 0, 1), b(p, 8, 42, 0, 1), c(p, 8, 43, 0, 1);
  const auto sa = take_starts(a, 8, 250);  // 2.5 epochs
  CHECK(sa == take_starts(b, 8, 250));
  CHECK(sa != take_starts(c, 8, 250));
  // Shuffled: epoch 0 is a permutation of all windows but not in file order, and epoch 1
  // differs from epoch 0.
  std::vector<int32_t> e0(sa.begin(), sa.begin() + 100), e1(sa.begin() + 100, sa.begin() + 200);
  std::vector<int32_t> sorted0 = e0, sorted1 = e1;
  std::sort(sorted0.begin(), sorted0.end());
  std::sort(sorted1.begin(), sorted1.end());
  for (int i = 0; i < 100; ++i) {
    REQUIRE(sorted0[i] == 8 * i);
    REQUIRE(sorted1[i] == 8 * i);
  }
  CHECK(e0 != sorted0);
  CHECK(e0 != e1);
  // Golden values: mt19937_64 and our Fisher–Yates are fixed by the standard and this code, so
  // every platform and compiler must read these windows first (seed 42, epoch 0).
  const std::vector<int32_t> golden(sa.begin(), sa.begin() + 6);
  CHECK(golden == std::vector<int32_t>{96, 520, 200, 424, 368, 688});
}

TEST_CASE("token streams: K workers read disjoint windows covering each epoch", "[data][stream]") {
  TempDir dir;
  const int L = 8;
  for (const int windows : {30, 31, 32}) {  // divisible by K=3, and not
    CAPTURE(windows);
    loco::write_shard(dir.file("s.bin"), iota_tokens(0, windows * L + 1), true);
    const int K = 3;
    std::vector<TokenStream> workers;
    for (int w = 0; w < K; ++w) workers.emplace_back(dir.file("s.bin"), L, 7, w, K);
    const int per = windows / K;
    for (int w = 0; w < K; ++w) REQUIRE(workers[w].windows_per_worker() == size_t(per));
    for (int epoch = 0; epoch < 3; ++epoch) {
      CAPTURE(epoch);
      std::set<int32_t> seen;
      std::vector<std::vector<int32_t>> got(K);
      for (int w = 0; w < K; ++w) {
        REQUIRE(workers[w].position().epoch == uint64_t(epoch));
        got[w] = take_starts(workers[w], L, per);
        for (int32_t start : got[w]) {
          REQUIRE(start % L == 0);
          REQUIRE(seen.insert(start).second);  // pairwise disjoint, no repeats
        }
      }
      CHECK(seen.size() == size_t(per * K));
      if (windows % K == 0) CHECK(seen.size() == size_t(windows));  // each window exactly once
      // Worker w reads slots w, w+K, … of one shared order: the same seed with K=1 sees it all.
      TokenStream whole(dir.file("s.bin"), L, 7, 0, 1);
      whole.restore({uint64_t(epoch), 0});
      const auto order = take_starts(whole, L, windows);
      for (int w = 0; w < K; ++w)
        for (int i = 0; i < per; ++i) REQUIRE(got[w][i] == order[w + K * i]);
    }
  }
}

TEST_CASE("token streams: in-order validation reads are strided by worker", "[data][stream]") {
  TempDir dir;
  loco::write_shard(dir.file("s.bin"), iota_tokens(0, 10 * 4 + 1), true);  // 10 windows of 4+1
  TokenStream w1(dir.file("s.bin"), 4, 99, 1, 3, /*shuffle=*/false);
  CHECK(take_starts(w1, 4, 3) == std::vector<int32_t>{4, 16, 28});
  CHECK(take_starts(w1, 4, 3) == std::vector<int32_t>{4, 16, 28});  // next epoch, same order
  CHECK(w1.position().epoch == 2);
  w1.reset();
  CHECK(w1.position().epoch == 0);
  CHECK(w1.position().cursor == 0);
  CHECK(take_starts(w1, 4, 1) == std::vector<int32_t>{4});
}

TEST_CASE("token streams: save/restore reproduces the following batches", "[data][stream]") {
  TempDir dir;
  loco::write_shard(dir.file("s.bin"), iota_tokens(0, 60 * 16 + 5), true);  // 60 windows
  const std::string p = dir.file("s.bin");
  const int B = 4, L = 16, K = 2;  // 30 windows per worker: 7.5 batches per epoch
  TokenStream a(p, L, 5, 1, K);
  std::vector<int32_t> in(B * L), tg(B * L);
  for (int i = 0; i < 9; ++i) a.next_batch(B, in.data(), tg.data());  // 36 windows
  const StreamPosition saved = a.position();
  CHECK(saved.epoch == 1);
  CHECK(saved.cursor == 6);

  std::vector<std::vector<int32_t>> after;
  for (int i = 0; i < 12; ++i) {  // crosses two more epoch boundaries
    a.next_batch(B, in.data(), tg.data());
    after.push_back(in);
    after.push_back(tg);
  }
  auto replay = [&](TokenStream& s) {
    for (int i = 0; i < 12; ++i) {
      s.next_batch(B, in.data(), tg.data());
      REQUIRE(in == after[2 * i]);
      REQUIRE(tg == after[2 * i + 1]);
    }
  };
  TokenStream fresh(p, L, 5, 1, K);  // a new process resuming from a checkpoint
  fresh.restore(saved);
  CHECK(fresh.position().epoch == saved.epoch);
  CHECK(fresh.position().cursor == saved.cursor);
  replay(fresh);
  a.restore(saved);  // the same stream rewound
  replay(a);
  CHECK(a.position().epoch == fresh.position().epoch);
  CHECK(a.position().cursor == fresh.position().cursor);

  // Invalid positions are refused with the values.
  REQUIRE_THROWS_AS(a.restore({0, 30}), loco::Error);
  REQUIRE_THROWS_WITH(a.restore({3, 31}), LOCO_CONTAINS("cursor 31") && LOCO_CONTAINS("30"));
}

TEST_CASE("token streams: a redeal to another number of workers repeats and skips nothing",
          "[data][stream][elastic]") {
  // Workers step together (one window per step each here); after some steps the number of
  // workers changes (3 -> 2 -> 5 -> 3 -> 4), each new deal starting where the old one stopped
  // (global_slot -> redeal). In every epoch exactly the slots 0 .. N-1 of its order are read,
  // each once; only a tail of fewer slots than workers is skipped at an epoch's end.
  TempDir dir;
  const int L = 4;
  const uint64_t W = 47;  // windows per epoch: no worker count divides it
  loco::write_shard(dir.file("s.bin"), iota_tokens(0, uint32_t(W) * L + 1), true);
  const std::string p = dir.file("s.bin");
  TokenStream whole(p, L, 11, 0, 1);
  std::vector<std::vector<int32_t>> order;  // the epochs' shuffled orders
  for (uint64_t e = 0; e < 4; ++e) {
    whole.restore({e, 0});
    order.push_back(take_starts(whole, L, int(W)));
  }
  std::vector<std::vector<uint64_t>> slots_read(order.size());  // per epoch, in read order
  StreamPosition at{};                                          // where the previous deal stopped
  int prev_K = 3;
  struct Phase {
    int K, steps;
  };
  int dealt = 0;
  for (const Phase ph : {Phase{3, 5}, Phase{2, 9}, Phase{5, 6}, Phase{3, 20}, Phase{4, 9}}) {
    CAPTURE(ph.K, ph.steps);
    const StreamPosition start = loco::redeal(at.epoch, loco::global_slot(at, prev_K), ph.K, W);
    std::vector<TokenStream> workers;
    for (int w = 0; w < ph.K; ++w) workers.emplace_back(p, L, 11, w, ph.K);
    for (TokenStream& worker : workers) {
      worker.restore(start);
      worker.set_window_observer([&](const loco::WindowRead& r) {
        REQUIRE(r.epoch < order.size());
        REQUIRE(order[r.epoch][r.slot] == int32_t(r.first_token));  // slot -> window, as dealt
        slots_read[r.epoch].push_back(r.slot);
      });
    }
    for (int step = 0; step < ph.steps; ++step)
      for (TokenStream& worker : workers) take_starts(worker, L, 1);
    for (const TokenStream& worker : workers) {  // the workers stand at the same position
      REQUIRE(worker.position().epoch == workers[0].position().epoch);
      REQUIRE(worker.position().cursor == workers[0].position().cursor);
    }
    at = workers[0].position();
    prev_K = ph.K;
    dealt += ph.K * ph.steps;
  }
  // By hand: epoch 0 reads slots 0..42 (K=5 leaves 43..46, fewer than 5), epoch 1 all 47,
  // epoch 2 0..44 (K=4 leaves 2), epoch 3 the 24 dealt since.
  const std::vector<size_t> want = {43, 47, 45, 24};
  size_t total = 0;
  for (size_t e = 0; e < order.size(); ++e) {
    CAPTURE(e);
    std::vector<uint64_t> sorted = slots_read[e];
    std::sort(sorted.begin(), sorted.end());
    REQUIRE(sorted.size() == want[e]);
    for (size_t i = 0; i < sorted.size(); ++i) REQUIRE(sorted[i] == i);  // 0..N-1, each once
    total += sorted.size();
  }
  CHECK(total == size_t(dealt));
}

TEST_CASE("token streams: redeal and global_slot", "[data][stream][elastic]") {
  // K workers at cursor c of a deal that began at slot s stand at slot s + K*c.
  CHECK(loco::global_slot({2, 5, 0}, 3) == 15);
  CHECK(loco::global_slot({2, 5, 7}, 3) == 22);
  // Continue at slot 22 of a 47-window epoch with 4 workers: 25 left, 6 each.
  const StreamPosition p = loco::redeal(2, 22, 4, 47);
  CHECK(p.epoch == 2);
  CHECK(p.start == 22);
  CHECK(p.cursor == 0);
  // Fewer slots left than workers: the next epoch from slot 0 (the tail is skipped).
  const StreamPosition q = loco::redeal(2, 44, 4, 47);
  CHECK(q.epoch == 3);
  CHECK(q.start == 0);
  // A redeal at the same K is the continuation: same windows as the undisturbed stream.
  TempDir dir;
  loco::write_shard(dir.file("s.bin"), iota_tokens(0, 47 * 4 + 1), true);
  TokenStream a(dir.file("s.bin"), 4, 3, 1, 3), b(dir.file("s.bin"), 4, 3, 1, 3);
  take_starts(a, 4, 5);
  b.restore(loco::redeal(0, loco::global_slot(a.position(), 3), 3, 47));
  CHECK(take_starts(a, 4, 10) == take_starts(b, 4, 10));
  REQUIRE_THROWS_WITH(loco::redeal(0, 48, 2, 47), LOCO_CONTAINS("past the epoch"));
  // A deal that begins mid-epoch restores only cursors inside it.
  REQUIRE_THROWS_WITH(b.restore({0, 9, 20}), LOCO_CONTAINS("start 20"));
}

TEST_CASE("token streams: epoch rollover", "[data][stream]") {
  TempDir dir;
  loco::write_shard(dir.file("s.bin"), iota_tokens(0, 10 * 8 + 1), true);  // 10 windows
  TokenStream s(dir.file("s.bin"), 8, 3, 0, 1);
  std::vector<int32_t> in(3 * 8), tg(3 * 8);
  std::vector<int32_t> seen;
  for (int b = 0; b < 3; ++b) {
    s.next_batch(3, in.data(), tg.data());
    for (int w = 0; w < 3; ++w) seen.push_back(in[w * 8]);
  }
  CHECK(s.position().epoch == 0);
  CHECK(s.position().cursor == 9);
  s.next_batch(3, in.data(), tg.data());  // window 10 of epoch 0, then 2 of epoch 1
  seen.push_back(in[0]);
  CHECK(s.position().epoch == 1);
  CHECK(s.position().cursor == 2);
  std::vector<int32_t> sorted = seen;
  std::sort(sorted.begin(), sorted.end());
  CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());  // no repeat in epoch
  CHECK(sorted.size() == 10);
  // A stream restored at (1, 0) sees what the rollover produced for epoch 1.
  TokenStream r(dir.file("s.bin"), 8, 3, 0, 1);
  r.restore({1, 0});
  std::vector<int32_t> rin(8), rtg(8);
  r.next_batch(1, rin.data(), rtg.data());
  CHECK(rin[0] == in[8]);
  r.next_batch(1, rin.data(), rtg.data());
  CHECK(rin[0] == in[16]);
}

TEST_CASE("token streams: errors", "[data][stream]") {
  TempDir dir;
  loco::write_shard(dir.file("s.bin"), iota_tokens(0, 20), true);  // 20 tokens
  const std::string p = dir.file("s.bin");
  // seq_len 8 → 2 windows: fine for 2 workers, not for 3.
  CHECK(TokenStream(p, 8, 0, 1, 2).windows_per_worker() == 1);
  REQUIRE_THROWS_AS(TokenStream(p, 8, 0, 0, 3), loco::Error);
  REQUIRE_THROWS_WITH(TokenStream(p, 8, 0, 0, 3), LOCO_CONTAINS(p) && LOCO_CONTAINS("20 tokens") &&
                                                      LOCO_CONTAINS("seq_len 8") &&
                                                      LOCO_CONTAINS("3 workers"));
  REQUIRE_THROWS_WITH(TokenStream(p, 20, 0, 0, 1), LOCO_CONTAINS("20 tokens"));
  REQUIRE_THROWS_WITH(TokenStream(p, 8, 0, 2, 2), LOCO_CONTAINS("worker index 2"));
  REQUIRE_THROWS_WITH(TokenStream(p, 0, 0, 0, 1), LOCO_CONTAINS("seq_len 0"));
  REQUIRE_THROWS_WITH(TokenStream(dir.file("none_*.bin"), 8, 0, 0, 1), LOCO_CONTAINS("none_*.bin"));
  REQUIRE_THROWS_WITH(TokenStream(p, 4, 0, 0, 1, true, 16),
                      LOCO_CONTAINS("token 16 at index 16") && LOCO_CONTAINS("vocab_size 16"));
  TokenStream ok(p, 4, 0, 0, 1);
  std::vector<int32_t> in(4), tg(4);
  REQUIRE_THROWS_WITH(ok.next_batch(0, in.data(), tg.data()), LOCO_CONTAINS("batch size 0"));
}

// ---------------------------------------------------------------------- the bundled corpus

TEST_CASE("bundled KJV shards load with vocab 256 and match data/README.md", "[data][corpus]") {
  const std::string data = source_dir() + "/data/";
  const std::string text = read_bytes(data + "kjv.txt");
  const auto train = loco::read_shard(data + "kjv-train.bin", 256);
  const auto val = loco::read_shard(data + "kjv-val.bin", 256);
  // The sizes data/README.md states.
  CHECK(text.size() == 4298239);
  CHECK(train.size() == 4083441);
  CHECK(val.size() == 214798);
  const std::string readme = read_bytes(data + "README.md");
  for (const char* n : {"4298239", "4083441", "214798", "8167906", "430620"})
    CHECK(readme.find(n) != std::string::npos);

  // Together they are the text, cut at a line start near 95%.
  loco::ByteTokenizer tok;
  const std::string train_text = tok.decode(train);
  CHECK(train_text + tok.decode(val) == text);
  CHECK(train_text.back() == '\n');
  CHECK(train.size() >= static_cast<size_t>(text.size() * 0.95));
  CHECK(train.size() < static_cast<size_t>(text.size() * 0.96));
  CHECK(text.find("\nGenesis 1\n") == 0);
  CHECK(text.find("Revelation 22\n") != std::string::npos);

  // scripts/make-corpus.sh and tokenize_text_file agree byte for byte.
  TempDir dir;
  const auto r =
      loco::tokenize_text_file(data + "kjv.txt", dir.file("t.bin"), dir.file("v.bin"), 0.05);
  CHECK(r.train_tokens == train.size());
  CHECK(r.val_tokens == val.size());
  CHECK(read_bytes(dir.file("t.bin")) == read_bytes(data + "kjv-train.bin"));
  CHECK(read_bytes(dir.file("v.bin")) == read_bytes(data + "kjv-val.bin"));

  // A validation stream over the bundled shard starts at the split.
  TokenStream v(data + "kjv-val.bin", 64, 0, 0, 1, false, 256);
  CHECK(v.windows_per_worker() == (val.size() - 1) / 64);
  std::vector<int32_t> in(64), tg(64);
  v.next_batch(1, in.data(), tg.data());
  std::string first;
  for (int32_t t : in) first.push_back(static_cast<char>(t));
  CHECK(first == text.substr(train.size(), 64));
}
