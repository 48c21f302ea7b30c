// A weighted mixture of training sources as one deterministic sequence of window slots.
//
// Slot m of a run's deck (every window dealt to every replica, in order: loco/data/stream.hpp)
// draws from source `locate(m).source` and is that source's `locate(m).index`-th window, the
// index counting the earlier slots of the same source. Both are pure functions of (the
// weights, the seed, m): no state, so the windows a run reads depend neither on the number of
// replicas nor on restarts, and a position is restored from the slot number alone.
//
// The choice is a nested Beatty sequence, exact in integers: the weights are normalised and
// rounded to integers w_k summing to about 2^32; with r_k = w_k + … + w_{S−1}, level k takes
// the i-th slot that reaches it for source k when floor(((i+1)·w_k + φ_k) / r_k) >
// floor((i·w_k + φ_k) / r_k) (φ_k in [0, r_k), from the seed), and passes it on to level k+1
// otherwise. The last source takes whatever reaches it. Every level is within one slot of its
// share over any prefix, so over the first n slots source k holds n·p_k windows to within
// fewer than S (the number of sources), p_k = w_k / Σw: weights hold exactly, spread evenly
// (a 5 % source is one window in every 20), for every n.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace loco {

class MixtureSchedule {
 public:
  // weights: > 0 and finite, at least one; each must be at least 2^-32 of their sum. Throws
  // loco::Error naming the offending source (0-based) otherwise.
  MixtureSchedule(const std::vector<double>& weights, uint64_t seed);

  struct Pick {
    size_t source = 0;
    uint64_t index = 0;  // windows of that source in the slots before this one
  };
  Pick locate(uint64_t slot) const;

  // Windows of `source` among the slots [0, slots).
  uint64_t count_before(size_t source, uint64_t slots) const;

  size_t sources() const { return weight_.size(); }
  // The share p_k actually used (the weight after normalising and rounding).
  double share(size_t source) const;
  // The rounded integer weights (they define the sequence; hashed with the data).
  const std::vector<uint64_t>& integer_weights() const { return weight_; }

 private:
  // Slots of level k, among its first i, that it keeps for source k.
  uint64_t kept(size_t k, uint64_t i) const;
  std::vector<uint64_t> weight_;  // w_k
  std::vector<uint64_t> rest_;    // r_k = w_k + ... + w_{S-1}
  std::vector<uint64_t> phase_;   // φ_k in [0, r_k)
};

}  // namespace loco
