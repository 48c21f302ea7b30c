// Backend selection by name: "cpu", "cuda" or "auto".
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "loco/backend/backend.hpp"
#include "loco/backend/cpu_backend.hpp"
#include "loco/core/error.hpp"

#ifdef LOCO_HAVE_CUDA
#include "loco/backend/cuda_backend.hpp"
#endif

namespace loco {

namespace {

#ifdef LOCO_HAVE_CUDA
std::unique_ptr<Backend> make_cuda_or_throw() {
  std::string why_not;
  if (!cuda_device_usable(&why_not))
    throw Error("backend \"cuda\" requested but no CUDA device is usable: " + why_not);
  return make_cuda_backend();
}
#else
constexpr const char* kNoCudaBuild =
    "this build has no CUDA backend (nvcc/NCCL were not found at configure time)";
#endif

}  // namespace

Buf Backend::alloc_host(size_t numel, DType dtype) {
  Buf buf{nullptr, dtype, numel, MemSpace::Host};
  if (numel == 0) return buf;
  const size_t bytes = (buf.bytes() + 63) / 64 * 64;  // aligned_alloc wants a multiple
  buf.data = std::aligned_alloc(64, bytes);
  if (buf.data == nullptr)
    throw Error("out of host memory allocating " + std::to_string(buf.bytes()) +
                " bytes of staging memory");
  std::memset(buf.data, 0, bytes);
  return buf;
}

void Backend::release_host(Buf& buf) {
  std::free(buf.data);
  buf = Buf{};
}

bool cuda_available(std::string* why_not) {
#ifdef LOCO_HAVE_CUDA
  return cuda_device_usable(why_not);
#else
  if (why_not != nullptr) *why_not = kNoCudaBuild;
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& name) {
  if (name == "cpu") return std::make_unique<CpuBackend>();
  if (name == "cuda") {
#ifdef LOCO_HAVE_CUDA
    return make_cuda_or_throw();
#else
    throw Error(std::string("backend \"cuda\" requested but ") + kNoCudaBuild);
#endif
  }
  if (name == "auto") {
#ifdef LOCO_HAVE_CUDA
    std::string why_not;  // "auto" falls back silently; the reason is not an error here
    if (cuda_device_usable(&why_not)) return make_cuda_backend();
#endif
    return std::make_unique<CpuBackend>();
  }
  throw Error("unknown backend \"" + name + "\": expected one of cpu, cuda, auto");
}

}  // namespace loco
