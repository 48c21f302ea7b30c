// Typed spans of backend memory. The CPU backend hands out host memory; the CUDA backend
// device memory. Algorithm code passes Bufs around without dereferencing them.
#pragma once
#include <cstddef>
#include <cstdint>

#include "loco/core/error.hpp"

namespace loco {

enum class DType : uint8_t { F32, BF16, I32 };

inline size_t dtype_size(DType t) { return t == DType::BF16 ? 2 : 4; }
inline const char* dtype_name(DType t) {
  return t == DType::F32 ? "f32" : t == DType::BF16 ? "bf16" : "i32";
}

struct Buf {
  void* data = nullptr;
  DType dtype = DType::F32;
  size_t numel = 0;

  size_t bytes() const { return numel * dtype_size(dtype); }
  bool empty() const { return data == nullptr || numel == 0; }

  // Typed access. Valid to dereference only for host buffers (CPU backend).
  float* f32() const {
    LOCO_CHECK(dtype == DType::F32, "buffer is not f32");
    return static_cast<float*>(data);
  }
  int32_t* i32() const {
    LOCO_CHECK(dtype == DType::I32, "buffer is not i32");
    return static_cast<int32_t*>(data);
  }
  // A view of [offset, offset + count) elements of this buffer.
  Buf slice(size_t offset, size_t count) const {
    LOCO_CHECK(offset + count <= numel, "slice out of range");
    return Buf{static_cast<char*>(data) + offset * dtype_size(dtype), dtype, count};
  }
};

}  // namespace loco
