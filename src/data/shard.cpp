// Token shards in llm.c's format: see include/loco/data/shard.hpp.
#include "loco/data/shard.hpp"

#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

#include "loco/core/error.hpp"

namespace loco {
namespace {

constexpr size_t kHeaderBytes = kShardHeaderInts * sizeof(int32_t);

std::string errno_text(int err) { return std::strerror(err); }

// Little-endian decoding/encoding, independent of the host's byte order.
int32_t load_i32(const unsigned char* p) {
  return static_cast<int32_t>(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
                              uint32_t(p[3]) << 24);
}
void store_u32(unsigned char* p, uint32_t v) {
  p[0] = static_cast<unsigned char>(v);
  p[1] = static_cast<unsigned char>(v >> 8);
  p[2] = static_cast<unsigned char>(v >> 16);
  p[3] = static_cast<unsigned char>(v >> 24);
}

// Closes a file descriptor on scope exit unless released.
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

void read_exact(int fd, unsigned char* buf, size_t n, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::read(fd, buf + done, n - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw Error(path + ": read failed: " + errno_text(errno));
    if (r == 0)
      throw Error(path + ": file shrank while reading (got " + std::to_string(done) + " of " +
                  std::to_string(n) + " bytes)");
    done += static_cast<size_t>(r);
  }
}

void write_all(int fd, const unsigned char* buf, size_t n, const std::string& what) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::write(fd, buf + done, n - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw Error(what + ": write failed: " + errno_text(errno));
    done += static_cast<size_t>(r);
  }
}

}  // namespace

std::vector<uint32_t> read_shard(const std::string& path, int vocab_size) {
  FdGuard f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) throw Error(path + ": cannot open shard: " + errno_text(errno));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) throw Error(path + ": cannot stat shard: " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) throw Error(path + ": not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < kHeaderBytes)
    throw Error(path + ": file is " + std::to_string(file_size) +
                " bytes, too small for the shard header (" + std::to_string(kHeaderBytes) +
                " bytes = " + std::to_string(kShardHeaderInts) + " int32)");

  unsigned char header[kHeaderBytes];
  read_exact(f.fd, header, kHeaderBytes, path);
  const int32_t magic = load_i32(header);
  const int32_t version = load_i32(header + 4);
  const int32_t count = load_i32(header + 8);

  size_t token_bytes = 0;
  if (magic == kShardMagicU16) {
    token_bytes = 2;
    if (version != kShardVersionU16)
      throw Error(path + ": bad version " + std::to_string(version) + " for magic " +
                  std::to_string(magic) + " (expected " + std::to_string(kShardVersionU16) +
                  " for uint16 tokens)");
  } else if (magic == kShardMagicU32) {
    token_bytes = 4;
    if (version != kShardVersionU32)
      throw Error(path + ": bad version " + std::to_string(version) + " for magic " +
                  std::to_string(magic) + " (expected " + std::to_string(kShardVersionU32) +
                  " for uint32 tokens)");
  } else {
    throw Error(path + ": bad magic " + std::to_string(magic) + " (expected " +
                std::to_string(kShardMagicU16) + " for uint16 tokens or " +
                std::to_string(kShardMagicU32) + " for uint32 tokens)");
  }
  if (count < 0)
    throw Error(path + ": negative token count " + std::to_string(count) + " in the header");

  const uint64_t expected = kHeaderBytes + static_cast<uint64_t>(count) * token_bytes;
  if (file_size != expected) {
    const uint64_t payload = file_size - kHeaderBytes;
    const std::string detail = "header says " + std::to_string(count) + " tokens of " +
                               std::to_string(token_bytes) + " bytes (file size " +
                               std::to_string(expected) + " bytes) but the file is " +
                               std::to_string(file_size) + " bytes";
    if (file_size < expected)
      throw Error(path + ": truncated: " + detail + " (" + std::to_string(payload / token_bytes) +
                  " whole tokens present)");
    throw Error(path + ": " + std::to_string(file_size - expected) + " trailing bytes: " + detail);
  }

  std::vector<unsigned char> raw(static_cast<size_t>(count) * token_bytes);
  read_exact(f.fd, raw.data(), raw.size(), path);
  std::vector<uint32_t> tokens(static_cast<size_t>(count));
  if (token_bytes == 2) {
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = uint32_t(raw[2 * i]) | uint32_t(raw[2 * i + 1]) << 8;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = static_cast<uint32_t>(load_i32(raw.data() + 4 * i));
  }

  if (vocab_size > 0) {
    const uint32_t limit = static_cast<uint32_t>(vocab_size);
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] >= limit)
        throw Error(path + ": token " + std::to_string(tokens[i]) + " at index " +
                    std::to_string(i) + " is >= vocab_size " + std::to_string(vocab_size));
    }
  }
  return tokens;
}

void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, bool force_u32) {
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    throw Error(path + ": " + std::to_string(tokens.size()) +
                " tokens do not fit one shard (the header's count is an int32)");
  bool u16 = !force_u32;
  if (u16) {
    for (uint32_t t : tokens) {
      if (t > 0xFFFFu) {
        u16 = false;
        break;
      }
    }
  }
  const size_t token_bytes = u16 ? 2 : 4;

  std::vector<unsigned char> buf(kHeaderBytes + tokens.size() * token_bytes, 0);
  store_u32(buf.data(), static_cast<uint32_t>(u16 ? kShardMagicU16 : kShardMagicU32));
  store_u32(buf.data() + 4, static_cast<uint32_t>(u16 ? kShardVersionU16 : kShardVersionU32));
  store_u32(buf.data() + 8, static_cast<uint32_t>(tokens.size()));
  unsigned char* out = buf.data() + kHeaderBytes;
  if (u16) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      out[2 * i] = static_cast<unsigned char>(tokens[i]);
      out[2 * i + 1] = static_cast<unsigned char>(tokens[i] >> 8);
    }
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) store_u32(out + 4 * i, tokens[i]);
  }

  // Temporary file in the same directory (so rename is atomic), fsync, rename, fsync the dir.
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  static std::atomic<uint64_t> counter{0};
  std::string tmp;
  FdGuard f;
  for (int attempt = 0; attempt < 100 && f.fd < 0; ++attempt) {
    std::string name = target.filename().string();
    name.insert(name.begin(), '.');
    name += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    tmp = (dir / name).string();
    f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (f.fd < 0 && errno != EEXIST)
      throw Error(path + ": cannot create temporary file " + tmp + ": " + errno_text(errno));
  }
  if (f.fd < 0) throw Error(path + ": cannot create a unique temporary file in " + dir.string());
  try {
    write_all(f.fd, buf.data(), buf.size(), tmp);
    if (::fsync(f.fd) != 0) throw Error(tmp + ": fsync failed: " + errno_text(errno));
    const int fd = f.fd;
    f.fd = -1;
    if (::close(fd) != 0) throw Error(tmp + ": close failed: " + errno_text(errno));
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw Error(path + ": cannot rename " + tmp + " into place: " + errno_text(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename durable; failure here leaves a complete file, so it is not fatal.
  FdGuard d;
  d.fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d.fd >= 0) ::fsync(d.fd);
}

std::vector<std::string> expand_shard_glob(const std::string& pattern) {
  if (pattern.empty()) throw Error("empty shard path/glob");
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), GLOB_MARK | GLOB_NOSORT, nullptr, &g);
  std::vector<std::string> files;
  if (rc == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) {
      std::string p = g.gl_pathv[i];
      if (!p.empty() && p.back() == '/') continue;  // GLOB_MARK flags directories
      files.push_back(std::move(p));
    }
  }
  ::globfree(&g);
  if (rc == GLOB_NOSPACE) throw Error("'" + pattern + "': out of memory expanding the glob");
  if (rc == GLOB_ABORTED) throw Error("'" + pattern + "': read error expanding the glob");
  if (files.empty())
    throw Error("no files match '" + pattern + "'" +
                (rc == 0 ? " (only directories matched)" : ""));
  // Byte order, not the locale's collation, so every machine reads the same order.
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace loco
