// libFuzzer harness: the checkpoint reader. Each input is parsed twice: with checksum
// verification (what read_checkpoint does; mutated inputs mostly stop there) and without it
// (so mutations reach the JSON header and tensor-table checks). Every tensor the reader
// accepts is read end to end, so a bad offset shows up as an ASan report.
#include <cstdint>
#include <nlohmann/json.hpp>

#include "loco/config/config.hpp"
#include "loco/core/error.hpp"
#include "loco/io/checkpoint.hpp"

namespace {

volatile uint64_t g_sink;

void touch(const loco::Checkpoint& c) {
  uint64_t acc = 0;
  for (const auto& t : c.tensors()) {
    const auto* p = static_cast<const unsigned char*>(t.data);
    for (uint64_t i = 0; i < t.bytes; ++i) acc += p[i];
    if (t.dtype == loco::StorageDType::F32 && !t.f32().empty()) acc += t.f32().back() != 0;
  }
  g_sink = acc + c.meta().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size();
  try {
    loco::validate_compatible(c.meta(), loco::checkpoint_identity(loco::Config{}, 1, 0), "fuzz");
  } catch (const loco::Error&) {
  }
  try {
    loco::config_from_checkpoint_meta(c.meta(), "fuzz");
  } catch (const loco::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (bool verify : {true, false}) {
    try {
      const loco::Checkpoint c =
          loco::parse_checkpoint(loco::AlignedBytes::copy_of(data, size), "fuzz.bin", verify);
      touch(c);
    } catch (const loco::Error&) {
    }
  }
  return 0;
}
