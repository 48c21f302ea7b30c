#include "loco/outer/fragments.hpp"

#include <string>

#include "loco/core/error.hpp"

namespace loco {

int fragment_of(const ParamView& view, int fragments) {
  if (view.layer >= 0) return view.layer % fragments;
  return view.kind == ParamKind::Embedding ? 0 : fragments - 1;
}

ParamLayout Fragment::packed_layout(const ParamLayout& full) const {
  ParamLayout packed;
  for (size_t i : views) {
    ParamView v = full.views[i];
    v.offset = packed.total;
    packed.total += v.numel;
    packed.views.push_back(std::move(v));
  }
  return packed;
}

std::vector<Fragment> partition_fragments(const ParamLayout& layout, int fragments) {
  if (fragments < 1)
    throw Error("outer sync: fragments = " + std::to_string(fragments) + ": must be >= 1");
  std::vector<Fragment> out(static_cast<size_t>(fragments));
  for (int j = 0; j < fragments; ++j) out[size_t(j)].index = j;
  for (size_t i = 0; i < layout.views.size(); ++i) {
    const ParamView& v = layout.views[i];
    Fragment& f = out[size_t(fragment_of(v, fragments))];
    f.views.push_back(i);
    if (v.layer >= 0 && (f.layers.empty() || f.layers.back() != v.layer))
      f.layers.push_back(v.layer);
    // Views are laid out back to back, so a fragment's consecutive views often touch
    // (a whole layer, or the embedding and layer 0): one range each, fewer backend calls.
    if (!f.ranges.empty() && f.ranges.back().offset + f.ranges.back().numel == v.offset)
      f.ranges.back().numel += v.numel;
    else
      f.ranges.push_back(FragmentRange{v.offset, v.numel});
    f.numel += v.numel;
  }
  for (const Fragment& f : out)
    if (f.layers.empty() && fragments > 1)
      throw Error("outer sync: fragment " + std::to_string(f.index) + " of " +
                  std::to_string(fragments) +
                  " holds no transformer layer: distributed.outer.fragments must be <= "
                  "model.n_layers");
  return out;
}

Fragment whole_buffer_fragment(size_t numel) {
  Fragment f;
  f.ranges.push_back(FragmentRange{0, numel});
  f.numel = numel;
  return f;
}

int due_fragment(int steps_done, int interval, int fragments) {
  const int stride = interval / fragments;  // H/p steps between consecutive fragments' syncs
  if (steps_done <= 0 || stride <= 0 || steps_done % stride != 0) return -1;
  return (steps_done % interval) / stride;
}

}  // namespace loco
