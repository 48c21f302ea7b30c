#include "loco/train/run_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "loco/core/error.hpp"
#include "loco/core/files.hpp"
#include "loco/io/checkpoint.hpp"

namespace loco {

namespace fs = std::filesystem;

namespace {

constexpr const char* kLockName = ".loco.lock";
constexpr const char* kRunFiles[] = {"config.json", "metrics.jsonl", "summary.json"};

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

std::string now_text() {
  const std::time_t t = std::time(nullptr);
  char buf[64] = {};
  std::tm tm{};
  ::localtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

}  // namespace

std::vector<std::string> previous_run_files(const std::string& dir,
                                            const std::string& checkpoint_root) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const char* name : kRunFiles)
    if (fs::exists(fs::path(dir) / name, ec)) found.push_back(name);
  const std::string root_name = fs::path(checkpoint_root).lexically_relative(dir).string();
  const std::string shown =
      root_name.empty() || root_name.rfind("..", 0) == 0 ? checkpoint_root : root_name;
  if (fs::exists(fs::path(checkpoint_root) / "latest", ec)) found.push_back(shown + "/latest");
  for (int64_t step : list_checkpoint_steps(checkpoint_root))
    found.push_back(shown + "/" + checkpoint_step_name(step));
  return found;
}

RunDirectory::RunDirectory(std::string dir, std::string checkpoint_root, bool resuming,
                           ExistingRun existing)
    : dir_(std::move(dir)), checkpoint_root_(std::move(checkpoint_root)), existing_(existing) {
  std::error_code ec;
  if (fs::exists(dir_, ec) && !fs::is_directory(dir_, ec))
    throw Error("run directory " + dir_ + " exists and is not a directory");
  created_ = !fs::exists(dir_, ec);
  make_directories(dir_);

  const std::string lock_path = (fs::path(dir_) / kLockName).string();
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0)
    throw Error("cannot create the lock file " + lock_path + ": " + std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder;
    char buf[512] = {};
    const ssize_t n = ::pread(lock_fd_, buf, sizeof buf - 1, 0);
    if (n > 0) holder = std::string(buf, static_cast<size_t>(n));
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(lock_fd_);
    lock_fd_ = -1;
    if (err == EWOULDBLOCK)
      throw Error("run directory " + dir_ + " is in use by another loco run" +
                  (holder.empty() ? std::string() : " (" + holder + ")") +
                  "; wait for it to end, or choose another --out");
    throw Error("cannot lock " + lock_path + ": " + std::strerror(err));
  }
  // Who holds the lock, for the message a second run prints.
  const std::string who =
      "pid " + std::to_string(::getpid()) + " on " + host_name() + ", started " + now_text() + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, who.data(), who.size(), 0) < 0) {
    // Only the message of a second run depends on it.
  }

  if (resuming || existing_ == ExistingRun::Overwrite) return;
  std::vector<std::string> previous;
  try {
    previous = previous_run_files(dir_, checkpoint_root_);
  } catch (...) {
    ::close(lock_fd_);  // a constructor that throws runs no destructor
    throw;
  }
  if (previous.empty()) return;
  ::close(lock_fd_);
  lock_fd_ = -1;
  std::string list;
  for (size_t i = 0; i < previous.size() && i < 5; ++i) list += (i ? ", " : "") + previous[i];
  if (previous.size() > 5) list += ", ...";
  throw Error("run directory " + dir_ + " already holds a run (" + list +
              "); continue it with --resume latest, replace it with --overwrite, or choose "
              "another --out");
}

RunDirectory::~RunDirectory() {
  if (lock_fd_ < 0) return;
  // A directory this run created, and never wrote into, goes away again with its lock file:
  // a refused start leaves nothing behind.
  if (created_ && !began_) {
    std::error_code ec;
    fs::remove(fs::path(dir_) / kLockName, ec);
    fs::remove(dir_, ec);  // only when empty
  }
  ::close(lock_fd_);
}

void RunDirectory::begin(const Config& config) {
  if (existing_ == ExistingRun::Overwrite) {
    std::error_code ec;
    for (const char* name : kRunFiles) {
      fs::remove(fs::path(dir_) / name, ec);
      if (ec)
        throw Error("--overwrite: cannot remove " + (fs::path(dir_) / name).string() + ": " +
                    ec.message());
    }
    for (int64_t step : list_checkpoint_steps(checkpoint_root_)) {
      fs::remove_all(checkpoint_step_dir(checkpoint_root_, step), ec);
      if (ec)
        throw Error("--overwrite: cannot remove " + checkpoint_step_dir(checkpoint_root_, step) +
                    ": " + ec.message());
    }
    fs::remove(fs::path(checkpoint_root_) / "latest", ec);
  }
  began_ = true;
  write_file_atomic((fs::path(dir_) / "config.json").string(),
                    config_to_json(config).dump(2) + "\n");
}

}  // namespace loco
