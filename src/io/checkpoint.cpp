// The checkpoint container: see include/loco/io/checkpoint.hpp and docs/reliability.md.
//
// On-disk format, version 1 (all integers little-endian):
//
//   [0, 64)            prefix
//     0   char[8]  magic "LOCOCKPT"
//     8   u32      format version (1)
//     12  u32      prefix size (64)
//     16  u64      H: bytes of the JSON header (space-padded so that 64 + H is a multiple of 64)
//     24  u64      D: bytes of the data area
//     32  u64      XXH64 of the JSON header's H bytes
//     40  u64[2]   reserved, zero
//     56  u64      XXH64 of bytes [0, 56)
//   [64, 64+H)         JSON header {"format": "loco-checkpoint", "version": 1, "meta": {...},
//                      "tensors": [{"name", "dtype", "count", "offset", "bytes", "xxh64"}, ...]}
//                      offsets relative to the data area, multiples of 64, ascending
//   [64+H, 64+H+D)     data: each tensor's raw little-endian bytes; gaps are zero
//   [64+H+D, +8)       u64 XXH64 of every byte before it
#include "loco/io/checkpoint.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include "loco/core/error.hpp"
#include "loco/io/xxh64.hpp"

namespace loco {

static_assert(std::endian::native == std::endian::little,
              "checkpoints store raw little-endian data; big-endian hosts are not supported");

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr uint64_t kPrefixBytes = 64;
constexpr uint64_t kTrailerBytes = 8;
constexpr uint64_t kAlign = 64;
constexpr uint64_t kMaxHeaderBytes = 256ull << 20;  // metadata is kilobytes; this is corruption
constexpr int kMaxJsonDepth = 128;

uint64_t load_u64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint32_t load_u32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void store_u64(unsigned char* p, uint64_t v) { std::memcpy(p, &v, 8); }
void store_u32(unsigned char* p, uint32_t v) { std::memcpy(p, &v, 4); }

uint64_t align_up(uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

std::string hex64(uint64_t v) {
  static const char* digits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<size_t>(i)] = digits[v & 15];
  return s;
}

std::optional<uint64_t> parse_hex64(const std::string& s) {
  if (s.size() != 16) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else
      return std::nullopt;
    v = v << 4 | static_cast<uint64_t>(d);
  }
  return v;
}

// Printable rendering of raw bytes (the magic) for messages.
std::string show_bytes(const unsigned char* p, size_t n) {
  std::string s = "\"";
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = p[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      s += static_cast<char>(c);
    } else {
      static const char* d = "0123456789abcdef";
      s += "\\x";
      s += d[c >> 4];
      s += d[c & 15];
    }
  }
  return s + "\"";
}

std::string short_dump(const json& v) {
  std::string s;
  try {
    s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  } catch (const std::exception&) {
    s = "(unprintable)";
  }
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

struct TooDeep {};

json parse_json_limited(const char* begin, const char* end, const std::string& source,
                        const std::string& what) {
  try {
    json::parser_callback_t limit = [](int depth, json::parse_event_t, json&) {
      if (depth > kMaxJsonDepth) throw TooDeep{};
      return true;
    };
    return json::parse(begin, end, limit, /*allow_exceptions=*/true);
  } catch (const TooDeep&) {
    throw Error(source + ": " + what + " is nested deeper than " + std::to_string(kMaxJsonDepth) +
                " levels (file is corrupt)");
  } catch (const json::exception& e) {
    throw Error(source + ": " + what + " is not valid JSON (file is corrupt): " + e.what());
  }
}

[[noreturn]] void fail_at(const std::string& source, const std::string& why) {
  throw Error(source + ": " + why);
}

[[noreturn]] void bad_header(const std::string& source, const std::string& what) {
  throw Error(source + ": malformed JSON header: " + what + " (file is corrupt)");
}

}  // namespace

// ------------------------------------------------------------------ writer

void CheckpointWriter::set_meta(json meta) {
  if (!meta.is_object()) throw Error("checkpoint metadata must be a JSON object");
  meta_ = std::move(meta);
}

void CheckpointWriter::add(const std::string& name, const void* data, uint64_t count,
                           StorageDType dtype) {
  if (name.empty()) throw Error("checkpoint tensor names must not be empty");
  for (const auto& e : entries_)
    if (e.name == name) throw Error("checkpoint tensor \"" + name + "\" added twice");
  if (count > 0 && data == nullptr)
    throw Error("checkpoint tensor \"" + name + "\": null data for " + std::to_string(count) +
                " elements");
  if (count > std::numeric_limits<uint64_t>::max() / storage_dtype_size(dtype))
    throw Error("checkpoint tensor \"" + name + "\": element count overflows");
  entries_.push_back(Entry{name, dtype, count, data, 0});
}

void CheckpointWriter::add_copy(const std::string& name, const void* data, uint64_t count,
                                StorageDType dtype) {
  const size_t bytes = static_cast<size_t>(count * storage_dtype_size(dtype));
  std::vector<unsigned char> copy(bytes);
  if (bytes) std::memcpy(copy.data(), data, bytes);
  add(name, copy.data(), count, dtype);  // validates; the vector's heap block does not move
  owned_.push_back(std::move(copy));
  entries_.back().owned_index = owned_.size();
}

uint64_t CheckpointWriter::write(const std::string& path) const {
  // Layout and per-tensor hashes.
  json tensors = json::array();
  std::vector<uint64_t> offsets;
  uint64_t end = 0;
  for (const auto& e : entries_) {
    const uint64_t bytes = e.count * storage_dtype_size(e.dtype);
    const uint64_t offset = align_up(end);
    offsets.push_back(offset);
    end = offset + bytes;
    tensors.push_back({{"name", e.name},
                       {"dtype", storage_dtype_name(e.dtype)},
                       {"count", e.count},
                       {"offset", offset},
                       {"bytes", bytes},
                       {"xxh64", hex64(Xxh64::hash(e.data, static_cast<size_t>(bytes)))}});
  }
  const uint64_t data_bytes = end;
  json doc = {{"format", "loco-checkpoint"},
              {"version", kCheckpointVersion},
              {"meta", meta_},
              {"tensors", std::move(tensors)}};
  std::string header;
  try {
    header = doc.dump();
  } catch (const json::exception& e) {
    throw Error("cannot write " + path + ": metadata is not serialisable: " + e.what());
  }
  header.resize(align_up(kPrefixBytes + header.size()) - kPrefixBytes, ' ');

  unsigned char prefix[kPrefixBytes] = {};
  std::memcpy(prefix, kCheckpointMagic, 8);
  store_u32(prefix + 8, kCheckpointVersion);
  store_u32(prefix + 12, static_cast<uint32_t>(kPrefixBytes));
  store_u64(prefix + 16, header.size());
  store_u64(prefix + 24, data_bytes);
  store_u64(prefix + 32, Xxh64::hash(header.data(), header.size()));
  store_u64(prefix + 56, Xxh64::hash(prefix, 56));

  Xxh64 state;

  AtomicFile file(path);
  auto put = [&](const void* p, size_t n) {
    state.update(p, n);
    file.write(p, n);
  };
  put(prefix, sizeof prefix);
  put(header.data(), header.size());
  static const unsigned char zeros[kAlign] = {};
  uint64_t pos = 0;
  for (size_t i = 0; i < entries_.size(); ++i) {
    put(zeros, static_cast<size_t>(offsets[i] - pos));
    const uint64_t bytes = entries_[i].count * storage_dtype_size(entries_[i].dtype);
    // Large tensors in pieces, so a write never exceeds what one syscall takes.
    const auto* p = static_cast<const unsigned char*>(entries_[i].data);
    for (uint64_t done = 0; done < bytes;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(bytes - done, 1ull << 30));
      put(p + done, n);
      done += n;
    }
    pos = offsets[i] + bytes;
  }
  unsigned char trailer[kTrailerBytes];
  store_u64(trailer, state.digest());
  file.write(trailer, sizeof trailer);
  file.commit();
  return file.bytes_written();
}

// ------------------------------------------------------------------ reader

std::span<const float> CheckpointTensor::f32() const {
  if (dtype != StorageDType::F32)
    throw Error("checkpoint tensor \"" + name + "\" is " + storage_dtype_name(dtype) + ", not F32");
  return {static_cast<const float*>(data), static_cast<size_t>(count)};
}
std::span<const int32_t> CheckpointTensor::i32() const {
  if (dtype != StorageDType::I32)
    throw Error("checkpoint tensor \"" + name + "\" is " + storage_dtype_name(dtype) + ", not I32");
  return {static_cast<const int32_t*>(data), static_cast<size_t>(count)};
}
std::span<const uint16_t> CheckpointTensor::bf16_bits() const {
  if (dtype != StorageDType::BF16)
    throw Error("checkpoint tensor \"" + name + "\" is " + storage_dtype_name(dtype) +
                ", not BF16");
  return {static_cast<const uint16_t*>(data), static_cast<size_t>(count)};
}

bool Checkpoint::has(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return true;
  return false;
}

const CheckpointTensor& Checkpoint::tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return t;
  std::string present;
  for (const auto& t : tensors_) present += (present.empty() ? "" : ", ") + t.name;
  throw Error(path_ + ": no tensor named \"" + name +
              "\" in the checkpoint (it has: " + (present.empty() ? "none" : present) + ")");
}

void Checkpoint::copy_to(const std::string& name, void* dst, uint64_t count,
                         StorageDType dtype) const {
  const CheckpointTensor& t = tensor(name);
  if (t.dtype != dtype || t.count != count)
    throw Error(path_ + ": tensor \"" + name + "\" has " + std::to_string(t.count) + " " +
                storage_dtype_name(t.dtype) + " elements, expected " + std::to_string(count) + " " +
                storage_dtype_name(dtype) + " (checkpoint from a different model?)");
  if (t.bytes) std::memcpy(dst, t.data, static_cast<size_t>(t.bytes));
}

Checkpoint read_checkpoint(const std::string& path) {
  return parse_checkpoint(read_file_aligned(path, "checkpoint"), path, true);
}

Checkpoint parse_checkpoint(AlignedBytes bytes, const std::string& source, bool verify_checksum) {
  const unsigned char* p = bytes.data.get();
  const uint64_t size = bytes.size;

  if (p == nullptr || size == 0) fail_at(source, "empty file, not a loco checkpoint");
  const size_t magic_n = static_cast<size_t>(std::min<uint64_t>(size, 8));
  if (std::memcmp(p, kCheckpointMagic, magic_n) != 0)
    fail_at(source, "not a loco checkpoint (bad magic " + show_bytes(p, magic_n) +
                        ", expected \"LOCOCKPT\")");
  if (size < kPrefixBytes + kTrailerBytes)
    fail_at(source, "truncated: file is " + std::to_string(size) + " bytes, smaller than the " +
                        std::to_string(kPrefixBytes + kTrailerBytes) +
                        "-byte minimum of a checkpoint");
  const uint32_t version = load_u32(p + 8);
  if (version != kCheckpointVersion)
    fail_at(source, "unsupported checkpoint format version " + std::to_string(version) +
                        " (this build reads version " + std::to_string(kCheckpointVersion) +
                        "; if the file is not from a newer loco, it is corrupt)");
  if (verify_checksum && Xxh64::hash(p, 56) != load_u64(p + 56))
    fail_at(source, "checksum mismatch in the 64-byte prefix (file is corrupt)");
  if (load_u32(p + 12) != kPrefixBytes || load_u64(p + 40) != 0 || load_u64(p + 48) != 0)
    fail_at(source, "malformed prefix (prefix size / reserved fields; file is corrupt)");
  const uint64_t header_bytes = load_u64(p + 16);
  const uint64_t data_bytes = load_u64(p + 24);
  if (header_bytes > kMaxHeaderBytes)
    fail_at(source, "JSON header claims " + std::to_string(header_bytes) +
                        " bytes, more than the " + std::to_string(kMaxHeaderBytes >> 20) +
                        " MiB limit (file is corrupt)");
  if ((kPrefixBytes + header_bytes) % kAlign != 0)
    fail_at(source, "JSON header size " + std::to_string(header_bytes) +
                        " does not align the data area to 64 bytes (file is corrupt)");
  const uint64_t fixed = kPrefixBytes + header_bytes + kTrailerBytes;
  if (data_bytes > std::numeric_limits<uint64_t>::max() - fixed)
    fail_at(source, "data size " + std::to_string(data_bytes) + " overflows (file is corrupt)");
  const uint64_t expected = fixed + data_bytes;
  if (size < expected)
    fail_at(source, "truncated: file is " + std::to_string(size) + " bytes but its header says " +
                        std::to_string(expected) + " (" + std::to_string(expected - size) +
                        " bytes missing; the write was cut short or the file is corrupt)");
  if (size > expected)
    fail_at(source, std::to_string(size - expected) + " unexpected trailing bytes after the " +
                        std::to_string(expected) + " bytes its header describes (file is corrupt)");

  const char* header_begin = reinterpret_cast<const char*>(p + kPrefixBytes);
  const unsigned char* data = p + kPrefixBytes + header_bytes;
  const bool file_ok =
      !verify_checksum || Xxh64::hash(p, static_cast<size_t>(size - kTrailerBytes)) ==
                              load_u64(p + size - kTrailerBytes);
  if (!file_ok && Xxh64::hash(header_begin, static_cast<size_t>(header_bytes)) != load_u64(p + 32))
    fail_at(source, "checksum mismatch in the JSON header (file is corrupt)");

  const json doc =
      parse_json_limited(header_begin, header_begin + header_bytes, source, "the JSON header");
  if (!doc.is_object()) bad_header(source, "not an object");
  for (auto it = doc.begin(); it != doc.end(); ++it)
    if (it.key() != "format" && it.key() != "version" && it.key() != "meta" &&
        it.key() != "tensors")
      bad_header(source, "unknown key \"" + it.key() + "\"");
  const auto fmt = doc.find("format");
  if (fmt == doc.end() || !fmt->is_string() || fmt->get<std::string>() != "loco-checkpoint")
    bad_header(source, "\"format\" is not \"loco-checkpoint\"");
  const auto ver = doc.find("version");
  if (ver == doc.end() || !ver->is_number_unsigned() || ver->get<uint64_t>() != version)
    bad_header(source,
               "\"version\" does not match the prefix's version " + std::to_string(version));
  const auto meta = doc.find("meta");
  if (meta == doc.end() || !meta->is_object())
    bad_header(source, "\"meta\" is missing or not an object");
  const auto list = doc.find("tensors");
  if (list == doc.end() || !list->is_array())
    bad_header(source, "\"tensors\" is missing or not an array");

  Checkpoint c;
  c.path_ = source;
  c.meta_ = *meta;
  std::set<std::string> names;
  std::vector<uint64_t> hashes;
  uint64_t prev_end = 0;
  for (size_t i = 0; i < list->size(); ++i) {
    const json& t = (*list)[i];
    const std::string where = "tensor #" + std::to_string(i);
    if (!t.is_object()) bad_header(source, where + " is not an object");
    if (t.size() != 6)
      bad_header(source, where + " must have exactly name, dtype, count, offset, bytes, xxh64");
    auto get_u64 = [&](const char* key) -> uint64_t {
      const auto it = t.find(key);
      if (it == t.end() || !it->is_number_unsigned())
        bad_header(source, where + ": \"" + key + "\" is missing or not a non-negative integer");
      return it->get<uint64_t>();
    };
    auto get_str = [&](const char* key) -> std::string {
      const auto it = t.find(key);
      if (it == t.end() || !it->is_string())
        bad_header(source, where + ": \"" + key + "\" is missing or not a string");
      return it->get<std::string>();
    };
    CheckpointTensor ct;
    ct.name = get_str("name");
    const std::string named = where + " " + short_dump(json(ct.name));
    if (ct.name.empty()) bad_header(source, where + ": empty name");
    if (!names.insert(ct.name).second)
      bad_header(source, where + ": duplicate name \"" + ct.name + "\"");
    const std::string dtype_name = get_str("dtype");
    const auto dtype = parse_storage_dtype(dtype_name);
    if (!dtype) bad_header(source, named + ": unknown dtype " + short_dump(json(dtype_name)));
    ct.dtype = *dtype;
    ct.count = get_u64("count");
    const uint64_t offset = get_u64("offset");
    ct.bytes = get_u64("bytes");
    const auto hash = parse_hex64(get_str("xxh64"));
    if (!hash) bad_header(source, named + ": \"xxh64\" is not 16 lowercase hex digits");
    const uint64_t elem = storage_dtype_size(ct.dtype);
    if (ct.count > std::numeric_limits<uint64_t>::max() / elem || ct.count * elem != ct.bytes)
      bad_header(source, named + ": " + std::to_string(ct.count) + " " + dtype_name +
                             " elements do not make " + std::to_string(ct.bytes) + " bytes");
    if (offset % kAlign != 0)
      bad_header(source, named + ": offset " + std::to_string(offset) + " is not 64-byte aligned");
    if (offset < prev_end)
      bad_header(source, named + ": offset " + std::to_string(offset) +
                             " overlaps the previous tensor or is out of order");
    if (offset > data_bytes || ct.bytes > data_bytes - offset)
      bad_header(source, named + ": bytes [" + std::to_string(offset) + ", " +
                             std::to_string(offset) + " + " + std::to_string(ct.bytes) +
                             ") lie outside the " + std::to_string(data_bytes) + "-byte data area");
    prev_end = offset + ct.bytes;
    ct.data = data + offset;
    hashes.push_back(*hash);
    c.tensors_.push_back(std::move(ct));
  }
  if (prev_end != data_bytes)
    bad_header(source, "the tensors end at byte " + std::to_string(prev_end) + " of a " +
                           std::to_string(data_bytes) + "-byte data area");

  if (!file_ok) {
    // Say which tensor is damaged, when one is.
    for (size_t i = 0; i < c.tensors_.size(); ++i) {
      const auto& t = c.tensors_[i];
      if (Xxh64::hash(t.data, static_cast<size_t>(t.bytes)) != hashes[i]) {
        const uint64_t at = static_cast<uint64_t>(static_cast<const unsigned char*>(t.data) - p);
        fail_at(source, "checksum mismatch in tensor \"" + t.name + "\" (file bytes " +
                            std::to_string(at) + ".." + std::to_string(at + t.bytes) +
                            "; file is corrupt or truncated)");
      }
    }
    fail_at(source, "checksum mismatch (file is corrupt or truncated)");
  }
  c.bytes_ = std::move(bytes);
  return c;
}

// ------------------------------------------------------------------ compatibility

json checkpoint_identity(const Config& config, int world_size, int rank) {
  const ModelConfig& m = config.model;
  return {{"model",
           {{"vocab_size", m.vocab_size},
            {"d_model", m.d_model},
            {"n_layers", m.n_layers},
            {"n_heads", m.n_heads},
            {"n_kv_heads", m.n_kv_heads},
            {"d_ff", m.d_ff},
            {"tie_embeddings", m.tie_embeddings}}},
          {"method", config.distributed.method},
          {"replica_size", config.distributed.replica_size},
          {"optimizer", config.optimizer.type},
          {"world_size", world_size},
          {"rank", rank}};
}

namespace {

void compare_json(const json& meta, const json& expected, const std::string& prefix,
                  const std::string& source) {
  for (auto it = expected.begin(); it != expected.end(); ++it) {
    const std::string path = prefix + it.key();
    const auto got = meta.is_object() ? meta.find(it.key()) : meta.end();
    if (!meta.is_object() || got == meta.end())
      throw Error(source + ": checkpoint does not match this run: it has no " + path +
                  " (this run has " + short_dump(*it) + "; not a loco training checkpoint?)");
    if (it->is_object() && got->is_object()) {
      compare_json(*got, *it, path + ".", source);
    } else if (*got != *it) {
      throw Error(source + ": checkpoint does not match this run: " + path + " is " +
                  short_dump(*got) + " in the checkpoint but " + short_dump(*it) + " here");
    }
  }
}

}  // namespace

void validate_compatible(const json& meta, const json& expected, const std::string& source) {
  if (!expected.is_object()) throw Error("validate_compatible: expected must be a JSON object");
  compare_json(meta, expected, "", source);
}

json checkpoint_base_meta(const Config& config, int world_size, int rank, int64_t step) {
  json meta = checkpoint_identity(config, world_size, rank);
  meta["format"] = "loco-checkpoint";
  meta["step"] = step;
  meta["config"] = config_to_json(config);
  return meta;
}

Config config_from_checkpoint_meta(const json& meta, const std::string& source) {
  const auto it = meta.is_object() ? meta.find("config") : meta.end();
  if (!meta.is_object() || it == meta.end() || !it->is_object())
    throw Error(source +
                ": checkpoint metadata has no \"config\" object (not written by loco's "
                "trainer?)");
  return config_from_json(*it, source + " (meta.config)");
}

// ------------------------------------------------------------------ directory layout

std::string checkpoint_root(const std::string& run_dir, const std::string& checkpoint_dir) {
  if (!checkpoint_dir.empty()) return checkpoint_dir;
  return (fs::path(run_dir) / "checkpoints").string();
}

std::string checkpoint_step_name(int64_t step) {
  if (step < 0) throw Error("checkpoint step must be >= 0, got " + std::to_string(step));
  std::string digits = std::to_string(step);
  if (digits.size() < 6) digits.insert(0, 6 - digits.size(), '0');
  return "step-" + digits;
}

std::string checkpoint_step_dir(const std::string& root, int64_t step) {
  return (fs::path(root) / checkpoint_step_name(step)).string();
}

std::string checkpoint_rank_path(const std::string& root, int64_t step, int rank) {
  return checkpoint_rank_file(checkpoint_step_dir(root, step), rank);
}

std::optional<int64_t> parse_checkpoint_step_name(const std::string& name) {
  if (name.size() <= 5 || name.compare(0, 5, "step-") != 0 || name.size() > 5 + 18)
    return std::nullopt;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

std::string checkpoint_rank_file(const std::string& step_dir, int rank) {
  if (rank < 0) throw Error("checkpoint rank must be >= 0, got " + std::to_string(rank));
  return (fs::path(step_dir) / ("rank-" + std::to_string(rank) + ".bin")).string();
}

std::string write_checkpoint_rank(const CheckpointWriter& w, const std::string& root, int64_t step,
                                  int rank) {
  const std::string dir = checkpoint_step_dir(root, step);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create checkpoint directory " + dir + ": " + ec.message());
  const std::string path = checkpoint_rank_file(dir, rank);
  w.write(path);
  return path;
}

std::vector<int64_t> list_checkpoint_steps(const std::string& root) {
  std::vector<int64_t> steps;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return steps;
  fs::directory_iterator it(root, ec), end;
  if (ec) throw Error("cannot list checkpoint directory " + root + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw Error("cannot list checkpoint directory " + root + ": " + ec.message());
    std::error_code ec2;
    if (!it->is_directory(ec2)) continue;
    if (auto s = parse_checkpoint_step_name(it->path().filename().string())) steps.push_back(*s);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

void write_latest_checkpoint(const std::string& root, int64_t step) {
  const std::string dir = checkpoint_step_dir(root, step);
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error("cannot point " + (fs::path(root) / "latest").string() + " at " + dir +
                ": no such directory");
  write_file_durably((fs::path(root) / "latest").string(), checkpoint_step_name(step) + "\n");
}

std::optional<int64_t> read_latest_checkpoint(const std::string& root) {
  const std::string path = (fs::path(root) / "latest").string();
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  AlignedBytes b = read_file_aligned(path, "checkpoint pointer file", 4096);
  std::string text(reinterpret_cast<const char*>(b.data.get()), b.size);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' '))
    text.pop_back();
  const auto step = parse_checkpoint_step_name(text);
  if (!step)
    throw Error(path + ": expected a step directory name such as \"step-000100\", found " +
                short_dump(json(text)));
  if (!fs::is_directory(checkpoint_step_dir(root, *step), ec))
    throw Error(path + " points to " + text + ", but " + checkpoint_step_dir(root, *step) +
                " does not exist");
  return step;
}

std::vector<int64_t> prune_checkpoints(const std::string& root, int keep_last, int64_t just_written,
                                       bool sweep_step_dirs) {
  std::vector<int64_t> removed;
  if (keep_last <= 0) return removed;
  std::optional<int64_t> latest;
  try {
    latest = read_latest_checkpoint(root);
  } catch (const Error&) {
    // A malformed pointer protects nothing; prune by step numbers alone.
  }
  std::vector<int64_t> steps = list_checkpoint_steps(root);
  std::vector<int64_t> older;
  for (int64_t s : steps)
    if (s <= just_written) older.push_back(s);
  std::sort(older.rbegin(), older.rend());  // newest first
  for (size_t i = 0; i < older.size(); ++i) {
    const int64_t s = older[i];
    if (static_cast<int>(i) < keep_last || s == just_written || (latest && s == *latest)) continue;
    std::error_code ec;
    fs::remove_all(checkpoint_step_dir(root, s), ec);
    if (ec)
      throw Error("cannot remove old checkpoint " + checkpoint_step_dir(root, s) + ": " +
                  ec.message());
    removed.push_back(s);
  }
  // Hidden temporary files of writes that were killed mid-way (AtomicFile names them
  // ".<name>.tmp-<pid>-<n>"), in the root and the step directories that remain.
  auto sweep = [](const fs::path& dir) {
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.size() > 1 && name[0] == '.' && name.find(".tmp-") != std::string::npos) {
        std::error_code ec2;
        if (it->is_regular_file(ec2)) fs::remove(it->path(), ec2);
      }
    }
  };
  sweep(root);
  if (sweep_step_dirs)
    for (int64_t s : list_checkpoint_steps(root))
      if (s <= just_written) sweep(checkpoint_step_dir(root, s));
  if (!removed.empty()) fsync_directory(root);
  std::sort(removed.begin(), removed.end());
  return removed;
}

std::string resolve_resume(const std::string& spec, const std::string& root) {
  auto from_root = [](const std::string& r, const std::string& what) {
    const auto step = read_latest_checkpoint(r);
    if (!step)
      throw Error("no checkpoint to resume from in " + what + ": " +
                  (fs::path(r) / "latest").string() + " does not exist");
    return checkpoint_step_dir(r, *step);
  };
  if (spec == "latest") return from_root(root, root);
  std::error_code ec;
  const fs::path p(spec);
  if (fs::is_regular_file(p, ec)) {
    // A rank file stands for its step directory; anything else (a config, a typo) is named
    // as what it is rather than blaming the rank file that would be read next to it.
    const std::string name = p.filename().string();
    const bool rank_file = (name.rfind("rank-", 0) == 0 && name.size() > 9 &&
                            name.compare(name.size() - 4, 4, ".bin") == 0) ||
                           name == "global.bin";
    if (!rank_file)
      throw Error("cannot resume from " + spec +
                  ": not a checkpoint (a checkpoint file is named rank-<r>.bin or global.bin; "
                  "give \"latest\", a step directory, a run directory or a checkpoint file)");
    const fs::path parent = p.has_parent_path() ? p.parent_path() : fs::path(".");
    return parent.string();
  }
  if (!fs::is_directory(p, ec))
    throw Error("cannot resume from " + spec + ": no such file or directory");
  if (fs::exists(p / "rank-0.bin", ec) || fs::exists(p / "global.bin", ec)) return p.string();
  if (fs::exists(p / "latest", ec)) return from_root(p.string(), spec);
  if (fs::exists(p / "checkpoints" / "latest", ec))
    return from_root((p / "checkpoints").string(), spec);
  throw Error("cannot resume from " + spec +
              ": not a checkpoint step directory (no rank-0.bin or global.bin), a checkpoint "
              "directory (no latest) or a run directory (no checkpoints/latest)");
}

std::string resolve_checkpoint_file(const std::string& path, int rank) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return path;
  if (!fs::exists(path, ec))
    throw Error(path +
                ": no such file or directory (expected a checkpoint file, a checkpoint "
                "step directory or a run directory)");
  const std::string step_dir = resolve_resume(path, path);
  std::string file = checkpoint_rank_file(step_dir, rank);
  // A checkpoint written at an outer sync: θ_global lives in global.bin.
  if (!fs::is_regular_file(file, ec) && fs::is_regular_file(fs::path(step_dir) / "global.bin", ec))
    file = (fs::path(step_dir) / "global.bin").string();
  if (!fs::is_regular_file(file, ec))
    throw Error("no checkpoint file " + file + " (resolved from " + path + ")");
  return file;
}

}  // namespace loco
