// libFuzzer harness: the llm.c token shard reader (read_shard) on arbitrary files.
#include <cstdint>

#include "fuzz_common.hpp"
#include "loco/core/error.hpp"
#include "loco/data/shard.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = loco::fuzz::scratch_path("shard") + ".bin";
  loco::fuzz::write_scratch(path, data, size);
  for (int vocab : {0, 256}) {
    try {
      const auto tokens = loco::read_shard(path, vocab);
      if (vocab > 0)
        for (uint32_t t : tokens)
          if (t >= static_cast<uint32_t>(vocab)) __builtin_trap();  // must have been rejected
    } catch (const loco::Error&) {
    }
  }
  return 0;
}
