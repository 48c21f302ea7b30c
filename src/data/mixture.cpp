// Nested Beatty sequences for weighted mixtures: see include/loco/data/mixture.hpp.
//
// Why the prefix bound holds: level k keeps floor((i·w_k + φ_k)/r_k) of its first i slots,
// within one of i·q_k (q_k = w_k / r_k). Level 0 sees i_0 = n slots; level k+1 sees what level k
// passed on, i_{k+1} = i_k − kept_k, whose distance from n·(r_{k+1}/r_0) grows by less than one
// per level. Source k's count is therefore within k + 1 of n·p_k, and the last source's (which
// keeps all it sees) within S − 1: fewer than S for every source and every n.
#include "loco/data/mixture.hpp"

#include <cmath>
#include <string>

#include "loco/core/error.hpp"

namespace loco {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

constexpr double kScale = 4294967296.0;  // 2^32: the integer weights sum to about this

}  // namespace

MixtureSchedule::MixtureSchedule(const std::vector<double>& weights, uint64_t seed) {
  if (weights.empty()) throw Error("data mixture: at least one source is needed");
  double total = 0.0;
  for (size_t k = 0; k < weights.size(); ++k) {
    if (!std::isfinite(weights[k]) || weights[k] <= 0.0)
      throw Error("data mixture: source " + std::to_string(k) + ": weight " +
                  std::to_string(weights[k]) + " must be finite and > 0");
    total += weights[k];
  }
  if (!std::isfinite(total)) throw Error("data mixture: the weights' sum is not finite");
  for (size_t k = 0; k < weights.size(); ++k) {
    const double w = std::round(weights[k] / total * kScale);
    if (w < 1.0)
      throw Error("data mixture: source " + std::to_string(k) + ": weight " +
                  std::to_string(weights[k]) + " is below 2^-32 of the weights' sum " +
                  std::to_string(total) + " (it would never be read)");
    weight_.push_back(static_cast<uint64_t>(w));
  }
  rest_.assign(weight_.size(), 0);
  uint64_t r = 0;
  for (size_t k = weight_.size(); k-- > 0;) rest_[k] = (r += weight_[k]);
  for (size_t k = 0; k < weight_.size(); ++k)
    phase_.push_back(splitmix64(splitmix64(seed ^ 0x6D69787475726521ull) + k) % rest_[k]);
}

uint64_t MixtureSchedule::kept(size_t k, uint64_t i) const {
  // i < 2^64, w_k < 2^33: the product fits 128 bits exactly.
  const unsigned __int128 num = static_cast<unsigned __int128>(i) * weight_[k] + phase_[k];
  return static_cast<uint64_t>(num / rest_[k]);
}

MixtureSchedule::Pick MixtureSchedule::locate(uint64_t slot) const {
  uint64_t i = slot;  // the slot's index among those that reach level k
  for (size_t k = 0; k + 1 < weight_.size(); ++k) {
    const uint64_t before = kept(k, i);
    if (kept(k, i + 1) > before) return {k, before};
    i -= before;
  }
  return {weight_.size() - 1, i};
}

uint64_t MixtureSchedule::count_before(size_t source, uint64_t slots) const {
  if (source >= weight_.size())
    throw Error("data mixture: no source " + std::to_string(source) + " (there are " +
                std::to_string(weight_.size()) + ")");
  uint64_t i = slots;
  for (size_t k = 0; k < source; ++k) i -= kept(k, i);
  return source + 1 == weight_.size() ? i : kept(source, i);
}

double MixtureSchedule::share(size_t source) const {
  return static_cast<double>(weight_.at(source)) / static_cast<double>(rest_.front());
}

}  // namespace loco
