// Streaming DiLoCo fragments (docs/algorithms.md §7; loco/dist/fragments.hpp) under mpirun -np 2
// and -np 4:
//  - OuterSync with outer.fragments = 2 against a hand simulation, sync by sync: fragment j
//    is due at t ≡ j·H/p (mod H); its outer SGD step (Nesterov) runs on its slice of θ_global
//    and v only, from the mean of every rank's Δ over that slice (compressed: every rank's
//    payload from the host reference pipeline with a plan over the fragment's tensors), and
//    θ_local changes only there (copy, or the merge τ steps later); everything else is left
//    bit for bit. Dense and compressed (error feedback, per element), with and without τ.
//  - fragments = 1 through the layout constructor is bitwise the plain DiLoCo sync.
//  - the trainer: the staggered schedule in metrics.jsonl, the final sync of every fragment,
//    θ identical on every rank, exact bytes and peak bytes per sync in summary.json.
//
// Rule for every test case: all ranks make the same collectives in the same order whatever
// the assertions say (CHECK, not REQUIRE, before a collective).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loco/backend/cpu_backend.hpp"
#include "loco/compress/compress.hpp"
#include "loco/config/config.hpp"
#include "loco/core/hash.hpp"
#include "loco/core/rng.hpp"
#include "loco/dist/communicator.hpp"
#include "loco/dist/fragments.hpp"
#include "loco/dist/outer_sync.hpp"
#include "loco/model/param_layout.hpp"
#include "loco/train/comm_report.hpp"
#include "loco/train/trainer.hpp"
#include "support/catch.hpp"
#include "support/mpi_scratch.hpp"
#include "support/tiny_job.hpp"

using namespace loco;
using nlohmann::json;

namespace {

using loco::testing::ring_ar;
using loco::testing::source_dir;
using loco::testing::tiny_diloco_json;
using loco::testing::tiny_job_json;

constexpr double kTimeout = 120.0;
constexpr int kSeqLen = 32;

std::vector<float> normal_vector(size_t n, uint64_t seed, double scale) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = float(rng.normal() * scale);
  return v;
}

std::vector<float> host(Buf b) { return std::vector<float>(b.f32(), b.f32() + b.numel); }

ModelConfig small_model() {
  ModelConfig m;
  m.vocab_size = 40;
  m.d_model = 16;
  m.n_layers = 4;
  m.n_heads = 2;
  m.n_kv_heads = 1;
  m.d_ff = 24;
  return m;
}

CompressionConfig sparse_config() {
  CompressionConfig cc;
  cc.error_feedback = true;
  cc.beta = 0.95;
  cc.selector = "chunked_topk";
  cc.topk = 8;
  cc.chunk = 8;
  cc.quantizer = "2bit";
  return cc;
}

// Every rank's θ_local (the test's own communicator: the sync's byte counts stay clean).
std::vector<std::vector<float>> gather_locals(Communicator& aux, Buf params) {
  std::vector<float> all(params.numel * size_t(aux.size()));
  aux.all_gather(params, Buf{all.data(), DType::F32, all.size()});
  std::vector<std::vector<float>> out;
  for (int q = 0; q < aux.size(); ++q)
    out.emplace_back(all.begin() + std::ptrdiff_t(size_t(q) * params.numel),
                     all.begin() + std::ptrdiff_t(size_t(q + 1) * params.numel));
  return out;
}

// The hand simulation of one fragment's outer sync. Built at the sync's start from what
// every rank holds then; `check` compares the state after completion.
struct FragmentSim {
  const Fragment* frag = nullptr;
  std::vector<float> g0, v0;     // θ_global and v before the sync (this rank's copies)
  std::vector<double> g, v;      // expected after: only the fragment's elements differ
  std::vector<uint8_t> in_frag;  // element mask
  uint64_t payload_bytes = 0;    // compressed: this rank's payload per the host reference
};

// Mean of the K ranks' Δ over fragment `f` (dense), or the host reference pipeline's
// aggregate of their payloads (compressed; `refs[q]` is rank q's compressor of this
// fragment, advanced here). Then the outer Nesterov step on the slice, in double.
FragmentSim simulate(const Fragment& f, const OuterConfig& oc, const std::vector<float>& g0,
                     const std::vector<float>& v0, const std::vector<std::vector<float>>& locals,
                     std::vector<compress::Compressor>* refs, uint64_t key, int my_rank) {
  const int K = int(locals.size());
  FragmentSim s;
  s.frag = &f;
  s.g0 = g0;
  s.v0 = v0;
  s.g.assign(g0.begin(), g0.end());
  s.v.assign(v0.begin(), v0.end());
  s.in_frag.assign(g0.size(), 0);
  std::vector<double> mean(f.numel, 0.0);
  if (refs) {
    std::vector<std::vector<uint8_t>> payloads;
    for (int q = 0; q < K; ++q) {
      std::vector<float> delta;  // packed, in float: the backend's g − l, one rounding
      for (const FragmentRange& r : f.ranges)
        for (size_t i = r.offset; i < r.offset + r.numel; ++i)
          delta.push_back(g0[i] - locals[size_t(q)][i]);
      payloads.push_back((*refs)[size_t(q)].compress(delta.data(), key));
      if (q == my_rank) s.payload_bytes = payloads.back().size();
    }
    compress::Aggregator agg((*refs)[0].plan(), (*refs)[0].plan().settings.aggregation);
    for (const auto& p : payloads) agg.add(p.data(), p.size());
    std::vector<float> out(f.numel);
    agg.finish(out.data(), K);
    mean.assign(out.begin(), out.end());
  } else {
    size_t at = 0;
    for (const FragmentRange& r : f.ranges)
      for (size_t i = r.offset; i < r.offset + r.numel; ++i, ++at)
        for (int q = 0; q < K; ++q) mean[at] += (double(g0[i]) - double(locals[size_t(q)][i])) / K;
  }
  size_t at = 0;
  for (const FragmentRange& r : f.ranges)
    for (size_t i = r.offset; i < r.offset + r.numel; ++i, ++at) {
      s.in_frag[i] = 1;
      s.v[i] = oc.momentum * s.v[i] + mean[at];
      s.g[i] -= oc.lr * (mean[at] + oc.momentum * s.v[i]);
    }
  return s;
}

// After the sync: the fragment's θ_global and v as simulated, θ_local there a copy of
// θ_global (merge = false) or α·θ_local + (1 − α)·θ_global from `local_before`; everything
// outside the fragment bit for bit as before.
void check_sync(const FragmentSim& s, const OuterSync& sync, Buf params,
                const std::vector<float>& local_before, bool merge, double alpha, double tol) {
  const std::vector<float> g = host(sync.global_params()), v = host(sync.momentum()),
                           l = host(params);
  double worst = 0.0;
  size_t outside_changed = 0, local_mismatch = 0;
  const float a = float(alpha);
  for (size_t i = 0; i < g.size(); ++i) {
    if (s.in_frag[i]) {
      worst = std::max({worst, std::abs(g[i] - s.g[i]), std::abs(v[i] - s.v[i])});
      const float want = merge ? (1.0f - a) * g[i] + a * local_before[i] : g[i];
      local_mismatch += l[i] != want;
    } else {
      outside_changed += g[i] != s.g0[i] || v[i] != s.v0[i] || l[i] != local_before[i];
    }
  }
  INFO("fragment " << s.frag->index << ": largest deviation " << worst);
  CHECK(worst < tol);
  CHECK(outside_changed == 0);
  CHECK(local_mismatch == 0);
}

// ---------------------------------------------------------------- trainer helpers

json tiny_json() {
  return tiny_diloco_json(
      {"mpi-fragments", 9, 2, kSeqLen, 2, kTimeout},
      {{"interval", 4}, {"lr", 0.7}, {"momentum", 0.9}, {"nesterov", true}, {"fragments", 2}});
}

}  // namespace

// ------------------------------------------------------------------ OuterSync

TEST_CASE("fragmented OuterSync equals a per-fragment hand simulation at the staggered steps",
          "[outer][fragments][mpi]") {
  auto world = make_mpi_world(kTimeout);
  auto aux = make_mpi_world(kTimeout);
  const int K = world->size(), r = world->rank();
  CpuBackend be;
  const ParamLayout layout = llama_param_layout(small_model());
  const size_t n = layout.total;
  const std::vector<float> theta0 = normal_vector(n, 31, 0.5);
  const int p = 2, H = 4, steps = 11;
  const double alpha = 0.3;  // not 0.5: a swapped α / (1 − α) would show

  for (const bool compressed : {false, true}) {
    for (const int tau : {0, 1}) {
      DYNAMIC_SECTION((compressed ? "compressed" : "dense") << ", tau " << tau) {
        OuterConfig oc;
        oc.interval = H;
        oc.fragments = p;
        oc.overlap_steps = tau;
        oc.merge_alpha = alpha;
        oc.lr = 0.7;
        oc.momentum = 0.9;
        oc.nesterov = true;
        const CompressionConfig cc = compressed ? sparse_config() : CompressionConfig{};
        Buf params = be.alloc(n, DType::F32);
        be.upload(params, theta0.data());
        OuterSync sync(oc, cc, layout, be, *world, params);
        REQUIRE(sync.fragments() == p);
        CHECK(sync.compressed() == compressed);
        // The reference pipeline per fragment, per simulated rank: a plan over the fragment's
        // tensors (packed offsets), its own error feedback.
        std::vector<std::vector<compress::Compressor>> refs{size_t(p)};
        if (compressed)
          for (int j = 0; j < p; ++j)
            for (int q = 0; q < K; ++q)
              refs[size_t(j)].emplace_back(compress::make_plan(
                  compress::shapes_from_layout(sync.fragment(j).packed_layout(layout)),
                  compress::settings_from_config(cc)));
        auto refs_of = [&](int j) { return compressed ? &refs[size_t(j)] : nullptr; };
        // Expected EF state of this rank, flat: each fragment's accumulator at its elements.
        auto expected_ef = [&]() {
          std::vector<float> flat(n, 0.0f);
          for (int j = 0; j < p; ++j) {
            const auto& e = refs[size_t(j)][size_t(r)].error();
            size_t at = 0;
            for (const FragmentRange& rg : sync.fragment(j).ranges)
              for (size_t i = rg.offset; i < rg.offset + rg.numel; ++i) flat[i] = e[at++];
          }
          return flat;
        };
        const double tol = 2e-5;

        std::vector<int> synced_at, synced_frag;
        std::unique_ptr<FragmentSim> pending;
        int started = -1;
        uint64_t peak = 0, total = 0;
        for (int t = 1; t <= steps; ++t) {
          // One inner step: θ_local moves (rank-dependent).
          const auto mv = normal_vector(n, 1000u * uint64_t(r) + uint64_t(t), 0.01);
          for (size_t i = 0; i < n; ++i) params.f32()[i] -= mv[i];
          sync.poll();
          auto completed = [&](const FragmentSim& s) {
            synced_at.push_back(t);
            synced_frag.push_back(sync.last_fragment());
            CHECK(sync.last_fragment() == s.frag->index);
            const uint64_t sent = sync.last_sync_sent_bytes();
            if (compressed) {
              CHECK(sync.last_stats().payload_bytes == s.payload_bytes);
              CHECK(sent == uint64_t(K - 1) * sync.last_stats().piece_bytes);
              CHECK(sync.error_feedback() == expected_ef());
            } else {
              CHECK(sent == ring_ar(s.frag->numel * 4, K));
            }
            CHECK(sync.last_stats().elements == s.frag->numel);
            peak = std::max(peak, sent);
            total += sent;
            // θ_global bitwise identical on every rank after each fragment sync.
            const auto hashes =
                aux->all_gather_host(hash_bytes(sync.global_params().data, n * sizeof(float)));
            CHECK(mismatching_ranks(hashes).empty());
          };
          if (sync.in_flight() && t == started + tau) {
            const std::vector<float> before = host(params);
            sync.finish(params);
            check_sync(*pending, sync, params, before, /*merge=*/true, alpha, tol);
            completed(*pending);
            pending.reset();
          }
          const int j = sync.due_fragment(t);
          CHECK(j == due_fragment(t, H, p));
          if (j < 0) continue;
          const auto locals = gather_locals(*aux, params);
          const uint64_t key = uint64_t(sync.syncs_done());
          auto s = std::make_unique<FragmentSim>(
              simulate(sync.fragment(j), oc, host(sync.global_params()), host(sync.momentum()),
                       locals, refs_of(j), key, r));
          if (tau == 0) {
            const std::vector<float> before = host(params);
            sync.sync_fragment(params, j);
            check_sync(*s, sync, params, before, /*merge=*/false, alpha, tol);
            completed(*s);
          } else {
            sync.start(params, j);
            CHECK(sync.in_flight());
            pending = std::move(s);
            started = t;
          }
        }
        CHECK_FALSE(sync.in_flight());  // τ = 1: the sync started at 10 completed at 11
        // Fragment 1 at 2, 6, 10, fragment 0 at 4, 8 (completed τ steps later).
        const std::vector<int> starts{2, 4, 6, 8, 10};
        std::vector<int> want_at;
        for (int s : starts) want_at.push_back(s + tau);
        CHECK(synced_at == want_at);
        CHECK(synced_frag == std::vector<int>{1, 0, 1, 0, 1});

        // The final sync: every fragment, blocking, θ_local = θ_global everywhere.
        const auto locals = gather_locals(*aux, params);
        const std::vector<float> g0 = host(sync.global_params()), v0 = host(sync.momentum());
        std::vector<FragmentSim> finals;
        for (int j = 0; j < p; ++j)
          finals.push_back(simulate(sync.fragment(j), oc, g0, v0, locals, refs_of(j),
                                    uint64_t(sync.syncs_done() + j), r));
        sync.sync(params);
        CHECK(sync.last_fragment() == -1);
        const std::vector<float> g = host(sync.global_params()), v = host(sync.momentum());
        double worst = 0.0;
        for (const FragmentSim& s : finals)
          for (size_t i = 0; i < n; ++i)
            if (s.in_frag[i])
              worst = std::max({worst, std::abs(g[i] - s.g[i]), std::abs(v[i] - s.v[i])});
        CHECK(worst < tol);
        CHECK(std::memcmp(params.data, sync.global_params().data, n * sizeof(float)) == 0);
        if (compressed) CHECK(sync.error_feedback() == expected_ef());
        const auto hashes = aux->all_gather_host(hash_bytes(params.data, n * sizeof(float)));
        CHECK(mismatching_ranks(hashes).empty());
        CHECK(sync.syncs_done() == 7);
        CHECK(sync.fragment_syncs() == std::vector<int>{3, 4});
        const json fj = sync.fragments_json();
        CHECK(fj["fragments"] == p);
        CHECK(fj["per_fragment"][1]["layers"] == std::vector<int>{1, 3});
        CHECK(fj["per_fragment"][0]["syncs"] == 3);
        if (!compressed) {
          const size_t largest = std::max(sync.fragment(0).numel, sync.fragment(1).numel);
          CHECK(sync.peak_sync_sent_bytes() == ring_ar(largest * 4, K));
          // The final sync sends both fragments: its bytes are their sum.
          CHECK(sync.last_sync_sent_bytes() ==
                ring_ar(sync.fragment(0).numel * 4, K) + ring_ar(sync.fragment(1).numel * 4, K));
          // Each sync moves about half of the model, not all of it.
          CHECK(sync.peak_sync_sent_bytes() < ring_ar(n * 4, K) * 6 / 10);
        } else {
          CHECK(sync.peak_sync_sent_bytes() >= peak);
        }
        CHECK(fj["sync_sent_bytes"].get<uint64_t>() == total + sync.last_sync_sent_bytes());
        be.release(params);
      }
    }
  }
}

TEST_CASE("fragments = 1 through the layout constructor is the plain DiLoCo sync, bit for bit",
          "[outer][fragments][mpi]") {
  auto world = make_mpi_world(kTimeout);
  const int r = world->rank();
  CpuBackend be;
  const ParamLayout layout = llama_param_layout(small_model());
  const size_t n = layout.total;
  const std::vector<float> theta0 = normal_vector(n, 41, 0.5);
  for (const bool overlap : {false, true}) {
    DYNAMIC_SECTION((overlap ? "overlapped" : "blocking")) {
      OuterConfig oc;
      oc.interval = 4;
      oc.overlap_steps = overlap ? 1 : 0;
      Buf pa = be.alloc(n, DType::F32), pb = be.alloc(n, DType::F32);
      be.upload(pa, theta0.data());
      be.upload(pb, theta0.data());
      OuterSync plain(oc, be, *world, pa);
      OuterSync layered(oc, CompressionConfig{}, layout, be, *world, pb);
      REQUIRE(layered.fragments() == 1);
      CHECK(layered.fragment(0).ranges.size() == 1);
      for (int s = 0; s < 3; ++s) {
        const auto mv = normal_vector(n, 77u * uint64_t(r) + uint64_t(s), 0.01);
        for (size_t i = 0; i < n; ++i) pa.f32()[i] -= mv[i], pb.f32()[i] -= mv[i];
        if (overlap) {  // one sync in flight at a time on the communicator
          plain.start(pa);
          for (size_t i = 0; i < n; ++i) pa.f32()[i] -= 0.5f * mv[i];
          plain.finish(pa);
          layered.start(pb, 0);
          for (size_t i = 0; i < n; ++i) pb.f32()[i] -= 0.5f * mv[i];
          layered.finish(pb);
        } else {
          plain.sync(pa);
          layered.sync(pb);
        }
        CHECK(std::memcmp(pa.data, pb.data, n * sizeof(float)) == 0);
        CHECK(std::memcmp(plain.global_params().data, layered.global_params().data,
                          n * sizeof(float)) == 0);
        CHECK(std::memcmp(plain.momentum().data, layered.momentum().data, n * sizeof(float)) == 0);
      }
      CHECK(layered.last_fragment() == 0);
      CHECK(layered.peak_sync_sent_bytes() == ring_ar(n * 4, world->size()));
      be.release(pa);
      be.release(pb);
    }
  }
  // Fragments need the layers: the layout-free constructor refuses p > 1.
  OuterConfig oc;
  oc.interval = 4;
  oc.fragments = 2;
  Buf b = be.alloc(16, DType::F32);
  CHECK_THROWS_WITH(OuterSync(oc, be, *world, b), LOCO_CONTAINS("needs the parameter layout"));
  be.release(b);
}

// ------------------------------------------------------------------ the trainer

TEST_CASE("training with fragments: staggered syncs, final sync of all, exact and peak bytes",
          "[train][fragments][mpi]") {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world(kTimeout);
  const int K = world->size();
  testing::TmpDir tmp(*world, "loco-mpi-frag");
  REQUIRE(tmp.ok());

  // H = 4, p = 2 over 9 steps: fragment 1 due at 2 and 6, fragment 0 at 4 and 8; step 9
  // syncs both (the final sync).
  for (const bool compressed : {false, true}) {
    for (const int tau : {0, 1}) {
      DYNAMIC_SECTION((compressed ? "compressed" : "dense") << ", tau " << tau) {
        json j = tiny_json();
        j["distributed"]["outer"]["overlap_steps"] = tau;
        if (compressed) {
          j["distributed"]["outer"]["lr"] = 1.0;
          j["distributed"]["outer"]["momentum"] = 0.0;
          j["distributed"]["compression"] = {{"error_feedback", true},
                                             {"selector", "chunked_topk"},
                                             {"topk", 64},
                                             {"quantizer", "2bit"}};
        }
        const std::string name = std::string(compressed ? "c" : "d") + std::to_string(tau);
        const std::string dir = tmp.run_dir(name);
        const Config config = config_from_json(j, name);
        const TrainResult res = train(config, dir, *world);
        CHECK(res.steps_done == 9);
        for (double l : res.step_losses) CHECK(std::isfinite(l));
        const auto hashes = world->all_gather_host(res.params_hash);
        CHECK(mismatching_ranks(hashes).empty());

        const json& comm = res.summary["comm"];
        const json& fj = comm["fragments"];
        CHECK(fj["fragments"] == 2);
        CHECK(fj["per_fragment"][0]["layers"] == std::vector<int>{0});
        CHECK(fj["per_fragment"][1]["layers"] == std::vector<int>{1});
        CHECK(fj["per_fragment"][0]["syncs"] == 3);  // 4, 8, 9
        CHECK(fj["per_fragment"][1]["syncs"] == 3);  // 2, 6, 9
        CHECK(comm["outer_syncs"] == 6);
        const std::vector<Fragment> parts =
            partition_fragments(llama_param_layout(config.model), 2);
        CHECK(fj["per_fragment"][0]["elements"] == parts[0].numel);
        CHECK(fj["per_fragment"][1]["elements"] == parts[1].numel);
        const uint64_t s0 = ring_ar(parts[0].numel * 4, K), s1 = ring_ar(parts[1].numel * 4, K);
        if (!compressed) {
          // Every element synced as often as with plain DiLoCo's 3 syncs, in 6 halves.
          CHECK(comm["sent_bytes"].get<uint64_t>() == 3 * s0 + 3 * s1);
          CHECK(fj["sync_sent_bytes"].get<uint64_t>() == 3 * s0 + 3 * s1);
          CHECK(fj["peak_sync_sent_bytes"].get<uint64_t>() == std::max(s0, s1));
        } else {
          CHECK(fj["sync_sent_bytes"] == comm["by_kind"]["all_gather"]["sent_bytes"]);
          CHECK(comm["by_kind"]["all_gather"]["calls"] == 6);
          CHECK(fj["peak_sync_sent_bytes"].get<uint64_t>() <=
                fj["sync_sent_bytes"].get<uint64_t>());
        }
        const std::string table = comm_report_table(comm);
        CHECK_THAT(table, LOCO_CONTAINS("outer-sync fragments: 2 (strided layers"));
        CHECK_THAT(table, LOCO_CONTAINS(" per sync, "));

        if (world->rank() == 0) {
          std::vector<int> steps;
          std::vector<json> frags;
          for (const json& rec : testing::read_jsonl(dir + "/metrics.jsonl")) {
            if (rec.contains("outer_earlier")) {
              steps.push_back(rec["step"].get<int>());
              frags.push_back(rec["outer_earlier"]["fragment"]);
            }
            if (!rec.contains("outer")) continue;
            steps.push_back(rec["step"].get<int>());
            frags.push_back(rec["outer"]["fragment"]);
            CHECK(rec["outer"]["sync_sent_bytes"].get<uint64_t>() > 0);
          }
          const std::vector<int> want_steps =
              tau == 0 ? std::vector<int>{2, 4, 6, 8, 9} : std::vector<int>{3, 5, 7, 9, 9};
          CHECK(steps == want_steps);
          CHECK(frags == std::vector<json>{1, 0, 1, 0, "all"});
        }
      }
    }
  }
}
