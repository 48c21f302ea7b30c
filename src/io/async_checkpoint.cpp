// The background checkpoint writer: see include/loco/io/async_checkpoint.hpp.
#include "loco/io/async_checkpoint.hpp"

#include <chrono>
#include <exception>

namespace loco {

namespace {
using Clock = std::chrono::steady_clock;
}

AsyncCheckpointWriter::AsyncCheckpointWriter() : thread_([this] { run(); }) {}

AsyncCheckpointWriter::~AsyncCheckpointWriter() {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    wait_locked(lock);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void AsyncCheckpointWriter::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return stopping_ || job_ != nullptr; });
    if (job_ == nullptr) return;  // stopping, nothing left to do
    std::function<void()> job = std::move(job_);
    job_ = nullptr;
    const std::string what = what_;
    lock.unlock();
    const auto t0 = Clock::now();
    std::string error;
    try {
      job();
    } catch (const std::exception& e) {
      error = what + ": " + e.what();
    } catch (...) {
      error = what + ": unknown error";
    }
    job = nullptr;  // frees the job's host copies before anyone waits on us
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    lock.lock();
    last_job_seconds_ = seconds;
    if (!error.empty() && error_.empty()) error_ = error;
    busy_ = false;
    changed_.notify_all();
  }
}

std::string AsyncCheckpointWriter::wait_locked(std::unique_lock<std::mutex>& lock) {
  changed_.wait(lock, [this] { return !busy_; });
  std::string error;
  error.swap(error_);
  return error;
}

AsyncCheckpointWriter::Submitted AsyncCheckpointWriter::submit(std::string what,
                                                               std::function<void()> job) {
  Submitted out;
  const auto t0 = Clock::now();
  {
    std::unique_lock<std::mutex> lock(mutex_);
    out.previous_error = wait_locked(lock);
    out.waited_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    job_ = std::move(job);
    what_ = std::move(what);
    busy_ = true;
  }
  changed_.notify_all();
  return out;
}

std::string AsyncCheckpointWriter::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  return wait_locked(lock);
}

std::string AsyncCheckpointWriter::failed_so_far() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_;
}

double AsyncCheckpointWriter::last_job_seconds() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_job_seconds_;
}

}  // namespace loco
