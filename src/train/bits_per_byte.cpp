// Bits per byte of validation text (loco/train/bits_per_byte.hpp).
#include "loco/train/bits_per_byte.hpp"

#include <cmath>
#include <cstdint>
#include <vector>

#include "loco/data/stream.hpp"
#include "loco/data/text_tokenizer.hpp"

namespace loco {

std::optional<double> validation_bytes_per_token(TokenStream& val, const TextTokenizer& tokenizer,
                                                 int batches, int B, int T) {
  std::vector<int32_t> inputs(size_t(B) * size_t(T)), targets(inputs.size());
  const std::vector<uint32_t>& lengths = tokenizer.token_bytes();
  val.reset();
  uint64_t bytes = 0, tokens = 0;
  for (int i = 0; i < batches; ++i) {
    val.next_batch(B, inputs.data(), targets.data());
    for (int32_t t : targets) {
      if (t < 0 || size_t(t) >= lengths.size()) {
        val.reset();
        return std::nullopt;
      }
      bytes += lengths[size_t(t)];
      ++tokens;
    }
  }
  val.reset();
  if (bytes == 0 || tokens == 0) return std::nullopt;
  return double(bytes) / double(tokens);
}

double bits_per_byte(double loss_nats_per_token, double bytes_per_token) {
  return loss_nats_per_token / (std::log(2.0) * bytes_per_token);
}

}  // namespace loco
