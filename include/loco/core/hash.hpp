// A fast, fixed 64-bit hash for consistency checks across ranks (configs, data, parameters).
// Not cryptographic; it only has to make accidental differences visible.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace loco {

inline uint64_t hash_bytes(const void* data, size_t n, uint64_t seed = 0x6c6f636f) {
  auto mix = [](uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
  };
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = mix(seed ^ n);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);
    h = mix(h ^ word) + 0x9e3779b97f4a7c15ULL;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p + i, n - i);
  return mix(h ^ tail ^ (n - i));
}

inline uint64_t hash_string(const std::string& s) { return hash_bytes(s.data(), s.size()); }

}  // namespace loco
