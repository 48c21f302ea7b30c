// metrics.jsonl: one JSON object per line, appended by rank 0 while training.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "loco/io/file_io.hpp"

namespace loco {

class MetricsLog {
 public:
  explicit MetricsLog(std::string path);  // opens for appending (creates it); throws
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  // Appends `record` as one line with write(2) (unbuffered: when it returns, the line is in
  // the file). Any failure (a full disk, an I/O error) throws loco::Error naming the file and
  // the reason, after cutting the partial line off again, so the file stays a sequence of
  // complete lines. Honours the write fault injection of loco/io/file_io.hpp
  // (LOCO_FAULT_INJECT_WRITE: fail once the file would exceed N bytes).
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;  // bytes of complete lines
  std::optional<WriteFault> fault_;
};

// Resuming from `step`: rewrites `path` (atomically) keeping the records whose "step" is at
// most `step` and the records without one, and dropping a torn last line (a run killed
// mid-write), so that the resumed run's records follow without repeats. No file: nothing to
// do.
struct MetricsTrim {
  size_t kept = 0;
  size_t dropped = 0;  // records past `step`, plus a torn line
};
MetricsTrim trim_metrics_after(const std::string& path, int64_t step);

}  // namespace loco
