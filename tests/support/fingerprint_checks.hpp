// Backend::fingerprint properties shared by the CPU unit test and the GPU smoke test: equal
// contents give equal fingerprints (separate buffers, separate uploads, unaligned slices,
// sizes that are not a multiple of 8 bytes), and any one-bit change changes it.
#pragma once
#include <cstdint>
#include <cstring>
#include <set>
#include <vector>

#include "loco/backend/backend.hpp"
#include "support/catch.hpp"

namespace loco::testing {

inline void check_fingerprint(Backend& be) {
  for (size_t n : {size_t(1), size_t(3), size_t(1000), size_t(100003)}) {
    INFO("n = " << n);
    std::vector<float> host(n);
    for (size_t i = 0; i < n; ++i) host[i] = float(i % 97) * 0.25f - 3.0f;
    Buf a = be.alloc(n + 1, DType::F32), b = be.alloc(n, DType::F32);
    be.upload(a.slice(1, n), host.data());  // an odd element offset: 4-byte aligned only
    be.upload(b, host.data());
    const uint64_t fa = be.fingerprint(a.slice(1, n)), fb = be.fingerprint(b);
    CHECK(fa == fb);
    CHECK(be.fingerprint(b) == fb);  // repeatable
    std::set<uint64_t> seen{fb};
    const std::set<size_t> positions{0, n / 2, n - 1};
    for (size_t at : positions) {
      for (uint32_t bit : {0u, 17u, 31u}) {
        std::vector<float> changed = host;
        uint32_t u;
        std::memcpy(&u, &changed[at], 4);
        u ^= 1u << bit;
        std::memcpy(&changed[at], &u, 4);
        be.upload(b, changed.data());
        seen.insert(be.fingerprint(b));
      }
    }
    CHECK(seen.size() == 1 + 3 * positions.size());  // every single-bit flip is seen
    // Half-precision buffers of odd length: a byte count that is not a multiple of 8.
    Buf h = be.alloc(n, DType::BF16), h2 = be.alloc(n, DType::BF16);
    std::vector<uint16_t> bits(n);
    for (size_t i = 0; i < n; ++i) bits[i] = uint16_t(0x3f80 + i % 13);
    be.upload(h, bits.data());
    be.upload(h2, bits.data());
    CHECK(be.fingerprint(h) == be.fingerprint(h2));
    bits[n - 1] ^= 1;
    be.upload(h2, bits.data());
    CHECK(be.fingerprint(h) != be.fingerprint(h2));
    for (Buf* x : {&a, &b, &h, &h2}) be.release(*x);
  }
}

}  // namespace loco::testing
