// The checkpoint container (loco/io/checkpoint.hpp): round trip, every kind of damage
// (truncation at many offsets, bit flips, wrong magic / version), compatibility checks, write
// failures that must leave the previous checkpoint intact, the directory layout (latest,
// keep_last pruning, resume resolution).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "loco/config/config.hpp"
#include "loco/core/error.hpp"
#include "loco/io/checkpoint.hpp"
#include "loco/io/xxh64.hpp"
#include "support/catch.hpp"
#include "support/temp_files.hpp"

#if __has_include(<xxhash.h>)
#define XXH_INLINE_ALL
#include <xxhash.h>
#define LOCO_HAVE_LIBXXHASH 1
#endif

using namespace loco;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using loco::testing::slurp;
using loco::testing::spit;
using loco::testing::TempDir;

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// A checkpoint with several dtypes, an empty tensor and awkward sizes.
struct Sample {
  std::vector<float> params = random_floats(1000, 1);
  std::vector<float> adam_m = random_floats(1000, 2);
  std::vector<uint16_t> bf16 = {0x3f80, 0xbf80, 0x7fc0, 0x0001, 0xffff};
  std::vector<int32_t> ints = {-1, 0, 1, 2147483647};
  std::vector<uint64_t> rng = {0xdeadbeefcafef00dULL, 1, 2, 3};
  json meta = {{"step", 100},
               {"nested", {{"a", {1, 2, 3}}, {"b", "ü unicode"}}},
               {"rng", {{"state", {1ull << 63, 7}}}},
               {"positions", json::array({{{"epoch", 1}, {"cursor", 42}}})},
               {"loss", 3.25}};

  void write(const std::string& path) const {
    CheckpointWriter w;
    w.set_meta(meta);
    w.add("params", params.data(), params.size(), DType::F32);
    w.add("adam.m", adam_m.data(), adam_m.size(), StorageDType::F32);
    w.add("weird bf16", bf16.data(), bf16.size(), StorageDType::BF16);
    w.add("empty", nullptr, 0, StorageDType::F32);
    w.add("ints", ints.data(), ints.size(), DType::I32);
    w.add_copy("rng.u64", rng.data(), rng.size(), StorageDType::U64);
    w.write(path);
  }
  void check(const Checkpoint& c) const {
    CHECK(c.meta() == meta);
    REQUIRE(c.tensors().size() == 6);
    const auto p = c.tensor("params").f32();
    REQUIRE(p.size() == params.size());
    CHECK(std::memcmp(p.data(), params.data(), params.size() * 4) == 0);
    const auto m = c.tensor("adam.m").f32();
    CHECK(std::memcmp(m.data(), adam_m.data(), adam_m.size() * 4) == 0);
    const auto b = c.tensor("weird bf16").bf16_bits();
    CHECK(std::vector<uint16_t>(b.begin(), b.end()) == bf16);
    CHECK(c.tensor("empty").count == 0);
    const auto i = c.tensor("ints").i32();
    CHECK(std::vector<int32_t>(i.begin(), i.end()) == ints);
    std::vector<uint64_t> r(rng.size());
    c.copy_to("rng.u64", r.data(), r.size(), StorageDType::U64);
    CHECK(r == rng);
    for (const auto& t : c.tensors()) CHECK(reinterpret_cast<uintptr_t>(t.data) % 64 == 0);
  }
};

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool has_temp_files(const fs::path& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) return true;
  return false;
}

// Rewrites the prefix's version field and its checksum (a well-formed file of another version).
std::string with_version(std::string bytes, uint32_t version) {
  std::memcpy(bytes.data() + 8, &version, 4);
  const uint64_t h = Xxh64::hash(bytes.data(), 56);
  std::memcpy(bytes.data() + 56, &h, 8);
  return bytes;
}

}  // namespace

TEST_CASE("our XXH64 matches the reference", "[checkpoint]") {
  // Known answers of the reference implementation.
  CHECK(Xxh64::hash("", 0) == 0xEF46DB3751D8E999ULL);
  std::mt19937_64 gen(3);
  std::vector<unsigned char> data(1000);
  for (auto& b : data) b = static_cast<unsigned char>(gen());
  // Streaming in uneven pieces equals one shot, for every length around the 32-byte stripes.
  for (size_t n : {0u, 1u, 3u, 4u, 7u, 8u, 31u, 32u, 33u, 63u, 64u, 65u, 100u, 999u, 1000u}) {
    Xxh64 x(42);
    for (size_t done = 0; done < n;) {
      const size_t piece = std::min<size_t>(n - done, 1 + gen() % 40);
      x.update(data.data() + done, piece);
      done += piece;
    }
    CHECK(x.digest() == Xxh64::hash(data.data(), n, 42));
  }
#ifdef LOCO_HAVE_LIBXXHASH
  for (size_t n = 0; n <= data.size(); n += (n < 80 ? 1 : 37))
    for (uint64_t seed : {uint64_t{0}, uint64_t{1}, uint64_t{0x9E3779B97F4A7C15ULL}}) {
      INFO("length " << n << " seed " << seed);
      REQUIRE(Xxh64::hash(data.data(), n, seed) == XXH64(data.data(), n, seed));
    }
#else
  WARN("libxxhash-dev is not installed: XXH64 checked against known answers only");
#endif
}

TEST_CASE("checkpoint round trip is bit-exact with metadata", "[checkpoint]") {
  TempDir dir;
  Sample s;
  const std::string path = dir / "rank-0.bin";
  s.write(path);
  const Checkpoint c = read_checkpoint(path);
  s.check(c);
  CHECK(c.path() == path);
  CHECK(c.file_bytes() == fs::file_size(path));
  CHECK_FALSE(has_temp_files(dir.path));

  // Writing the same content twice gives the same bytes (deterministic format).
  s.write(dir / "again.bin");
  CHECK(slurp(path) == slurp(dir / "again.bin"));
}

TEST_CASE("checkpoint accessors name what is wrong", "[checkpoint]") {
  TempDir dir;
  Sample s;
  s.write(dir / "c.bin");
  const Checkpoint c = read_checkpoint(dir / "c.bin");
  auto e = error_of([&] { c.tensor("adam.v"); });
  CHECK_THAT(e, LOCO_CONTAINS("no tensor named \"adam.v\""));
  CHECK_THAT(e, LOCO_CONTAINS("params"));
  std::vector<float> buf(999);
  e = error_of([&] { c.copy_to("params", buf.data(), 999, DType::F32); });
  CHECK_THAT(e, LOCO_CONTAINS("has 1000 F32 elements, expected 999 F32"));
  e = error_of([&] { c.tensor("ints").f32(); });
  CHECK_THAT(e, LOCO_CONTAINS("is I32, not F32"));

  CheckpointWriter w;
  CHECK_THROWS_WITH(w.set_meta(json::array()), LOCO_CONTAINS("JSON object"));
  w.add("x", s.params.data(), 1, DType::F32);
  CHECK_THROWS_WITH(w.add("x", s.params.data(), 1, DType::F32), LOCO_CONTAINS("added twice"));
  CHECK_THROWS_WITH(w.add("", s.params.data(), 1, DType::F32), LOCO_CONTAINS("empty"));
}

TEST_CASE("truncated checkpoints are rejected at every offset", "[checkpoint]") {
  TempDir dir;
  Sample s;
  s.write(dir / "good.bin");
  const std::string bytes = slurp(dir / "good.bin");
  const std::string path = dir / "step-000100-rank-0.bin";
  std::vector<size_t> cuts;
  for (size_t n = 0; n < 80; ++n) cuts.push_back(n);
  for (size_t n = 80; n < bytes.size(); n += 37) cuts.push_back(n);
  for (size_t n = bytes.size() - 16; n < bytes.size(); ++n) cuts.push_back(n);
  for (size_t n : cuts) {
    spit(path, bytes.substr(0, n));
    const std::string e = error_of([&] { read_checkpoint(path); });
    INFO("cut at " << n << " of " << bytes.size() << ": " << e);
    REQUIRE_FALSE(e.empty());
    CHECK_THAT(e, LOCO_CONTAINS(path + ": "));
    if (n == 0) CHECK_THAT(e, LOCO_CONTAINS("empty file"));
    if (n >= 8) CHECK_THAT(e, LOCO_CONTAINS("truncated"));
  }
  // Appended garbage is rejected too.
  spit(path, bytes + "x");
  CHECK_THROWS_WITH(read_checkpoint(path), LOCO_CONTAINS("trailing bytes"));
}

TEST_CASE("every single-bit flip is detected", "[checkpoint]") {
  TempDir dir;
  Sample s;
  s.write(dir / "good.bin");
  const std::string bytes = slurp(dir / "good.bin");
  const std::string path = dir / "flipped.bin";
  // Every bit of the prefix, then a spread of bytes over the header, data and trailer.
  std::vector<size_t> positions;
  for (size_t i = 0; i < 64; ++i) positions.push_back(i);
  for (size_t i = 64; i < bytes.size(); i += 13) positions.push_back(i);
  for (size_t i = bytes.size() - 8; i < bytes.size(); ++i) positions.push_back(i);
  int flips = 0;
  for (size_t pos : positions) {
    for (int bit : {0, 3, 7}) {
      std::string bad = bytes;
      bad[pos] = static_cast<char>(bad[pos] ^ (1 << bit));
      spit(path, bad);
      const std::string e = error_of([&] { read_checkpoint(path); });
      INFO("flip byte " << pos << " bit " << bit);
      REQUIRE_FALSE(e.empty());
      CHECK_THAT(e, LOCO_CONTAINS(path));
      ++flips;
    }
  }
  CHECK(flips > 300);

  // A flip inside a tensor's data names that tensor.
  const Checkpoint good = read_checkpoint(dir / "good.bin");
  const auto& t = good.tensor("adam.m");
  // The offset of the tensor in the file: its data pointer minus the start of the file
  // is not exposed, so locate its bytes in the file image instead.
  const std::string needle(static_cast<const char*>(t.data), 64);
  const size_t at = bytes.find(needle);
  REQUIRE(at != std::string::npos);
  std::string bad = bytes;
  bad[at + 5] ^= 0x10;
  spit(path, bad);
  CHECK_THROWS_WITH(read_checkpoint(path), LOCO_CONTAINS("checksum mismatch in tensor \"adam.m\""));
  // A flip in the trailer (the checksum itself).
  bad = bytes;
  bad[bytes.size() - 3] ^= 1;
  spit(path, bad);
  CHECK_THROWS_WITH(read_checkpoint(path),
                    LOCO_CONTAINS("checksum mismatch (file is corrupt or truncated)"));
  // A flip in the JSON header.
  bad = bytes;
  bad[70] ^= 0x01;
  spit(path, bad);
  CHECK_THROWS_WITH(read_checkpoint(path), LOCO_CONTAINS("checksum mismatch in the JSON header"));
}

TEST_CASE("wrong magic and versions are named", "[checkpoint]") {
  TempDir dir;
  Sample s;
  s.write(dir / "good.bin");
  const std::string bytes = slurp(dir / "good.bin");
  const std::string path = dir / "x.bin";

  spit(path,
       "PK\x03\x04 this is a zip file, not a checkpoint........................................");
  auto e = error_of([&] { read_checkpoint(path); });
  CHECK_THAT(e, LOCO_CONTAINS("not a loco checkpoint (bad magic \"PK\\x03\\x04"));

  spit(path, with_version(bytes, 2));
  e = error_of([&] { read_checkpoint(path); });
  CHECK_THAT(e,
             LOCO_CONTAINS("unsupported checkpoint format version 2 (this build reads version 1"));
  spit(path, with_version(bytes, 0));
  CHECK_THROWS_WITH(read_checkpoint(path),
                    LOCO_CONTAINS("unsupported checkpoint format version 0"));

  CHECK_THROWS_WITH(read_checkpoint(dir / "missing.bin"), LOCO_CONTAINS("No such file"));
  CHECK_THROWS_WITH(read_checkpoint(dir.path.string()), LOCO_CONTAINS("is a directory"));
}

TEST_CASE("structural checks hold even without the checksum (fuzzer mode)", "[checkpoint]") {
  // A checkpoint whose header lies but whose checksums were recomputed must still be
  // rejected by the structural checks; parse_checkpoint(..., verify_checksum=false) reaches
  // them directly.
  TempDir dir;
  std::vector<float> a(10, 1.0f), b(3, 2.0f);
  CheckpointWriter w;
  w.add("a", a.data(), a.size(), DType::F32);
  w.add("b", b.data(), b.size(), DType::F32);
  w.write(dir / "c.bin");
  const std::string bytes = slurp(dir / "c.bin");
  uint64_t header_bytes;
  std::memcpy(&header_bytes, bytes.data() + 16, 8);
  const std::string header = bytes.substr(64, header_bytes);

  auto parse_with_header = [&](std::string h) {
    REQUIRE(h.size() <= header_bytes);
    h.resize(header_bytes, ' ');
    std::string mutated = bytes;
    mutated.replace(64, header_bytes, h);
    return error_of([&] {
      parse_checkpoint(AlignedBytes::copy_of(mutated.data(), mutated.size()), "mem", false);
    });
  };
  auto replace = [](std::string s, const std::string& from, const std::string& to) {
    const size_t at = s.find(from);
    REQUIRE(at != std::string::npos);
    return s.replace(at, from.size(), to);
  };
  CHECK(parse_with_header(header).empty());
  CHECK_THAT(parse_with_header(replace(header, "\"count\":10", "\"count\":11")),
             LOCO_CONTAINS("do not make 40 bytes"));
  CHECK_THAT(parse_with_header(replace(header, "\"offset\":64", "\"offset\":0 ")),
             LOCO_CONTAINS("overlaps the previous tensor"));
  CHECK_THAT(parse_with_header(replace(header, "\"offset\":64", "\"offset\":65")),
             LOCO_CONTAINS("not 64-byte aligned"));
  CHECK_THAT(parse_with_header(replace(replace(header, "\"count\":3,", "\"count\":7,"),
                                       "\"bytes\":12", "\"bytes\":28")),
             LOCO_CONTAINS("lie outside the 76-byte data area"));
  CHECK_THAT(parse_with_header(replace(header, "\"dtype\":\"F32\"", "\"dtype\":\"F33\"")),
             LOCO_CONTAINS("unknown dtype \"F33\""));
  CHECK_THAT(parse_with_header(replace(header, "\"name\":\"b\"", "\"name\":\"a\"")),
             LOCO_CONTAINS("duplicate name \"a\""));
  CHECK_THAT(parse_with_header(replace(header, "\"count\":10", "\"count\":-1")),
             LOCO_CONTAINS("not a non-negative integer"));
  CHECK_THAT(parse_with_header(replace(header, "{", "[")), LOCO_CONTAINS("not valid JSON"));
  CHECK_THAT(parse_with_header(replace(header, "loco-checkpoint", "loco-checkpoinX")),
             LOCO_CONTAINS("\"format\""));
  CHECK_THAT(parse_with_header(std::string(30, '[')), LOCO_CONTAINS("not valid JSON"));
}

TEST_CASE("validate_compatible names the mismatch", "[checkpoint]") {
  Config c;
  const json meta = checkpoint_base_meta(c, 4, 1, 100);
  CHECK_NOTHROW(validate_compatible(meta, checkpoint_identity(c, 4, 1), "ck"));

  Config other = c;
  other.model.d_model = 256;
  other.model.n_heads = 8;
  auto e = error_of(
      [&] { validate_compatible(meta, checkpoint_identity(other, 4, 1), "ck/rank-1.bin"); });
  CHECK_THAT(e, LOCO_CONTAINS("ck/rank-1.bin: checkpoint does not match this run: model.d_model is "
                              "128 in the checkpoint but 256 here"));
  e = error_of([&] { validate_compatible(meta, checkpoint_identity(c, 8, 1), "ck"); });
  CHECK_THAT(e, LOCO_CONTAINS("world_size is 4 in the checkpoint but 8 here"));
  e = error_of([&] { validate_compatible(meta, checkpoint_identity(c, 4, 2), "ck"); });
  CHECK_THAT(e, LOCO_CONTAINS("rank is 1 in the checkpoint but 2 here"));
  other = c;
  other.distributed.method = "diloco";
  e = error_of([&] { validate_compatible(meta, checkpoint_identity(other, 4, 1), "ck"); });
  CHECK_THAT(e, LOCO_CONTAINS("method is \"ddp\" in the checkpoint but \"diloco\" here"));
  other = c;
  other.model.tie_embeddings = true;
  e = error_of([&] { validate_compatible(meta, checkpoint_identity(other, 4, 1), "ck"); });
  CHECK_THAT(e, LOCO_CONTAINS("model.tie_embeddings is false in the checkpoint but true here"));
  e = error_of([&] { validate_compatible(json{{"step", 1}}, checkpoint_identity(c, 4, 1), "ck"); });
  CHECK_THAT(e, LOCO_CONTAINS("it has no method"));

  // The stored config comes back.
  const Config back = config_from_checkpoint_meta(meta, "ck");
  CHECK(config_to_json(back) == config_to_json(c));
  CHECK_THROWS_WITH(config_from_checkpoint_meta(json{{"step", 1}}, "ck"),
                    LOCO_CONTAINS("no \"config\""));
}

TEST_CASE("a failed write leaves the previous checkpoint intact and no temporary file",
          "[checkpoint]") {
  TempDir dir;
  Sample old_ckpt;
  const std::string path = dir / "rank-0.bin";
  old_ckpt.write(path);
  const std::string old_bytes = slurp(path);

  Sample new_ckpt;
  new_ckpt.params = random_floats(1000, 99);
  new_ckpt.meta["step"] = 200;
  for (uint64_t at : {uint64_t{0}, uint64_t{1}, uint64_t{63}, uint64_t{64}, uint64_t{200},
                      uint64_t{old_bytes.size() / 2}, uint64_t{old_bytes.size() - 9},
                      uint64_t{old_bytes.size() - 1}}) {
    INFO("fail after " << at << " bytes");
    set_write_fault_for_testing(at);
    const std::string e = error_of([&] { new_ckpt.write(path); });
    set_write_fault_for_testing(std::nullopt);
    CHECK_THAT(e, LOCO_CONTAINS("cannot write " + path + ": injected write failure"));
    CHECK(slurp(path) == old_bytes);
    old_ckpt.check(read_checkpoint(path));
    CHECK_FALSE(has_temp_files(dir.path));
  }
  // A failed first write leaves nothing.
  set_write_fault_for_testing(10);
  CHECK_THROWS(new_ckpt.write(dir / "fresh.bin"));
  set_write_fault_for_testing(std::nullopt);
  CHECK_FALSE(fs::exists(dir / "fresh.bin"));
  CHECK_FALSE(has_temp_files(dir.path));
  // Without the fault the new one replaces the old one.
  new_ckpt.write(path);
  new_ckpt.check(read_checkpoint(path));
}

TEST_CASE("LOCO_FAULT_INJECT_WRITE makes writes fail", "[checkpoint]") {
  TempDir dir;
  Sample s;
  ::setenv("LOCO_FAULT_INJECT_WRITE", "100", 1);
  const std::string e = error_of([&] { s.write(dir / "a.bin"); });
  ::setenv("LOCO_FAULT_INJECT_WRITE", "12abc", 1);
  const std::string e2 = error_of([&] { s.write(dir / "a.bin"); });
  ::unsetenv("LOCO_FAULT_INJECT_WRITE");
  CHECK_THAT(e, LOCO_CONTAINS("injected write failure after 100 bytes"));
  CHECK_THAT(e2, LOCO_CONTAINS("LOCO_FAULT_INJECT_WRITE=12abc: expected a byte count"));
  CHECK_FALSE(fs::exists(dir / "a.bin"));
  CHECK_FALSE(has_temp_files(dir.path));
  s.write(dir / "a.bin");
  s.check(read_checkpoint(dir / "a.bin"));
}

TEST_CASE("unwritable destinations give a clear error", "[checkpoint]") {
  TempDir dir;
  Sample s;
  spit(dir / "file", "x");
  auto e = error_of([&] { s.write(dir / "file/rank-0.bin"); });
  CHECK_THAT(e, LOCO_CONTAINS("cannot write " + (dir / "file/rank-0.bin")));
  CHECK_THAT(e, LOCO_CONTAINS("Not a directory"));
  e = error_of([&] { s.write(dir / "missing/rank-0.bin"); });
  CHECK_THAT(e, LOCO_CONTAINS("does not exist"));
  if (::geteuid() != 0) {  // root ignores permission bits
    fs::create_directory(dir / "ro");
    ::chmod((dir / "ro").c_str(), 0500);
    e = error_of([&] { s.write(dir / "ro/rank-0.bin"); });
    CHECK_THAT(e, LOCO_CONTAINS("is not writable"));
    ::chmod((dir / "ro").c_str(), 0700);
  }
}

TEST_CASE("checkpoint directory layout, latest and resume resolution", "[checkpoint]") {
  TempDir dir;
  const std::string run = dir / "run";
  const std::string root = checkpoint_root(run);
  CHECK(root == run + "/checkpoints");
  CHECK(checkpoint_root(run, "/elsewhere") == "/elsewhere");
  CHECK(checkpoint_step_name(100) == "step-000100");
  CHECK(checkpoint_step_name(12345678) == "step-12345678");
  CHECK(checkpoint_rank_path(root, 100, 3) == root + "/step-000100/rank-3.bin");
  CHECK(parse_checkpoint_step_name("step-000100") == 100);
  CHECK_FALSE(parse_checkpoint_step_name("step-").has_value());
  CHECK_FALSE(parse_checkpoint_step_name("step-12a").has_value());
  CHECK_FALSE(parse_checkpoint_step_name("latest").has_value());
  CHECK(list_checkpoint_steps(root).empty());
  CHECK_FALSE(read_latest_checkpoint(root).has_value());
  CHECK_THROWS_WITH(resolve_resume("latest", root), LOCO_CONTAINS("no checkpoint to resume from"));

  Sample s;
  CheckpointWriter w;
  w.set_meta(s.meta);
  w.add("params", s.params);
  for (int64_t step : {100, 200, 300}) {
    for (int r = 0; r < 2; ++r)
      CHECK(write_checkpoint_rank(w, root, step, r) == checkpoint_rank_path(root, step, r));
    write_latest_checkpoint(root, step);
  }
  CHECK(checkpoint_rank_file(checkpoint_step_dir(root, 200), 1) ==
        checkpoint_rank_path(root, 200, 1));
  CHECK(read_checkpoint(checkpoint_rank_file(resolve_resume("latest", root), 1)).meta() == s.meta);
  CHECK(list_checkpoint_steps(root) == std::vector<int64_t>{100, 200, 300});
  CHECK(read_latest_checkpoint(root) == 300);
  CHECK(slurp(root + "/latest") == "step-000300\n");
  const std::string step300 = checkpoint_step_dir(root, 300);
  CHECK(resolve_resume("latest", root) == step300);
  CHECK(resolve_resume(run, "unused") == step300);
  CHECK(resolve_resume(root, "unused") == step300);
  CHECK(resolve_resume(checkpoint_step_dir(root, 200), "") == checkpoint_step_dir(root, 200));
  CHECK(resolve_resume(checkpoint_rank_path(root, 100, 1), "") == checkpoint_step_dir(root, 100));
  // A file that is not a rank file is named as such (not the rank-0.bin next to it).
  const std::string config_file = run + "/small.json";
  spit(config_file, "{}");
  CHECK_THROWS_WITH(resolve_resume(config_file, root),
                    LOCO_CONTAINS("cannot resume from " + config_file + ": not a checkpoint"));
  CHECK(resolve_checkpoint_file(run) == checkpoint_rank_path(root, 300, 0));
  CHECK(resolve_checkpoint_file(run, 1) == checkpoint_rank_path(root, 300, 1));
  CHECK_THROWS_WITH(resolve_checkpoint_file(run, 5), LOCO_CONTAINS("rank-5.bin"));
  CHECK_THROWS_WITH(resolve_resume(dir / "nope", ""), LOCO_CONTAINS("no such file or directory"));
  fs::create_directories(dir / "empty");
  CHECK_THROWS_WITH(resolve_resume(dir / "empty", ""),
                    LOCO_CONTAINS("not a checkpoint step directory"));
  CHECK_THROWS_WITH(write_latest_checkpoint(root, 999), LOCO_CONTAINS("no such directory"));

  // A malformed or dangling pointer is reported, not guessed around.
  spit(root + "/latest", "garbage\n");
  CHECK_THROWS_WITH(read_latest_checkpoint(root), LOCO_CONTAINS("expected a step directory name"));
  spit(root + "/latest", "step-000400\n");
  CHECK_THROWS_WITH(read_latest_checkpoint(root), LOCO_CONTAINS("does not exist"));
  write_latest_checkpoint(root, 300);
  CHECK_FALSE(has_temp_files(dir.path));
}

TEST_CASE("keep_last pruning", "[checkpoint]") {
  TempDir dir;
  const std::string root = dir / "ckpt";
  auto make = [&](int64_t step) {
    fs::create_directories(checkpoint_step_dir(root, step));
    spit(checkpoint_rank_path(root, step, 0), "x");
  };
  for (int64_t step : {100, 200, 300, 400, 500}) make(step);
  write_latest_checkpoint(root, 500);
  fs::create_directories(root + "/not-a-step");  // unrelated entries are ignored

  CHECK(prune_checkpoints(root, 0, 500).empty());  // 0 keeps all
  CHECK(prune_checkpoints(root, 2, 500) == std::vector<int64_t>{100, 200, 300});
  CHECK(list_checkpoint_steps(root) == std::vector<int64_t>{400, 500});
  CHECK(fs::exists(root + "/not-a-step"));

  // keep_last = 1 never removes the step just written nor the one `latest` names.
  make(600);
  CHECK(prune_checkpoints(root, 1, 600) == std::vector<int64_t>{400});  // latest is still 500
  CHECK(list_checkpoint_steps(root) == std::vector<int64_t>{500, 600});
  write_latest_checkpoint(root, 600);
  CHECK(prune_checkpoints(root, 1, 600) == std::vector<int64_t>{500});

  // Temporary files of killed writes are swept from the steps that remain.
  spit(checkpoint_step_dir(root, 600) + "/.rank-0.bin.tmp-123-0", "partial");
  spit(root + "/.latest.tmp-123-1", "partial");
  CHECK(prune_checkpoints(root, 1, 600).empty());
  CHECK_FALSE(has_temp_files(root));
  CHECK(fs::exists(checkpoint_rank_path(root, 600, 0)));
  // Without sweeping the step directories (checkpoints at syncs: other ranks may still be
  // writing there) only the root's temporary files go.
  spit(checkpoint_step_dir(root, 600) + "/.replica-x.bin.tmp-123-2", "being written");
  spit(root + "/.latest.tmp-123-3", "partial");
  CHECK(prune_checkpoints(root, 1, 600, /*sweep_step_dirs=*/false).empty());
  CHECK_FALSE(fs::exists(root + "/.latest.tmp-123-3"));
  CHECK(fs::exists(checkpoint_step_dir(root, 600) + "/.replica-x.bin.tmp-123-2"));
  fs::remove(checkpoint_step_dir(root, 600) + "/.replica-x.bin.tmp-123-2");

  // Resumed from an earlier step: newer directories of the abandoned run are left alone.
  make(100);
  make(50);
  CHECK(prune_checkpoints(root, 1, 100) == std::vector<int64_t>{50});
  CHECK(list_checkpoint_steps(root) == std::vector<int64_t>{100, 600});
}
