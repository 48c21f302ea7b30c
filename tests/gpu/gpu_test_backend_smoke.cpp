// CUDA backend smoke test: device selection and its error text, memory round trips.
// Without a usable device it checks that asking for "cuda" fails with the CUDA error's name
// and text, and skips the rest.
#include <cstdint>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/backend/cuda_backend.hpp"
#include "support/catch.hpp"
#include "support/fingerprint_checks.hpp"

namespace {

struct GpuState {
  bool ok = false;
  std::string why;
};

const GpuState& gpu_state() {
  static const GpuState state = [] {
    GpuState s;
    s.ok = loco::cuda_device_usable(&s.why);
    if (!s.ok) std::cout << "SKIP: " << s.why << std::endl;
    return s;
  }();
  return state;
}

}  // namespace

TEST_CASE("cuda: without a device, asking for it fails with the CUDA error", "[gpu]") {
  if (gpu_state().ok) {
    SUCCEED("a CUDA device is usable");
    return;
  }
  const std::string why = gpu_state().why;
  INFO("cuda_device_usable says: " << why);
  CHECK_FALSE(why.empty());
  CHECK_FALSE(loco::cuda_available());
  CHECK_THROWS_AS(loco::make_cuda_backend(), loco::Error);
  CHECK_THROWS_WITH(loco::make_cuda_backend(), LOCO_CONTAINS(why));
  CHECK_THROWS_WITH(loco::make_backend("cuda"), LOCO_CONTAINS(why));
  // "auto" falls back to the CPU silently.
  CHECK(loco::make_backend("auto")->name() == "cpu");
}

TEST_CASE("cuda: device index out of range", "[gpu]") {
  std::string why;
  CHECK_FALSE(loco::cuda_device_usable(&why, 4096));
  CHECK_FALSE(why.empty());
  CHECK_THROWS_AS(loco::make_cuda_backend(4096), loco::Error);
}

TEST_CASE("cuda: memory round trips", "[gpu]") {
  if (!gpu_state().ok) {
    WARN("SKIP: " << gpu_state().why);
    return;
  }
  auto be = loco::make_backend("cuda");
  REQUIRE(be->name() == "cuda");
  CHECK(be->activation_dtype() == loco::DType::BF16);
  CHECK(loco::make_backend("auto")->name() == "cuda");

  // alloc is zeroed
  loco::Buf f = be->alloc(1000, loco::DType::F32);
  std::vector<float> host(1000, 1.f);
  be->download(host.data(), f);
  for (float x : host) REQUIRE(x == 0.f);

  // upload / download, each dtype
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i) * 0.5f - 7.f;
  be->upload(f, host.data());
  std::vector<float> back(1000);
  be->download(back.data(), f);
  CHECK(std::memcmp(back.data(), host.data(), host.size() * sizeof(float)) == 0);

  loco::Buf h = be->alloc(777, loco::DType::BF16);
  std::vector<uint16_t> bits(777), bits_back(777);
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = static_cast<uint16_t>(i * 37u);
  be->upload(h, bits.data());
  be->download(bits_back.data(), h);
  CHECK(bits == bits_back);

  loco::Buf ids = be->alloc(5, loco::DType::I32);
  const std::vector<int32_t> id_values{3, -1, 7, 1 << 30, 0};
  std::vector<int32_t> id_back(5);
  be->upload(ids, id_values.data());
  be->download(id_back.data(), ids);
  CHECK(id_values == id_back);

  // slices, zero, device-to-device copy
  be->zero(f.slice(10, 20));
  be->download(back.data(), f);
  CHECK(back[9] == host[9]);
  CHECK(back[10] == 0.f);
  CHECK(back[29] == 0.f);
  CHECK(back[30] == host[30]);
  loco::Buf f2 = be->alloc(1000, loco::DType::F32);
  be->copy(f2, f);
  std::vector<float> back2(1000);
  be->download(back2.data(), f2);
  CHECK(back2 == back);

  // empty buffers are fine everywhere
  loco::Buf empty = be->alloc(0, loco::DType::F32);
  CHECK(empty.empty());
  be->zero(empty);
  be->upload(empty, nullptr);
  be->download(nullptr, empty);
  CHECK(be->sum_squares(empty) == 0.0);
  CHECK(be->all_finite(empty));

  // a dtype mix-up is an error, not a silent corruption
  CHECK_THROWS_AS(be->scale(h, 2.f), loco::Error);

  be->synchronize();
  be->release(f);
  be->release(f2);
  be->release(h);
  be->release(ids);
  be->release(empty);
  CHECK(f.data == nullptr);
}

TEST_CASE("cuda: fingerprint is content-only and sees every bit", "[gpu]") {
  if (!gpu_state().ok) {
    WARN("SKIP: " << gpu_state().why);
    return;
  }
  auto be = loco::make_backend("cuda");
  loco::testing::check_fingerprint(*be);
}
