// libFuzzer harness: the sparse pseudo-gradient decoder (loco/compress/wire.hpp), written by
// the compression issue. Input byte 0 picks the Settings (selector × quantizer × index
// coding) of a fixed small model; the rest is the payload, decoded with and without checksum
// verification.
#include <cmath>
#include <cstdint>
#include <vector>

#include "fuzz_common.hpp"
#include "loco/compress/wire.hpp"
#include "loco/core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static std::vector<loco::compress::Plan> plans = [] {
    std::vector<loco::compress::Plan> p;
    for (int i = 0; i < loco::fuzz::kCompressSettings; ++i)
      p.push_back(loco::compress::make_plan(
          loco::compress::shapes_from_layout(loco::fuzz::compress_layout()),
          loco::fuzz::compress_settings(static_cast<uint8_t>(i))));
    return p;
  }();
  const auto& plan = plans[data[0] % loco::fuzz::kCompressSettings];
  std::vector<float> out(plan.total);
  std::vector<uint16_t> count(plan.total);
  for (bool verify : {true, false}) {
    try {
      loco::compress::decode_dense(plan, data + 1, size - 1, out.data(), {verify});
      for (float v : out)
        if (std::isnan(v)) __builtin_trap();  // the decoder promises finite values
      loco::compress::decode_accumulate(plan, data + 1, size - 1, out.data(), count.data(),
                                        {verify});
    } catch (const loco::Error&) {
    }
  }
  return 0;
}
