// Streaming DiLoCo's fragments (docs/algorithms.md §7; distributed.outer.fragments = p): the
// parameters are split into p fragments that sync at staggered steps, so that each outer sync
// moves about 1/p of the model and the peak bandwidth drops by p while every element still
// syncs every H steps.
//
// Partition — strided groups of layers, as in Douillard et al. 2025 (strided fragments mix
// shallow and deep layers in every sync, which the paper found better than contiguous ones):
//   fragment j holds the transformer layers j, j + p, j + 2p, …;
//   the token embedding belongs to fragment 0, the final norm and the LM head to fragment
//   p − 1 (the ends of the network go with the layers next to them: layer 0 and, when
//   n_layers is a multiple of p, the last layer).
// p = 1 is one fragment of every element, [0, N): plain DiLoCo.
//
// Schedule: fragment j syncs after the completed inner steps t > 0 with t ≡ j·H/p (mod H)
// (H = outer.interval, a multiple of p): fragment 0 at H, 2H, … as plain DiLoCo, fragment j
// H/p·j steps later. At most one fragment is due at any step.
#pragma once
#include <cstddef>
#include <vector>

#include "loco/model/param_layout.hpp"

namespace loco {

// A run of consecutive elements of the flat parameter buffer.
struct FragmentRange {
  size_t offset = 0;
  size_t numel = 0;
};

struct Fragment {
  int index = 0;
  std::vector<size_t> views;          // indices into the layout's views, ascending
  std::vector<int> layers;            // the transformer layers it holds, ascending
  std::vector<FragmentRange> ranges;  // its elements, ascending; adjacent views merged
  size_t numel = 0;                   // elements over all ranges

  // The fragment's tensors packed back to back in view order (what the outer sync's staging
  // buffer holds): the same names and shapes, offsets relative to the packed buffer. Input of
  // the per-fragment compression plan.
  ParamLayout packed_layout(const ParamLayout& full) const;
};

// The fragment that owns a view under the rule above.
int fragment_of(const ParamView& view, int fragments);

// Splits `layout` into `fragments` fragments. Throws when fragments < 1 or a fragment would
// be empty (more fragments than transformer layers).
std::vector<Fragment> partition_fragments(const ParamLayout& layout, int fragments);

// One fragment of every element of a flat buffer of `numel` elements (no layout needed).
Fragment whole_buffer_fragment(size_t numel);

// The fragment due after `steps_done` completed inner steps, or −1 when none is
// (steps_done ≤ 0, or not a multiple of interval / fragments).
int due_fragment(int steps_done, int interval, int fragments);

}  // namespace loco
