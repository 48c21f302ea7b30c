// safetensors reader/writer (loco/io/safetensors.hpp): round trips, the exact byte layout of
// the format, and hand-made files whose header lies in every way the reader must catch.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "loco/core/error.hpp"
#include "loco/io/safetensors.hpp"
#include "loco/ops/bf16.hpp"
#include "support/catch.hpp"
#include "support/temp_files.hpp"

using namespace loco;
namespace fs = std::filesystem;

namespace {

using loco::testing::slurp;
using loco::testing::TempDir;

// A file made of a literal header and `data_bytes` bytes of data.
std::string make_file(const std::string& header, size_t data_bytes, uint64_t claimed_len = ~0ull) {
  std::string out(8, '\0');
  const uint64_t n = claimed_len == ~0ull ? header.size() : claimed_len;
  std::memcpy(out.data(), &n, 8);
  out += header;
  out += std::string(data_bytes, '\x11');
  return out;
}

std::string parse_error(const std::string& bytes) {
  try {
    parse_safetensors(AlignedBytes::copy_of(bytes.data(), bytes.size()), "m.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("safetensors round trip F32, BF16, I32 with metadata", "[safetensors]") {
  TempDir dir;
  std::mt19937 gen(7);
  std::normal_distribution<float> dist;
  std::vector<float> a(6 * 5);
  for (auto& x : a) x = dist(gen);
  std::vector<uint16_t> b(7);
  for (size_t i = 0; i < b.size(); ++i) b[i] = ops::float_to_bf16_bits(dist(gen));
  std::vector<int32_t> c = {1, -2, 3};
  const std::string path = dir / "m.safetensors";
  write_safetensors(path,
                    {{"model.a.weight", StorageDType::F32, {6, 5}, a.data()},
                     {"b", StorageDType::BF16, {7}, b.data()},
                     {"c", StorageDType::I32, {1, 3}, c.data()},
                     {"scalar", StorageDType::F32, {}, a.data()},
                     {"empty", StorageDType::F32, {0, 4}, nullptr}},
                    {{"format", "pt"}, {"note", "ünïcode"}});
  const std::string bytes = slurp(path);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  CHECK((8 + n) % 8 == 0);  // data area 8-byte aligned

  const SafetensorsFile f = read_safetensors(path);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.metadata().at("note") == "ünïcode");
  REQUIRE(f.tensors().size() == 5);
  // File order is the order given.
  CHECK(f.tensors()[0].name == "model.a.weight");
  const auto& ta = f.get("model.a.weight");
  CHECK(ta.shape == std::vector<int64_t>{6, 5});
  CHECK(ta.dtype == StorageDType::F32);
  CHECK(f.to_f32("model.a.weight") == a);
  const auto& tb = f.get("b");
  CHECK(std::memcmp(tb.data, b.data(), b.size() * 2) == 0);
  const std::vector<float> bf = f.to_f32("b");
  for (size_t i = 0; i < b.size(); ++i) CHECK(bf[i] == ops::bf16_bits_to_float(b[i]));
  CHECK(std::memcmp(f.get("c").data, c.data(), 12) == 0);
  CHECK(f.get("scalar").shape.empty());
  CHECK(f.get("scalar").numel == 1);
  CHECK(f.to_f32("scalar") == std::vector<float>{a[0]});
  CHECK(f.get("empty").numel == 0);
  CHECK_THROWS_WITH(f.to_f32("c"), LOCO_CONTAINS("has dtype I32"));
  CHECK_THROWS_WITH(f.get("nope"), LOCO_CONTAINS("no tensor named \"nope\""));
  CHECK(f.find("nope") == nullptr);
}

TEST_CASE("safetensors writer produces the reference byte layout", "[safetensors]") {
  TempDir dir;
  const float v[2] = {1.0f, -2.0f};
  write_safetensors(dir / "x.safetensors", {{"w", StorageDType::F32, {2}, v}});
  const std::string bytes = slurp(dir / "x.safetensors");
  const std::string header = R"({"w":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}})";
  const size_t padded = (8 + header.size() + 7) / 8 * 8 - 8;
  std::string expected(8, '\0');
  const uint64_t n = padded;
  std::memcpy(expected.data(), &n, 8);
  expected += header + std::string(padded - header.size(), ' ');
  expected += std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8);
  CHECK(bytes == expected);
}

TEST_CASE("safetensors F16 and F64 widen to F32", "[safetensors]") {
  TempDir dir;
  const uint16_t h[5] = {0x3c00, 0xc000, 0x0001, 0x7c00, 0x3555};  // 1, -2, 2^-24, inf, ~1/3
  const double d[2] = {0.5, -1e300};
  write_safetensors(dir / "h.safetensors",
                    {{"h", StorageDType::F16, {5}, h}, {"d", StorageDType::F64, {2}, d}});
  const auto f = read_safetensors(dir / "h.safetensors");
  const auto hv = f.to_f32("h");
  CHECK(hv[0] == 1.0f);
  CHECK(hv[1] == -2.0f);
  CHECK(hv[2] == std::ldexp(1.0f, -24));
  CHECK(std::isinf(hv[3]));
  CHECK(hv[4] == Catch::Approx(0.33325195f));
  const auto dv = f.to_f32("d");
  CHECK(dv[0] == 0.5f);
  CHECK(std::isinf(dv[1]));
}

TEST_CASE("safetensors writer rejects bad input", "[safetensors]") {
  TempDir dir;
  const float v[1] = {1};
  const std::string p = dir / "bad.safetensors";
  CHECK_THROWS_WITH(write_safetensors(p, {{"", StorageDType::F32, {1}, v}}),
                    LOCO_CONTAINS("empty name"));
  CHECK_THROWS_WITH(write_safetensors(p, {{"__metadata__", StorageDType::F32, {1}, v}}),
                    LOCO_CONTAINS("reserved"));
  CHECK_THROWS_WITH(
      write_safetensors(p, {{"a", StorageDType::F32, {1}, v}, {"a", StorageDType::F32, {1}, v}}),
      LOCO_CONTAINS("tensor \"a\": written twice"));
  CHECK_THROWS_WITH(write_safetensors(p, {{"a", StorageDType::F32, {-1}, v}}),
                    LOCO_CONTAINS("negative dimension"));
  CHECK_FALSE(fs::exists(p));
}

TEST_CASE("safetensors reader rejects lying headers", "[safetensors]") {
  using S = std::string;
  const S ok =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]}})";
  CHECK(parse_error(make_file(ok, 14)).empty());

  struct Case {
    S header;
    size_t data;
    S expect;
  };
  const std::vector<Case> cases = {
      {ok, 13, "tensor \"b\": data_offsets [8, 14] run past the 13-byte data area"},
      {ok, 15, "the tensors cover 14 bytes but the data area has 15 (unexplained trailing bytes)"},
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8,
       "tensor \"a\": shape [3] of F32 needs 12 bytes but data_offsets [0, 8] span 8"},
      {R"({"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}})", 8,
       "tensor \"a\": unknown dtype \"F31\""},
      {R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8,
       "is not a non-negative integer"},
      {R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8,
       "is not a non-negative integer"},
      {R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8, "missing array \"shape\""},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8,
       "\"data_offsets\" must be [begin, end]"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, "end before they begin"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", 8,
       "unknown key \"extra\""},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
       16, "duplicate tensor name \"a\""},
      {R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8,
       "duplicate key \"dtype\""},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
       12, "tensor \"b\": data_offsets [8, 12] leave a gap after byte 4"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       8, "overlap the previous tensor"},
      {R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", 8,
       "shape overflows"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}})", 8,
       "run past"},
      {R"({"__metadata__":{"format":1}})", 0,
       "\"__metadata__\" value for \"format\" is not a string"},
      {R"({"__metadata__":[]})", 0, "\"__metadata__\" must be an object"},
      {R"({"":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})", 0, "empty name"},
      {R"({"a":[]})", 0, "tensor \"a\": entry is not an object"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8, "header is not valid JSON"},
      {"{\"a\xff\":{}}", 0, "header is not valid JSON"},  // not UTF-8
      {R"([1,2])", 0, "does not start with '{'"},
      {R"({"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{"j":{"k":{"l":{"m":{"n":{"o":{"p":{"q":{}}}}}}}}}}}}}}}}})",
       0, "nested deeper"},
  };
  for (const auto& c : cases) {
    INFO(c.header);
    CHECK_THAT(parse_error(make_file(c.header, c.data)), LOCO_CONTAINS(c.expect));
  }
  // Errors name the file.
  CHECK_THAT(parse_error(make_file(cases[0].header, 13)), LOCO_CONTAINS("m.safetensors: "));

  // Header length lies.
  CHECK_THAT(parse_error(make_file(ok, 14, 1000)),
             LOCO_CONTAINS("header length 1000 runs past the end"));
  CHECK_THAT(parse_error(make_file(ok, 14, 200'000'000)),
             LOCO_CONTAINS("exceeds the 100000000-byte limit"));
  CHECK_THAT(parse_error(make_file(ok, 14, ~0ull - 1)), LOCO_CONTAINS("exceeds"));
  CHECK_THAT(parse_error(make_file(ok, 14, 10)), LOCO_CONTAINS("not valid JSON"));
  CHECK_THAT(parse_error(make_file(ok, 14, 0)), LOCO_CONTAINS("too small"));
  CHECK_THAT(parse_error("abc"), LOCO_CONTAINS("too small for a safetensors file"));
  CHECK_THAT(parse_error(""), LOCO_CONTAINS("too small"));
  // Padding with spaces after the JSON is fine (that is what writers do).
  CHECK(parse_error(make_file(ok + "      ", 14)).empty());
}

TEST_CASE("safetensors reader rejects every truncation of a real file", "[safetensors]") {
  TempDir dir;
  std::vector<float> a(100, 0.5f);
  write_safetensors(dir / "t.safetensors", {{"a", StorageDType::F32, {10, 10}, a.data()}},
                    {{"format", "pt"}});
  const std::string bytes = slurp(dir / "t.safetensors");
  for (size_t n = 0; n < bytes.size(); ++n) {
    INFO("cut at " << n);
    CHECK_FALSE(parse_error(bytes.substr(0, n)).empty());
  }
  CHECK(parse_error(bytes).empty());
}
