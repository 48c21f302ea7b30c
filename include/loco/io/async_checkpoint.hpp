// A background writer for checkpoint files: the training thread copies what it wants saved
// into host memory, hands the writes over as one job, and goes on training while a thread of
// this object writes the files (the same atomic, checksummed container as every checkpoint:
// loco/io/checkpoint.hpp). One job at a time: submitting a job waits for the previous one,
// so host memory holds at most one checkpoint in flight, and a job never overtakes the one
// before it (a `latest` pointer written by a job names files that job already wrote).
//
//   AsyncCheckpointWriter writer;
//   const double waited = writer.submit("checkpoint of step 80", [files = std::move(f)] {
//     files.write(...);                      // runs on the writer thread
//   });
//   ...
//   const std::string error = writer.wait();   // "" when every job so far succeeded
//
// A job that throws records its message ("checkpoint of step 80: cannot write ...: No space
// left on device"); the next submit() or wait() returns it (once). The destructor waits for
// the job in flight, so no file is left half-written by a writer that went away.
#pragma once
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace loco {

class AsyncCheckpointWriter {
 public:
  AsyncCheckpointWriter();
  ~AsyncCheckpointWriter();
  AsyncCheckpointWriter(const AsyncCheckpointWriter&) = delete;
  AsyncCheckpointWriter& operator=(const AsyncCheckpointWriter&) = delete;

  struct Submitted {
    double waited_seconds = 0.0;  // for the previous job to finish
    std::string previous_error;   // the previous job's error, "" when it succeeded
  };
  // Waits for the job in flight (if any), then starts `job` on the writer thread. `what`
  // names the job in its error message.
  Submitted submit(std::string what, std::function<void()> job);
  // Waits for the job in flight; returns its error ("" when none ran or it succeeded).
  std::string wait();
  // The job in flight's error when it has already failed, without waiting ("" otherwise).
  std::string failed_so_far() const;
  // Seconds the last finished job took on the writer thread (0 before the first).
  double last_job_seconds() const;

 private:
  void run();
  std::string wait_locked(std::unique_lock<std::mutex>& lock);

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::function<void()> job_;  // the job to run next (empty: none)
  std::string what_;
  bool busy_ = false;  // a job is queued or running
  bool stopping_ = false;
  std::string error_;  // the last failed job's message, until reported
  double last_job_seconds_ = 0.0;
  std::thread thread_;
};

}  // namespace loco
