// Shared by the libFuzzer harnesses and the seed generator (fuzz/make_seeds.cpp).
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#if __has_include("loco/compress/compress.hpp")
#include "loco/compress/compress.hpp"
#define LOCO_FUZZ_HAVE_COMPRESS 1
#endif
#include "loco/model/param_layout.hpp"

namespace loco::fuzz {

// A per-process scratch file for readers that take a path.
inline std::string scratch_path(const char* tag) {
  const char* dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return std::string(dir) + "/loco-fuzz-" + tag + "-" + std::to_string(::getpid());
}

inline void write_scratch(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

// The compress harness's fixed model (small, with 1-D and 2-D tensors, GQA, untied head) and
// the settings its first input byte selects.
inline const ParamLayout& compress_layout() {
  static const ParamLayout layout = [] {
    ModelConfig m;
    m.vocab_size = 40;
    m.d_model = 16;
    m.n_layers = 1;
    m.n_heads = 4;
    m.n_kv_heads = 2;
    m.d_ff = 24;
    return llama_param_layout(m);
  }();
  return layout;
}

#ifdef LOCO_FUZZ_HAVE_COMPRESS
inline constexpr int kCompressSettings = 4 * 5 * 4;

inline compress::Settings compress_settings(uint8_t selector_byte) {
  const int i = selector_byte % kCompressSettings;
  compress::Settings s;
  s.selector = static_cast<compress::Selector>(i % 4);
  s.quantizer = static_cast<compress::Quantizer>((i / 4) % 5);
  s.index_coding = static_cast<compress::IndexCoding>((i / 20) % 4);
  s.chunk = 8;
  s.topk = 5;
  s.seed = 77;
  return s;
}
#endif

}  // namespace loco::fuzz
