// Compressed outer syncs (SparseLoCo and friends, docs/algorithms.md §4, §5, §9) under mpirun -np 2
// and -np 4: bitwise-identical θ on every rank, equality with a local simulation of every
// rank's compressor, SparseLoCo at 100 % density = DiLoCo, and the all-gather accounting.
//
// Rule for every test case: all ranks make the same world collectives in the same order
// whatever the assertions say (CHECK, not REQUIRE, before a collective).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loco/backend/cpu_backend.hpp"
#include "loco/compress/compress.hpp"
#include "loco/config/config.hpp"
#include "loco/core/hash.hpp"
#include "loco/core/rng.hpp"
#include "loco/dist/comm_stats.hpp"
#include "loco/dist/communicator.hpp"
#include "loco/dist/outer_sync.hpp"
#include "loco/model/param_layout.hpp"
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

// A layout with awkward shapes: dims not multiples of 64, 1-D with a short tail, 1×1.
ParamLayout awkward_layout() {
  ParamLayout l;
  auto add = [&](const char* name, std::vector<int64_t> shape, ParamKind kind) {
    size_t n = 1;
    for (auto d : shape) n *= size_t(d);
    l.views.push_back(ParamView{name, shape, l.total, n, kind, -1});
    l.total += n;
  };
  add("embed", {130, 96}, ParamKind::Embedding);
  add("norm", {200}, ParamKind::Norm);
  add("square", {64, 64}, ParamKind::Matrix);
  add("odd", {97, 70}, ParamKind::Matrix);
  add("one", {1, 1}, ParamKind::Matrix);
  add("wide", {64, 192}, ParamKind::Matrix);
  return l;
}

std::vector<float> normal_vector(size_t n, uint64_t seed, double scale) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = float(rng.normal() * scale);
  return v;
}

uint64_t hash_floats(const float* p, size_t n) { return hash_bytes(p, n * sizeof(float)); }

// θ_local of rank r before sync s: θ_global moved by a rank- and sync-dependent step.
std::vector<float> local_params(const std::vector<float>& global, int r, int s) {
  std::vector<float> out = global;
  const std::vector<float> step =
      normal_vector(global.size(), 1000u * uint64_t(r) + uint64_t(s), 0.01);
  for (size_t i = 0; i < out.size(); ++i) out[i] -= step[i];
  return out;
}

// The tiny job (as in mpi_test_training.cpp), DiLoCo with H = 2 over 6 steps.
json tiny_json() {
  return tiny_diloco_json({"mpi-sparse", 6, 2, kSeqLen, 2, kTimeout},
                          {{"interval", 2}, {"lr", 1.0}, {"momentum", 0.0}, {"nesterov", false}});
}

json sparseloco_compression() {
  return {{"error_feedback", true},
          {"beta", 0.95},
          {"selector", "chunked_topk"},
          {"topk", 64},
          {"chunk", 64},
          {"quantizer", "2bit"},
          {"index_coding", "auto"},
          {"aggregation", "mean_selected"}};
}

double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(std::abs(b[i]), 1e-12));
  return worst;
}

}  // namespace

// ------------------------------------------------------------------ OuterSync directly

TEST_CASE("compressed OuterSync: identical θ on every rank, equal to a simulation of all ranks",
          "[sparse][outer][mpi]") {
  auto world = make_mpi_world(kTimeout);
  const int K = world->size(), r = world->rank();
  CpuBackend be;
  const ParamLayout layout = awkward_layout();
  const size_t N = layout.total;

  struct Variant {
    const char* name;
    CompressionConfig cc;
    OuterConfig oc;
  };
  std::vector<Variant> variants;
  {
    Variant v{"sparseloco", {}, {}};
    v.cc.error_feedback = true;
    v.cc.selector = "chunked_topk";
    v.cc.quantizer = "2bit";
    v.oc.lr = 1.0;
    v.oc.momentum = 0.0;
    v.oc.nesterov = false;
    variants.push_back(v);
    Variant g{"global-4bit-mean_all-nesterov", {}, {}};
    g.cc.error_feedback = true;
    g.cc.beta = 0.9;
    g.cc.selector = "global_topk";
    g.cc.topk = 128;
    g.cc.quantizer = "4bit";
    g.cc.aggregation = "mean_all";
    g.cc.index_coding = "fixed";
    variants.push_back(g);  // outer: the DiLoCo defaults (lr 0.7, Nesterov 0.9)
    Variant rk{"random_k-bf16", {}, {}};
    rk.cc.selector = "random_k";
    rk.cc.quantizer = "bf16";
    rk.cc.seed = 5;
    variants.push_back(rk);
    Variant d8{"dense-8bit-bitmap", {}, {}};
    d8.cc.quantizer = "8bit";
    d8.cc.error_feedback = true;
    variants.push_back(d8);
  }

  const std::vector<float> theta0 = normal_vector(N, 42, 0.02);
  for (const Variant& v : variants) {
    DYNAMIC_SECTION(v.name) {
      world->reset_stats();
      Buf params = be.alloc(N, DType::F32);
      be.upload(params, theta0.data());
      OuterSync sync(v.oc, v.cc, layout, be, *world, params);
      CHECK(sync.compressed());

      // The simulation: every rank's compressor, run here.
      const compress::Plan plan = compress::make_plan(compress::shapes_from_layout(layout),
                                                      compress::settings_from_config(v.cc));
      std::vector<compress::Compressor> sims;
      for (int s = 0; s < K; ++s) sims.emplace_back(plan);
      compress::Aggregator agg(plan, plan.settings.aggregation);
      Buf g = be.alloc(N, DType::F32), m = be.alloc(N, DType::F32), d = be.alloc(N, DType::F32);
      Buf lp = be.alloc(N, DType::F32);
      be.upload(g, theta0.data());

      uint64_t expected_sent = 0;
      for (int step = 0; step < 3; ++step) {
        // This rank's inner steps.
        const std::vector<float> global(sync.global_params().f32(), sync.global_params().f32() + N);
        const std::vector<float> mine = local_params(global, r, step);
        be.upload(params, mine.data());
        sync.sync(params);

        // Simulated: all K ranks from the simulated global.
        const std::vector<float> gsim(g.f32(), g.f32() + N);
        std::vector<std::vector<uint8_t>> payloads;
        uint64_t largest = 0;
        for (int s = 0; s < K; ++s) {
          const std::vector<float> ls = local_params(gsim, s, step);
          be.upload(lp, ls.data());
          be.copy(d, g);
          be.axpby(d, -1.0f, lp, 1.0f);
          payloads.push_back(sims[size_t(s)].compress(d.f32(), uint64_t(step)));
          largest = std::max<uint64_t>(largest, payloads.back().size());
        }
        const uint64_t piece = (largest + 3) / 4 * 4;
        agg.reset();
        for (int s = 0; s < K; ++s) agg.add(payloads[size_t(s)].data(), payloads[size_t(s)].size());
        agg.finish(d.f32(), K);
        outer_sgd_step(be, g, m, d, v.oc.lr, v.oc.momentum, v.oc.nesterov);
        expected_sent += ring_allgather_bytes(piece, K);

        INFO("sync " << step + 1);
        CHECK(sync.last_stats().piece_bytes == piece);
        CHECK(sync.last_stats().payload_bytes == payloads[size_t(r)].size());
        CHECK(sync.last_stats().kept == sims[size_t(r)].stats().kept);
        CHECK(hash_floats(params.f32(), N) == hash_floats(g.f32(), N));
        CHECK(hash_floats(sync.global_params().f32(), N) == hash_floats(g.f32(), N));
        if (v.cc.error_feedback) CHECK(sync.error_feedback() == sims[size_t(r)].error());
        // Bitwise-identical θ on every rank.
        const auto hashes = world->all_gather_host(hash_floats(params.f32(), N));
        CHECK(mismatching_ranks(hashes).empty());
      }
      // Accounting: one all-gather of the padded piece per sync, plus the 8-byte size exchange
      // (a host all-gather, counted apart).
      const CommCounters ag = world->stats()[CommKind::AllGather];
      CHECK(ag.calls == 3);
      CHECK(ag.sent_bytes == expected_sent);
      CHECK(ag.recv_bytes == expected_sent);
      CHECK(world->stats()[CommKind::AllReduce].calls == 0);
      CHECK(world->stats()[CommKind::HostAllGather].calls == 3 + 3);  // sizes + the hashes above
      CHECK(sync.total_stats().piece_bytes * uint64_t(K - 1) == expected_sent);
      for (Buf* b : {&g, &m, &d, &lp, &params}) be.release(*b);
    }
  }
}

TEST_CASE("100 % density, no quantisation, beta 0, mean_all, lr 1: the same as dense DiLoCo",
          "[sparse][outer][mpi]") {
  auto world = make_mpi_world(kTimeout);
  const int K = world->size(), r = world->rank();
  CpuBackend be;
  const ParamLayout layout = awkward_layout();
  const size_t N = layout.total;
  OuterConfig oc;
  oc.lr = 1.0;
  oc.momentum = 0.0;
  oc.nesterov = false;
  CompressionConfig cc;
  cc.selector = "chunked_topk";
  cc.topk = 64 * 64;
  cc.quantizer = "none";
  cc.error_feedback = true;
  cc.beta = 0.0;
  cc.aggregation = "mean_all";

  const std::vector<float> theta0 = normal_vector(N, 3, 0.02);
  Buf pd = be.alloc(N, DType::F32), ps = be.alloc(N, DType::F32);
  be.upload(pd, theta0.data());
  be.upload(ps, theta0.data());
  OuterSync dense(oc, be, *world, pd);
  OuterSync sparse(oc, cc, layout, be, *world, ps);
  CHECK_FALSE(dense.compressed());
  CHECK(sparse.compressed());
  for (int step = 0; step < 3; ++step) {
    const std::vector<float> gd(dense.global_params().f32(), dense.global_params().f32() + N);
    const std::vector<float> ld = local_params(gd, r, step);
    be.upload(pd, ld.data());
    be.upload(ps, ld.data());
    dense.sync(pd);
    sparse.sync(ps);
    double worst = 0.0;
    for (size_t i = 0; i < N; ++i)
      worst = std::max(worst, double(std::abs(pd.f32()[i] - ps.f32()[i])));
    INFO("sync " << step + 1 << ": max |θ_dense − θ_sparse| = " << worst);
    // Sums in a different order (MPI's reduction vs rank order): a few ulps of 0.02.
    CHECK(worst <= 1e-8);
    if (K == 2) CHECK(worst == 0.0);  // a + b is commutative: bitwise
    CHECK(sparse.last_stats().kept == N);
    // Every chunk full: no index bits at all, 32 value bits per element.
    CHECK(sparse.last_stats().index_bytes == 0);
  }
  be.release(pd);
  be.release(ps);
}

// ------------------------------------------------------------------ training

TEST_CASE("SparseLoCo training: identical θ on every rank, all-gather accounting, metrics",
          "[sparse][train][mpi]") {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world(kTimeout);
  const int K = world->size();
  testing::TmpDir tmp(*world, "loco-mpi-sparse");
  REQUIRE(tmp.ok());
  json j = tiny_json();
  j["distributed"]["compression"] = sparseloco_compression();
  const std::string dir = tmp.run_dir("sparseloco");
  const TrainResult res = train(config_from_json(j, "mpi_test_sparse"), dir, *world);
  CHECK(res.steps_done == 6);
  for (double l : res.step_losses) CHECK(std::isfinite(l));
  const auto hashes = world->all_gather_host(res.params_hash);
  CHECK(mismatching_ranks(hashes).empty());

  const json& comm = res.summary["comm"];
  const json& z = comm["compression"];
  CHECK(comm["outer_syncs"].get<int>() == 3);
  CHECK(z["syncs"].get<int>() == 3);
  CHECK(z["collective"] == "all_gather");
  CHECK(z["selector"] == "chunked_topk");
  const uint64_t pieces = z["piece_bytes"].get<uint64_t>();
  // Model traffic = the all-gathers only: Σ over syncs of (K−1)·piece.
  CHECK(comm["sent_bytes"].get<uint64_t>() == ring_allgather_bytes(pieces, K));
  CHECK(comm["by_kind"]["all_gather"]["calls"].get<int>() == 3);
  CHECK(comm["by_kind"]["all_reduce"]["calls"].get<int>() == 0);
  // Density of the tiny model: k(C) per chunk, about 1/64 (the 1-D norms keep 1 of 32).
  const double density = z["density"].get<double>();
  CHECK(density > 0.0156);
  CHECK(density < 0.02);
  // 2-bit values, Rice-coded indices; on a model this small the per-tensor headers and
  // tables (28 bytes for each of 21 tensors) add ~9 bits per kept element.
  CHECK(z["value_bits_per_kept_element"].get<double>() < 2.2);
  CHECK(z["index_bits_per_kept_element"].get<double>() < 9.0);
  const double sum = z["value_bits_per_kept_element"].get<double>() +
                     z["index_bits_per_kept_element"].get<double>() +
                     z["overhead_bits_per_kept_element"].get<double>();
  CHECK(z["bits_per_kept_element"].get<double>() == Catch::Approx(sum).epsilon(1e-12));
  CHECK(z["wire_bits_per_kept_element"].get<double>() >= z["bits_per_kept_element"].get<double>());
  CHECK(comm["ratio_vs_ddp_fp32"].get<double>() > 10.0);

  if (world->rank() == 0) {
    // Per-sync records: the all-gather of that sync moved ring_allgather_bytes(piece, K).
    int syncs = 0;
    uint64_t sum_pieces = 0;
    for (const json& rec : testing::read_jsonl(dir + "/metrics.jsonl")) {
      if (!rec.contains("outer")) continue;
      ++syncs;
      const json& o = rec["outer"];
      const uint64_t piece = o["compression"]["piece_bytes"].get<uint64_t>();
      sum_pieces += piece;
      CHECK(o["comm"]["all_gather"]["sent_bytes"].get<uint64_t>() ==
            ring_allgather_bytes(piece, K));
      CHECK(o["compression"]["ef_norm"].get<double>() > 0.0);
      CHECK(o["compression"]["payload_bytes"].get<uint64_t>() <= piece);
    }
    CHECK(syncs == 3);
    CHECK(sum_pieces == pieces);
  }
}

TEST_CASE(
    "SparseLoCo at 100 % density, no quantisation, beta 0, mean_all equals DiLoCo (lr 1, "
    "momentum 0) in training",
    "[sparse][train][mpi]") {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world(kTimeout);
  const int K = world->size();
  testing::TmpDir tmp(*world, "loco-mpi-sparse");
  REQUIRE(tmp.ok());
  const json base = tiny_json();
  const TrainResult dl = train(config_from_json(base, "diloco"), tmp.run_dir("diloco"), *world);
  for (const bool ef : {true, false}) {
    {
      INFO("error feedback " << ef);
      json j = base;
      j["distributed"]["compression"] = {{"error_feedback", ef},       {"beta", 0.0},
                                         {"selector", "chunked_topk"}, {"topk", 4096},
                                         {"quantizer", "none"},        {"aggregation", "mean_all"}};
      const TrainResult sp =
          train(config_from_json(j, "sparse"), tmp.run_dir(ef ? "sparse-ef" : "sparse"), *world);
      CHECK(sp.steps_done == 6);
      CHECK(max_rel_diff(sp.step_losses, dl.step_losses) <= 1e-5);
      CHECK(std::abs(sp.step_losses.front() - sp.step_losses.back()) > 1e-3);
      CHECK(sp.summary["comm"]["compression"]["density"].get<double>() == 1.0);
      const auto hashes = world->all_gather_host(sp.params_hash);
      CHECK(mismatching_ranks(hashes).empty());
      // Two ranks: the sums are the same additions, θ bitwise equal to DiLoCo's.
      if (K == 2) CHECK(sp.params_hash == dl.params_hash);
    }
  }
}
