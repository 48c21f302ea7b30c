// Streaming DiLoCo fragments (loco/outer/fragments.hpp): the partition of the parameters into
// strided groups of layers, and the staggered schedule.
#include <algorithm>
#include <string>
#include <vector>

#include "loco/config/config.hpp"
#include "loco/model/param_layout.hpp"
#include "loco/outer/fragments.hpp"
#include "support/catch.hpp"

using namespace loco;

namespace {

ModelConfig small_model(int layers, bool tied) {
  ModelConfig m;
  m.vocab_size = 40;
  m.d_model = 16;
  m.n_layers = layers;
  m.n_heads = 2;
  m.n_kv_heads = 1;
  m.d_ff = 24;
  m.tie_embeddings = tied;
  return m;
}

// The fragment the documented rule assigns to a view, written out from the names.
int expected_fragment(const ParamView& v, int p) {
  const std::string prefix = "model.layers.";
  if (v.name.rfind(prefix, 0) == 0) return std::stoi(v.name.substr(prefix.size())) % p;
  if (v.name == "model.embed_tokens.weight") return 0;
  return p - 1;  // model.norm.weight, lm_head.weight
}

}  // namespace

TEST_CASE("fragments: every element in exactly one fragment, layers strided", "[fragments]") {
  for (const bool tied : {false, true}) {
    for (const int layers : {1, 4, 5}) {
      const ParamLayout layout = llama_param_layout(small_model(layers, tied));
      for (int p = 1; p <= layers; ++p) {
        DYNAMIC_SECTION("layers " << layers << ", p " << p << (tied ? ", tied" : "")) {
          const std::vector<Fragment> frags = partition_fragments(layout, p);
          REQUIRE(frags.size() == size_t(p));
          // Owner of every element, from the ranges.
          std::vector<int> owner(layout.total, -1);
          size_t covered = 0;
          for (const Fragment& f : frags) {
            size_t in_ranges = 0, prev_end = 0;
            for (size_t k = 0; k < f.ranges.size(); ++k) {
              const FragmentRange& r = f.ranges[k];
              CHECK(r.numel > 0);
              if (k > 0) CHECK(r.offset > prev_end);  // ascending, adjacent ones merged
              prev_end = r.offset + r.numel;
              REQUIRE(r.offset + r.numel <= layout.total);
              for (size_t i = r.offset; i < r.offset + r.numel; ++i) {
                CHECK(owner[i] == -1);  // no element in two fragments
                owner[i] = f.index;
              }
              in_ranges += r.numel;
            }
            CHECK(in_ranges == f.numel);
            covered += f.numel;
            // Layers j, j + p, j + 2p, ...
            std::vector<int> want;
            for (int l = f.index; l < layers; l += p) want.push_back(l);
            CHECK(f.layers == want);
            // The packed layout: the fragment's views back to back, same names and shapes.
            const ParamLayout packed = f.packed_layout(layout);
            CHECK(packed.total == f.numel);
            REQUIRE(packed.views.size() == f.views.size());
            size_t at = 0;
            for (size_t k = 0; k < packed.views.size(); ++k) {
              const ParamView& full = layout.views[f.views[k]];
              CHECK(packed.views[k].name == full.name);
              CHECK(packed.views[k].shape == full.shape);
              CHECK(packed.views[k].offset == at);
              at += full.numel;
            }
          }
          CHECK(covered == layout.total);
          CHECK(std::count(owner.begin(), owner.end(), -1) == 0);
          // Every view whole in the fragment the rule names.
          for (const ParamView& v : layout.views) {
            INFO(v.name);
            CHECK(fragment_of(v, p) == expected_fragment(v, p));
            for (size_t i = v.offset; i < v.offset + v.numel; i += std::max<size_t>(1, v.numel / 7))
              CHECK(owner[i] == expected_fragment(v, p));
            CHECK(owner[v.offset + v.numel - 1] == expected_fragment(v, p));
          }
          if (p == 1) {
            // One range, the whole buffer: plain DiLoCo's operations.
            REQUIRE(frags[0].ranges.size() == 1);
            CHECK(frags[0].ranges[0].offset == 0);
            CHECK(frags[0].ranges[0].numel == layout.total);
          }
        }
      }
    }
  }
}

TEST_CASE("fragments: 4 layers in 2 fragments, written out", "[fragments]") {
  const ParamLayout layout = llama_param_layout(small_model(4, false));
  const std::vector<Fragment> f = partition_fragments(layout, 2);
  const size_t embed = 40 * 16, head = 40 * 16, norm = 16;
  const size_t layer = (layout.total - embed - head - norm) / 4;
  // Fragment 0: embedding + layer 0 (touching: one range), layer 2.
  REQUIRE(f[0].ranges.size() == 2);
  CHECK(f[0].ranges[0].offset == 0);
  CHECK(f[0].ranges[0].numel == embed + layer);
  CHECK(f[0].ranges[1].offset == embed + 2 * layer);
  CHECK(f[0].ranges[1].numel == layer);
  // Fragment 1: layer 1, then layer 3 + final norm + head (touching).
  REQUIRE(f[1].ranges.size() == 2);
  CHECK(f[1].ranges[0].offset == embed + layer);
  CHECK(f[1].ranges[0].numel == layer);
  CHECK(f[1].ranges[1].offset == embed + 3 * layer);
  CHECK(f[1].ranges[1].numel == layer + norm + head);
  CHECK(f[0].layers == std::vector<int>{0, 2});
  CHECK(f[1].layers == std::vector<int>{1, 3});
}

TEST_CASE("fragments: more fragments than layers is refused", "[fragments]") {
  const ParamLayout layout = llama_param_layout(small_model(2, false));
  CHECK_THROWS_WITH(partition_fragments(layout, 3),
                    LOCO_CONTAINS("fragment 2 of 3 holds no transformer layer") &&
                        LOCO_CONTAINS("distributed.outer.fragments must be <= model.n_layers"));
  CHECK_THROWS_WITH(partition_fragments(layout, 0), LOCO_CONTAINS("must be >= 1"));
}

TEST_CASE("fragments: fragment j syncs at the steps t = j*H/p (mod H)", "[fragments]") {
  // p = 1: every H steps, as plain DiLoCo's due().
  for (int t = -1; t <= 100; ++t) CHECK(due_fragment(t, 20, 1) == (t > 0 && t % 20 == 0 ? 0 : -1));
  // H = 12, p = 3: fragment 0 at 12, 24, ...; fragment 1 at 4, 16, ...; fragment 2 at 8, 20.
  std::vector<std::vector<int>> at(3);
  for (int t = 0; t <= 36; ++t) {
    const int j = due_fragment(t, 12, 3);
    if (j >= 0) at[size_t(j)].push_back(t);
  }
  CHECK(at[0] == std::vector<int>{12, 24, 36});
  CHECK(at[1] == std::vector<int>{4, 16, 28});
  CHECK(at[2] == std::vector<int>{8, 20, 32});
  // Every fragment every H steps, staggered by H/p: each t ≡ j·H/p (mod H).
  for (int j = 0; j < 3; ++j)
    for (int t : at[size_t(j)]) CHECK(t % 12 == j * 12 / 3);
}
