#include "loco/io/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <new>

#include "loco/core/error.hpp"

namespace loco {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

std::mutex g_fault_mutex;
std::optional<uint64_t> g_fault_bytes;

// The fault in force for a new file: the in-process setting wins over the environment.
void current_fault(std::optional<uint64_t>& at, bool& crash) {
  {
    std::lock_guard<std::mutex> lock(g_fault_mutex);
    if (g_fault_bytes) {
      at = g_fault_bytes;
      crash = false;
      return;
    }
  }
  const char* env = std::getenv("LOCO_FAULT_INJECT_WRITE");
  if (env == nullptr || *env == '\0') return;
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(env, &end, 10);
  const std::string rest = end ? end : "";
  if (errno != 0 || end == env || (!rest.empty() && rest != ":crash"))
    throw Error(std::string("LOCO_FAULT_INJECT_WRITE=") + env +
                ": expected a byte count, optionally followed by \":crash\"");
  at = n;
  crash = rest == ":crash";
}

std::string parent_dir(const std::string& path) {
  const std::filesystem::path p(path);
  return p.has_parent_path() ? p.parent_path().string() : std::string(".");
}

// Why a file in `dir` cannot be created, in words, for the common cases.
std::string explain_create_failure(const std::string& dir, int err) {
  std::string why = errno_text(err);
  struct stat st {};
  if (err == ENOENT && ::stat(dir.c_str(), &st) != 0)
    why += " (directory " + dir + " does not exist)";
  else if (err == ENOTDIR)
    why += " (a component of " + dir + " is not a directory)";
  else if (err == EACCES || err == EPERM || err == EROFS)
    why += " (directory " + dir + " is not writable)";
  return why;
}

}  // namespace

std::optional<WriteFault> current_write_fault() {
  std::optional<uint64_t> at;
  bool crash = false;
  current_fault(at, crash);
  if (!at) return std::nullopt;
  return WriteFault{*at, crash};
}

void set_write_fault_for_testing(std::optional<uint64_t> fail_after_bytes) {
  std::lock_guard<std::mutex> lock(g_fault_mutex);
  g_fault_bytes = fail_after_bytes;
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  if (path_.empty()) throw Error("cannot write a file with an empty path");
  current_fault(fault_at_, fault_crash_);
  dir_ = parent_dir(path_);
  static std::atomic<uint64_t> counter{0};
  const std::string name = std::filesystem::path(path_).filename().string();
  for (int attempt = 0; attempt < 100; ++attempt) {
    tmp_ = (std::filesystem::path(dir_) /
            ("." + name + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++)))
               .string();
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ >= 0) return;
    if (errno != EEXIST)
      throw Error("cannot write " + path_ + ": " + explain_create_failure(dir_, errno));
  }
  throw Error("cannot write " + path_ + ": no unique temporary file name in " + dir_);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFile::fail(const std::string& why) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
  tmp_.clear();
  throw Error("cannot write " + path_ + ": " + why);
}

void AtomicFile::write(const void* data, size_t n) {
  if (fd_ < 0) throw Error("cannot write " + path_ + ": file is already closed");
  const auto* p = static_cast<const unsigned char*>(data);
  size_t todo = n;
  bool inject = false;
  if (fault_at_ && written_ + n > *fault_at_) {
    todo = static_cast<size_t>(*fault_at_ > written_ ? *fault_at_ - written_ : 0);
    inject = true;
  }
  size_t done = 0;
  while (done < todo) {
    const ssize_t r = ::write(fd_, p + done, todo - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail(errno_text(errno));
    done += static_cast<size_t>(r);
  }
  written_ += done;
  if (inject) {
    if (fault_crash_) std::_Exit(86);
    fail("injected write failure after " + std::to_string(written_) +
         " bytes (LOCO_FAULT_INJECT_WRITE / set_write_fault_for_testing)");
  }
}

void AtomicFile::commit() {
  if (fd_ < 0) throw Error("cannot write " + path_ + ": file is already closed");
  if (::fsync(fd_) != 0) fail("fsync failed: " + errno_text(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("close failed: " + errno_text(errno));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("rename failed: " + errno_text(errno));
  committed_ = true;
  fsync_directory(dir_);
}

void write_file_durably(const std::string& path, const void* data, size_t n) {
  AtomicFile f(path);
  f.write(data, n);
  f.commit();
}

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void AlignedBytes::Free::operator()(unsigned char* p) const { std::free(p); }

AlignedBytes AlignedBytes::allocate(size_t n) { return allocate_uninitialised(n, true); }

AlignedBytes AlignedBytes::allocate_uninitialised(size_t n, bool zero) {
  AlignedBytes b;
  const size_t rounded = (std::max<size_t>(n, 1) + 63) / 64 * 64;
  if (rounded < n) throw Error("cannot allocate " + std::to_string(n) + " bytes");
  auto* p = static_cast<unsigned char*>(std::aligned_alloc(64, rounded));
  if (p == nullptr) throw Error("out of memory allocating " + std::to_string(n) + " bytes");
  if (zero)
    std::memset(p, 0, rounded);
  else
    std::memset(p + n, 0, rounded - n);  // only the padding after the last byte
  b.data.reset(p);
  b.size = n;
  return b;
}

AlignedBytes AlignedBytes::copy_of(const void* src, size_t n) {
  AlignedBytes b = allocate(n);
  if (n) std::memcpy(b.data.get(), src, n);
  return b;
}

AlignedBytes read_file_aligned(const std::string& path, const std::string& what,
                               uint64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open " + what + ": " + errno_text(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw Error(path + ": cannot stat " + what + ": " + errno_text(errno));
  if (S_ISDIR(st.st_mode)) throw Error(path + ": is a directory, not a " + what);
  if (!S_ISREG(st.st_mode)) throw Error(path + ": not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes)
    throw Error(path + ": " + what + " is " + std::to_string(size) + " bytes, more than the " +
                std::to_string(max_bytes) + " allowed");
  AlignedBytes b = AlignedBytes::allocate_uninitialised(static_cast<size_t>(size), false);
  size_t done = 0;
  while (done < b.size) {
    const ssize_t r = ::read(fd, b.data.get() + done, b.size - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw Error(path + ": read failed: " + errno_text(errno));
    if (r == 0)
      throw Error(path + ": file shrank while reading (got " + std::to_string(done) + " of " +
                  std::to_string(b.size) + " bytes)");
    done += static_cast<size_t>(r);
  }
  return b;
}

}  // namespace loco
