// Validation loss per byte of text, so runs with different tokenizers compare: a loss of L
// nats per token over tokens that stand for `bytes_per_token` bytes each on average is
//   L / (ln 2 · bytes_per_token)   bits per byte.
// With the byte tokenizer bytes_per_token = 1 and this is L / ln 2.
#pragma once
#include <optional>

namespace loco {

class TextTokenizer;
class TokenStream;

// Bytes per target token over the first `batches` batches of B windows of T tokens of the
// (unshuffled) validation stream — the windows the trainer's validation scores. Resets the
// stream. nullopt when a token is outside the tokenizer's vocabulary (shards made with another
// tokenizer than data.tokenizer says) or the windows stand for no bytes.
std::optional<double> validation_bytes_per_token(TokenStream& val, const TextTokenizer& tokenizer,
                                                 int batches, int B, int T);

double bits_per_byte(double loss_nats_per_token, double bytes_per_token);

}  // namespace loco
