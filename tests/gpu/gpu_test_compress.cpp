// The compression kernels (kernels/compress_*.cu) on CUDA: the primitives against brute force
// and the whole device pipeline against the host one, bit for bit: the same payload bytes,
// the same error-feedback state, and the same decoded aggregate as the CPU for the same
// payloads (tests/support/device_compress_checks.hpp). Skips without a GPU.
#include "loco/backend/backend.hpp"
#include "support/catch.hpp"
#include "support/device_compress_checks.hpp"

using namespace loco;

TEST_CASE("CUDA compression primitives match brute force, bit for bit") {
  std::string why;
  if (!cuda_available(&why)) {
    WARN("SKIP: no usable CUDA device: " << why);
    return;
  }
  auto gpu = make_backend("cuda");
  testing::check_compression_primitives(*gpu);
}

TEST_CASE("CUDA compression pipeline = host pipeline: payload, EF state, aggregate") {
  std::string why;
  if (!cuda_available(&why)) {
    WARN("SKIP: no usable CUDA device: " << why);
    return;
  }
  auto gpu = make_backend("cuda");
  testing::check_device_pipeline_matches_host(*gpu);
}
