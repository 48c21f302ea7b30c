// libFuzzer harness: the safetensors reader. Every tensor it accepts is read end to end and,
// when floating point, widened to F32.
#include <cstdint>
#include <vector>

#include "loco/core/error.hpp"
#include "loco/io/safetensors.hpp"

namespace {
volatile uint64_t g_sink;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const loco::SafetensorsFile f =
        loco::parse_safetensors(loco::AlignedBytes::copy_of(data, size), "fuzz.safetensors");
    uint64_t acc = f.metadata().size();
    uint64_t expect = 0;
    for (const auto& t : f.tensors()) {
      if (t.begin != expect) __builtin_trap();  // coverage must be back to back
      expect = t.end;
      for (uint64_t i = 0; i < t.bytes(); ++i) acc += t.data[i];
      if (t.numel <= (1u << 20)) {
        try {
          std::vector<float> out(static_cast<size_t>(t.numel));
          f.to_f32(t, out.data());
          acc += out.size();
        } catch (const loco::Error&) {  // integer dtypes
        }
      }
    }
    g_sink = acc;
  } catch (const loco::Error&) {
  }
  return 0;
}
