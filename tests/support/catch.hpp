// One include for Catch2 v2 (Debian 12) and v3 (Ubuntu 24.04).
#pragma once
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#define LOCO_CONTAINS(s) Catch::Matchers::ContainsSubstring(s)
#else
#include <catch2/catch.hpp>
#define LOCO_CONTAINS(s) Catch::Matchers::Contains(s)
// v3 spells it Catch::Approx; give v2 the same name.
namespace Catch {
using Detail::Approx;
}
#endif
