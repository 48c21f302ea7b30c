// Typed spans of backend memory. The CPU backend hands out host memory; the CUDA backend
// device memory. Algorithm code passes Bufs around without dereferencing them; a Buf says
// which memory space it lives in, so that code which must touch the bytes (host routines,
// communicators) can refuse a buffer of the wrong space instead of dereferencing it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "loco/core/error.hpp"

namespace loco {

// U8: raw bytes (packed payloads); not a number type, so never reduced.
enum class DType : uint8_t { F32, BF16, I32, U8 };

// Where a buffer's bytes are: host memory (readable by the CPU) or the memory of the current
// CUDA device (readable only by kernels, cudaMemcpy and NCCL).
enum class MemSpace : uint8_t { Host, Device };

inline const char* mem_space_name(MemSpace s) { return s == MemSpace::Host ? "host" : "device"; }

inline size_t dtype_size(DType t) { return t == DType::BF16 ? 2 : t == DType::U8 ? 1 : 4; }
inline const char* dtype_name(DType t) {
  return t == DType::F32 ? "f32" : t == DType::BF16 ? "bf16" : t == DType::I32 ? "i32" : "u8";
}

struct Buf {
  void* data = nullptr;
  DType dtype = DType::F32;
  size_t numel = 0;
  MemSpace space = MemSpace::Host;

  size_t bytes() const { return numel * dtype_size(dtype); }
  bool empty() const { return data == nullptr || numel == 0; }

  bool on_host() const { return space == MemSpace::Host; }

  // Typed host access: throws for a device buffer (its pointer means nothing on the host).
  float* f32() const {
    LOCO_CHECK(dtype == DType::F32, "buffer is not f32");
    require_host("f32()");
    return static_cast<float*>(data);
  }
  int32_t* i32() const {
    LOCO_CHECK(dtype == DType::I32, "buffer is not i32");
    require_host("i32()");
    return static_cast<int32_t*>(data);
  }
  // Throws loco::Error naming `what` when this buffer is not in host memory.
  void require_host(const char* what) const {
    if (space != MemSpace::Host)
      throw Error(std::string(what) + ": the buffer is in device memory; only host buffers " +
                  "can be read or written on the host");
  }
  // A view of [offset, offset + count) elements of this buffer.
  Buf slice(size_t offset, size_t count) const {
    LOCO_CHECK(offset + count <= numel, "slice out of range");
    return Buf{static_cast<char*>(data) + offset * dtype_size(dtype), dtype, count, space};
  }
};

// `bytes` bytes of host memory as a U8 buffer (packed payloads, staging for communicators).
inline Buf host_bytes(const void* data, size_t bytes) {
  return Buf{const_cast<void*>(data), DType::U8, bytes, MemSpace::Host};
}

}  // namespace loco
