// safetensors reader and writer: see include/loco/io/safetensors.hpp.
#include "loco/io/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "loco/core/error.hpp"
#include "loco/ops/bf16.hpp"

namespace loco {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts are not supported");

using nlohmann::json;

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit
constexpr int kMaxJsonDepth = 16;                  // the schema is 3 levels deep

std::string quoted(const std::string& s) {
  std::string out = json(s).dump(-1, ' ', false, json::error_handler_t::replace);
  if (out.size() > 120) out = out.substr(0, 116) + "...\"";
  return out;
}

[[noreturn]] void fail(const std::string& source, const std::string& why) {
  throw Error(source + ": " + why);
}

[[noreturn]] void fail_tensor(const std::string& source, const std::string& name,
                              const std::string& why) {
  throw Error(source + ": tensor " + quoted(name) + ": " + why);
}

struct TooDeep {};
struct DuplicateKey {
  std::string key;
  int depth;
};

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant · 2^-24
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // inf / nan
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

}  // namespace

// ------------------------------------------------------------------ writer

void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (t.name.empty()) fail(path, "cannot write a tensor with an empty name");
    if (t.name == "__metadata__") fail(path, "\"__metadata__\" is reserved, not a tensor name");
    if (header.contains(t.name)) fail_tensor(path, t.name, "written twice");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) fail_tensor(path, t.name, "negative dimension " + std::to_string(d));
      if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d))
        fail_tensor(path, t.name, "shape overflows");
      numel *= static_cast<uint64_t>(d);
    }
    const uint64_t bytes = numel * storage_dtype_size(t.dtype);
    if (bytes > 0 && t.data == nullptr) fail_tensor(path, t.name, "no data");
    header[t.name] = {{"dtype", storage_dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(bytes);
    offset += bytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    fail(path,
         std::string("cannot encode the header (names and metadata must be UTF-8): ") + e.what());
  }
  text.resize((8 + text.size() + 7) / 8 * 8 - 8, ' ');

  unsigned char len[8];
  const uint64_t n = text.size();
  std::memcpy(len, &n, 8);
  AtomicFile file(path);
  file.write(len, 8);
  file.write(text.data(), text.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto* p = static_cast<const unsigned char*>(tensors[i].data);
    for (uint64_t done = 0; done < sizes[i];) {
      const size_t chunk = static_cast<size_t>(std::min<uint64_t>(sizes[i] - done, 1ull << 30));
      file.write(p + done, chunk);
      done += chunk;
    }
  }
  file.commit();
}

// ------------------------------------------------------------------ reader

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const SafetensorsTensor& SafetensorsFile::get(const std::string& name) const {
  if (const auto* t = find(name)) return *t;
  throw Error(path_ + ": no tensor named " + quoted(name));
}

std::vector<float> SafetensorsFile::to_f32(const std::string& name) const {
  const SafetensorsTensor& t = get(name);
  std::vector<float> out(static_cast<size_t>(t.numel));
  to_f32(t, out.data());
  return out;
}

void SafetensorsFile::to_f32(const SafetensorsTensor& t, float* dst) const {
  const size_t n = static_cast<size_t>(t.numel);
  switch (t.dtype) {
    case StorageDType::F32:
      if (n) std::memcpy(dst, t.data, n * 4);
      return;
    case StorageDType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, t.data + 2 * i, 2);
        dst[i] = ops::bf16_bits_to_float(b);
      }
      return;
    case StorageDType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    case StorageDType::F64:
      for (size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, t.data + 8 * i, 8);
        dst[i] = static_cast<float>(d);
      }
      return;
    default:
      throw Error(path_ + ": tensor " + quoted(t.name) + " has dtype " +
                  storage_dtype_name(t.dtype) +
                  "; expected a floating-point tensor (F32, BF16, "
                  "F16 or F64)");
  }
}

SafetensorsFile read_safetensors(const std::string& path) {
  return parse_safetensors(read_file_aligned(path, "safetensors file"), path);
}

SafetensorsFile parse_safetensors(AlignedBytes bytes, const std::string& source) {
  const uint64_t size = bytes.size;
  const unsigned char* p = bytes.data.get();
  if (p == nullptr || size < 8)
    fail(source, "file is " + std::to_string(size) +
                     " bytes, too small for a safetensors file (8-byte header length first)");
  uint64_t header_len;
  std::memcpy(&header_len, p, 8);
  if (header_len > kMaxHeaderBytes)
    fail(source, "header length " + std::to_string(header_len) + " exceeds the " +
                     std::to_string(kMaxHeaderBytes) + "-byte limit (not a safetensors file?)");
  if (header_len > size - 8)
    fail(source, "header length " + std::to_string(header_len) + " runs past the end of the " +
                     std::to_string(size) + "-byte file (truncated or not a safetensors file)");
  if (header_len < 2) fail(source, "header length " + std::to_string(header_len) + " is too small");
  const char* hb = reinterpret_cast<const char*>(p + 8);
  if (hb[0] != '{') fail(source, "header does not start with '{' (not a safetensors file?)");

  json header;
  try {
    std::vector<std::set<std::string>> keys;
    json::parser_callback_t cb = [&keys](int depth, json::parse_event_t event, json& parsed) {
      if (depth > kMaxJsonDepth) throw TooDeep{};
      switch (event) {
        case json::parse_event_t::object_start:
          keys.emplace_back();
          break;
        case json::parse_event_t::object_end:
          if (!keys.empty()) keys.pop_back();
          break;
        case json::parse_event_t::key:
          if (!keys.empty() && parsed.is_string() &&
              !keys.back().insert(parsed.get<std::string>()).second)
            throw DuplicateKey{parsed.get<std::string>(), depth};
          break;
        default:
          break;
      }
      return true;
    };
    header = json::parse(hb, hb + header_len, cb, /*allow_exceptions=*/true);
  } catch (const TooDeep&) {
    fail(source, "header JSON is nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  } catch (const DuplicateKey& d) {
    if (d.depth <= 1) fail(source, "duplicate tensor name " + quoted(d.key) + " in the header");
    fail(source, "duplicate key " + quoted(d.key) + " in the header");
  } catch (const json::exception& e) {
    fail(source, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(source, "header is not a JSON object");

  const uint64_t data_size = size - 8 - header_len;
  const unsigned char* data = p + 8 + header_len;
  SafetensorsFile f;
  f.path_ = source;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(source, "\"__metadata__\" must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m->is_string())
          fail(source, "\"__metadata__\" value for " + quoted(m.key()) + " is not a string");
        f.metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    if (name.empty()) fail(source, "a tensor has an empty name");
    if (!v.is_object()) fail_tensor(source, name, "entry is not an object");
    for (auto k = v.begin(); k != v.end(); ++k)
      if (k.key() != "dtype" && k.key() != "shape" && k.key() != "data_offsets")
        fail_tensor(source, name,
                    "unknown key " + quoted(k.key()) + " (expected dtype, shape, data_offsets)");
    SafetensorsTensor t;
    t.name = name;
    const auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) fail_tensor(source, name, "missing string \"dtype\"");
    const auto parsed = parse_storage_dtype(dt->get<std::string>());
    if (!parsed)
      fail_tensor(source, name,
                  "unknown dtype " + quoted(dt->get<std::string>()) +
                      " (known: " + storage_dtype_names() + ")");
    t.dtype = *parsed;
    const auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) fail_tensor(source, name, "missing array \"shape\"");
    t.numel = 1;
    bool overflow = false;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned())
        fail_tensor(source, name,
                    "shape entry " + quoted(d.dump()) + " is not a non-negative integer");
      const uint64_t x = d.get<uint64_t>();
      if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail_tensor(source, name, "dimension " + std::to_string(x) + " is too large");
      t.shape.push_back(static_cast<int64_t>(x));
      if (x != 0 && t.numel > std::numeric_limits<uint64_t>::max() / x) overflow = true;
      t.numel *= x;
    }
    if (std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end()) {
      t.numel = 0;
      overflow = false;
    }
    const uint64_t elem = storage_dtype_size(t.dtype);
    if (overflow || t.numel > std::numeric_limits<uint64_t>::max() / elem)
      fail_tensor(source, name, "shape overflows 64 bits");
    const auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      fail_tensor(source, name, "\"data_offsets\" must be [begin, end] with non-negative integers");
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    if (t.end < t.begin)
      fail_tensor(source, name,
                  "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                      "] end before they begin");
    if (t.end > data_size)
      fail_tensor(source, name,
                  "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                      "] run past the " + std::to_string(data_size) +
                      "-byte data area (file truncated?)");
    if (t.numel * elem != t.end - t.begin)
      fail_tensor(source, name,
                  "shape " + sh->dump() + " of " + storage_dtype_name(t.dtype) + " needs " +
                      std::to_string(t.numel * elem) + " bytes but data_offsets [" +
                      std::to_string(t.begin) + ", " + std::to_string(t.end) + "] span " +
                      std::to_string(t.end - t.begin));
    t.data = data + t.begin;
    f.tensors_.push_back(std::move(t));
  }
  std::sort(f.tensors_.begin(), f.tensors_.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  uint64_t expect = 0;
  for (const auto& t : f.tensors_) {
    if (t.begin != expect)
      fail_tensor(
          source, t.name,
          "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] " +
              (t.begin < expect ? "overlap the previous tensor" : "leave a gap after byte ") +
              (t.begin < expect ? "" : std::to_string(expect)) +
              " (tensors must cover the data area back to back)");
    expect = t.end;
  }
  if (expect != data_size)
    fail(source, "the tensors cover " + std::to_string(expect) + " bytes but the data area has " +
                     std::to_string(data_size) + " (" +
                     (expect < data_size ? "unexplained trailing bytes" : "truncated") + ")");
  f.bytes_ = std::move(bytes);
  return f;
}

}  // namespace loco
