// A buffer of backend memory that releases itself. Every class that allocates holds its
// memory in these, so a constructor that throws half-way frees what it had already
// allocated, and no class keeps a list of buffers to release.
#pragma once
#include <cstddef>
#include <utility>

#include "loco/backend/backend.hpp"
#include "loco/core/buffer.hpp"

namespace loco {

class OwnedBuf {
 public:
  OwnedBuf() = default;
  OwnedBuf(Backend& backend, size_t numel, DType dtype)
      : backend_(&backend), buf_(backend.alloc(numel, dtype)) {}
  ~OwnedBuf() { reset(); }

  OwnedBuf(OwnedBuf&& other) noexcept
      : backend_(other.backend_), buf_(std::exchange(other.buf_, Buf{})) {}
  OwnedBuf& operator=(OwnedBuf&& other) noexcept {
    if (this != &other) {
      reset();
      backend_ = other.backend_;
      buf_ = std::exchange(other.buf_, Buf{});
    }
    return *this;
  }
  OwnedBuf(const OwnedBuf&) = delete;
  OwnedBuf& operator=(const OwnedBuf&) = delete;

  // Releases the memory now (nothing when empty). A release that fails (a CUDA error) is
  // ignored: it runs from destructors, and the memory is lost either way.
  void reset() noexcept {
    if (backend_ != nullptr && buf_.data != nullptr) {
      try {
        backend_->release(buf_);
      } catch (...) {
      }
    }
    buf_ = Buf{};
  }

  // The whole buffer as the view every op takes.
  const Buf& get() const { return buf_; }
  operator Buf() const { return buf_; }  // NOLINT(google-explicit-constructor): a view
  const Buf* operator->() const { return &buf_; }
  Buf slice(size_t offset, size_t numel) const { return buf_.slice(offset, numel); }
  bool empty() const { return buf_.empty(); }

 private:
  Backend* backend_ = nullptr;
  Buf buf_;
};

}  // namespace loco
