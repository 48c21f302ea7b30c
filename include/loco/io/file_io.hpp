// Durable, all-or-nothing file writes and whole-file reads for the io layer (checkpoints,
// safetensors, the `latest` pointer).
//
// AtomicFile writes into a hidden temporary file next to the target
// (".<name>.tmp-<pid>-<n>"), and commit() makes it the target: fsync the data, close,
// rename over the target, fsync the directory. If anything fails, or the AtomicFile is
// destroyed without commit(), the temporary file is removed and the previous target (if
// any) is untouched. A crash mid-write can leave a hidden temporary file behind but never a
// partial target.
//
// Fault injection (tests): every AtomicFile fails once it would hold more than N bytes when
//   - set_write_fault_for_testing(N) is in force (in-process tests), or
//   - the environment variable LOCO_FAULT_INJECT_WRITE=N is set (whole-process tests).
//     LOCO_FAULT_INJECT_WRITE=N:crash instead ends the process on the spot with exit code
//     86 (std::_Exit: no cleanup, the temporary file stays), like a kill during the write.
// The injected failure is a loco::Error that says it was injected; what the writer leaves
// behind is exactly what a real ENOSPC/EIO at that byte would leave.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace loco {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);  // throws naming the path when it cannot be created
  ~AtomicFile();                          // without commit(): removes the temporary file
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);  // all of it, or throws (temporary file removed)
  void commit();                           // durable rename into place, or throws
  uint64_t bytes_written() const { return written_; }
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_; }

 private:
  [[noreturn]] void fail(const std::string& why);
  std::string path_, tmp_, dir_;
  int fd_ = -1;
  uint64_t written_ = 0;
  std::optional<uint64_t> fault_at_;
  bool fault_crash_ = false;
  bool committed_ = false;
};

// Writes `content` to `path` with AtomicFile.
void write_file_durably(const std::string& path, const void* data, size_t n);
inline void write_file_durably(const std::string& path, const std::string& content) {
  write_file_durably(path, content.data(), content.size());
}

// nullopt turns in-process fault injection off.
void set_write_fault_for_testing(std::optional<uint64_t> fail_after_bytes);

// The fault in force for a file opened now (the in-process setting, else
// LOCO_FAULT_INJECT_WRITE), for writers other than AtomicFile (the metrics log) that honour
// it too. Throws for a malformed LOCO_FAULT_INJECT_WRITE.
struct WriteFault {
  uint64_t after_bytes = 0;
  bool crash = false;
};
std::optional<WriteFault> current_write_fault();

// A whole file in one 64-byte-aligned heap block (so typed views into it are aligned).
struct AlignedBytes {
  struct Free {
    void operator()(unsigned char* p) const;
  };
  std::unique_ptr<unsigned char[], Free> data;
  size_t size = 0;
  static AlignedBytes allocate(size_t n);  // zero-filled; throws loco::Error when out of memory
  // zero = false leaves bytes [0, n) uninitialised (the caller overwrites them).
  static AlignedBytes allocate_uninitialised(size_t n, bool zero);
  static AlignedBytes copy_of(const void* src, size_t n);
};

// Reads a regular file into memory. `what` names the kind of file in messages
// ("checkpoint", "safetensors file"). Refuses files larger than max_bytes.
AlignedBytes read_file_aligned(const std::string& path, const std::string& what,
                               uint64_t max_bytes = UINT64_MAX);

// fsync a directory (makes renames/creations inside it durable). Errors are ignored: the
// data is already complete, only its durability across a power loss is at stake.
void fsync_directory(const std::string& dir);

}  // namespace loco
