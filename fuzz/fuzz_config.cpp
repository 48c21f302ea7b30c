// libFuzzer harness: the config parser. The input is a JSON document, optionally followed by
// a NUL byte and "--set" override strings separated by newlines. Exercises
// config_from_json on the parsed document, apply_override, config_to_json, and load_config
// on the same bytes written to a file. Any exception other than loco::Error is a finding,
// as is any sanitizer report.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "loco/config/config.hpp"
#include "loco/core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  const size_t nul = in.find('\0');
  const std::string doc = in.substr(0, nul);
  std::vector<std::string> overrides;
  if (nul != std::string::npos) {
    std::string rest = in.substr(nul + 1);
    size_t start = 0;
    while (start <= rest.size() && overrides.size() < 8) {
      const size_t nl = rest.find('\n', start);
      overrides.push_back(rest.substr(start, nl == std::string::npos ? nl : nl - start));
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
  }

  // 1. The in-memory API on whatever nlohmann accepts.
  nlohmann::json j;
  bool parsed = true;
  try {
    j = nlohmann::json::parse(doc, nullptr, true, true);
  } catch (const nlohmann::json::exception&) {
    parsed = false;
  }
  if (parsed) {
    bool valid = false;
    loco::Config c;
    try {
      for (const auto& o : overrides) loco::apply_override(j, o);
      c = loco::config_from_json(j, "fuzz.json");
      valid = true;
    } catch (const loco::Error&) {
    }
    if (valid) {
      // A valid config must survive a round trip unchanged (and not throw).
      try {
        const nlohmann::json out = loco::config_to_json(c);
        if (loco::config_to_json(loco::config_from_json(out, "roundtrip")) != out) __builtin_trap();
      } catch (const loco::Error&) {
        __builtin_trap();
      }
    }
  }

  // 2. The file API (size limit, comments, depth limit, line/column in messages).
  static const std::string path = loco::fuzz::scratch_path("config") + ".json";
  loco::fuzz::write_scratch(path, data, nul == std::string::npos ? size : nul);
  try {
    loco::load_config(path, overrides);
  } catch (const loco::Error&) {
  }
  return 0;
}
