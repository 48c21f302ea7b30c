#include "loco/train/metrics_log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "loco/core/error.hpp"
#include "loco/core/files.hpp"

namespace loco {

MetricsLog::MetricsLog(std::string path) : path_(std::move(path)) {
  fault_ = current_write_fault();
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot open " + path_ + " for writing: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    throw Error("cannot open " + path_ + " for writing: " + std::strerror(err));
  }
  size_ = static_cast<uint64_t>(st.st_size);
}

MetricsLog::~MetricsLog() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsLog::write(const nlohmann::json& record) {
  if (fd_ < 0) throw Error("cannot write " + path_ + ": the file is closed after an error");
  const std::string line = record.dump() + "\n";
  size_t todo = line.size();
  bool inject = false;
  if (fault_ && size_ + todo > fault_->after_bytes) {
    todo = fault_->after_bytes > size_ ? static_cast<size_t>(fault_->after_bytes - size_) : 0;
    inject = true;
  }
  std::string why;
  size_t done = 0;
  while (done < todo) {
    const ssize_t n = ::write(fd_, line.data() + done, todo - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      why = std::strerror(errno);
      if (errno == ENOSPC) why += " (the disk is full)";
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (inject && why.empty()) {
    if (fault_->crash) std::_Exit(86);
    why = "injected write failure after " + std::to_string(size_ + done) +
          " bytes (LOCO_FAULT_INJECT_WRITE)";
  }
  if (why.empty()) {
    size_ += done;
    return;
  }
  // Cut the partial line off, so that the file holds only complete records.
  const bool cut = ::ftruncate(fd_, static_cast<off_t>(size_)) == 0;
  ::close(fd_);
  fd_ = -1;
  throw Error("cannot write " + path_ + ": " + why +
              (cut ? "" : " (and the partial line could not be removed)"));
}

MetricsTrim trim_metrics_after(const std::string& path, int64_t step) {
  MetricsTrim t;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return t;
  const std::string text = read_file(path);
  std::string kept;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) {  // a torn last line: the write never completed
      ++t.dropped;
      break;
    }
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) continue;
    nlohmann::json r;
    try {
      r = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      ++t.dropped;  // not a record (a torn line followed by more output)
      continue;
    }
    const auto s = r.is_object() ? r.find("step") : r.end();
    if (r.is_object() && s != r.end() && s->is_number() && s->get<double>() > step) {
      ++t.dropped;
      continue;
    }
    kept += line + "\n";
    ++t.kept;
  }
  if (t.dropped > 0) write_file_atomic(path, kept);
  return t;
}

}  // namespace loco
