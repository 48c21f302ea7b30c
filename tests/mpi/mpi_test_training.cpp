// Distributed training, end to end in-process: DDP, DiLoCo and replicas under mpirun -np 2 and
// -np 4 (docs/algorithms.md §1, §2, §9). Every rank runs loco::train on a communicator; reference
// runs with fewer ranks go on a sub-communicator made by split() while the other ranks wait
// in a world broadcast that carries the reference's results to everyone.
//
// The model is tiny (d_model 32, 2 layers) so each file finishes in seconds on 2 cores.
// Expected values are computed here from the rank count, independently of the trainer.
//
// Rule for every test case: all ranks make the same world collectives in the same order
// whatever the assertions say (CHECK, not REQUIRE, before a collective), so a failing check
// fails the test instead of hanging it.
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
#include "loco/config/config.hpp"
#include "loco/dist/comm_stats.hpp"
#include "loco/dist/communicator.hpp"
#include "loco/dist/outer_sync.hpp"
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

// Generous: 4 ranks share 2 cores, and the ranks that wait for a 1-rank reference run wait
// in a world collective for the whole of that run.
constexpr double kTimeout = 120.0;

constexpr int kMicroBatch = 2;
constexpr int kSeqLen = 32;

// The tiny job every test starts from; callers patch the JSON before it is validated.
json tiny_json() { return tiny_job_json({"mpi-test", 6, kMicroBatch, kSeqLen, 4, kTimeout}); }

Config to_config(const json& j) { return config_from_json(j, "mpi_test_training"); }

// Inner SGD without clipping, constant lr, no warmup: the setting in which DiLoCo with H = 1,
// η_out = 1, μ = 0 is exactly DDP.
void make_plain_sgd(json& j, double lr) {
  j["optimizer"] = {{"type", "sgd"}, {"lr", lr}, {"weight_decay", 0.1}, {"grad_clip", 0.0}};
  j["schedule"] = {{"type", "constant"}, {"warmup_steps", 0}};
}

void quiet() { spdlog::set_level(spdlog::level::warn); }

// Largest |a-b| / max(|b|, 1e-12) over two loss vectors (infinity when the sizes differ).
double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(std::abs(b[i]), 1e-12));
  return worst;
}

std::string show(const std::vector<double>& v) {
  std::string s;
  char buf[40];
  for (double x : v) {
    std::snprintf(buf, sizeof buf, "%s%.9f", s.empty() ? "" : " ", x);
    s += buf;
  }
  return s;
}

// Runs `config` on `sub` (ranks holding nullptr skip the run) and hands its per-step losses
// and final validation loss to every rank of `world` (root = world rank 0, which must be a
// member of `sub`). Collective over `world`.
struct RefResult {
  std::vector<double> losses;      // world rank 0's (its replica's)
  std::vector<double> sync_means;  // mean over the replicas at each sync point
  double val_loss = -1.0;
  double steps_done = 0;
};
RefResult run_on_sub_and_share(Communicator& world, Communicator* sub, const Config& config,
                               const std::string& run_dir) {
  const int steps = config.training.steps;
  // steps losses, val loss, steps done, then up to `steps` sync means (NaN-padded).
  std::vector<double> packed(2 * static_cast<size_t>(steps) + 2, std::nan(""));
  if (sub) {
    const TrainResult r = train(config, run_dir, *sub);
    for (int i = 0; i < steps && i < static_cast<int>(r.step_losses.size()); ++i)
      packed[static_cast<size_t>(i)] = r.step_losses[static_cast<size_t>(i)];
    packed[static_cast<size_t>(steps)] = r.final_val_loss;
    packed[static_cast<size_t>(steps) + 1] = r.steps_done;
    for (size_t i = 0; i < r.sync_mean_losses.size() && i < size_t(steps); ++i)
      packed[size_t(steps) + 2 + i] = r.sync_mean_losses[i];
  }
  world.broadcast_host(packed.data(), packed.size() * sizeof(double), 0);
  RefResult out;
  out.losses.assign(packed.begin(), packed.begin() + steps);
  for (size_t i = size_t(steps) + 2; i < packed.size() && !std::isnan(packed[i]); ++i)
    out.sync_means.push_back(packed[i]);
  out.val_loss = packed[static_cast<size_t>(steps)];
  out.steps_done = packed[static_cast<size_t>(steps) + 1];
  return out;
}

// Every rank's final-parameter hash; all must be equal (bitwise-identical θ).
std::vector<uint64_t> gather_hashes(Communicator& world, uint64_t h) {
  return world.all_gather_host(h);
}

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

}  // namespace

// ------------------------------------------------------------------ DDP

TEST_CASE("DDP over K ranks equals one process with K times the batch", "[train][ddp][mpi]") {
  quiet();
  auto world = make_mpi_world(kTimeout);
  const int K = world->size(), r = world->rank();
  testing::TmpDir tmp(*world, "loco-mpi-train");
  REQUIRE(tmp.ok());

  // AdamW with clipping and warmup + cosine: the full inner pipeline. And plain SGD, where a
  // gradient summed instead of averaged over the ranks would change every update (AdamW is
  // nearly blind to a uniform gradient scale).
  for (const bool sgd : {false, true}) {
    {
      INFO((sgd ? "inner sgd" : "inner adamw"));
      json j = tiny_json();
      if (sgd) make_plain_sgd(j, 0.3);
      // Rank 0 validates on 2K batches of B: the same 2KB windows as 2 batches of KB below.
      j["training"]["eval_batches"] = 2 * K;
      const Config ddp_cfg = to_config(j);
      const TrainResult ddp = train(ddp_cfg, tmp.run_dir(sgd ? "ddp-sgd" : "ddp"), *world);

      json j1 = j;
      j1["training"]["micro_batch"] = K * kMicroBatch;
      j1["training"]["eval_batches"] = 2;
      const Config solo_cfg = to_config(j1);
      // Rank 0 alone (a 1-rank communicator) is the single-process reference.
      auto solo = world->split(r == 0 ? 0 : -1, 0);
      CHECK((solo != nullptr) == (r == 0));
      if (solo) CHECK(solo->size() == 1);
      const RefResult ref = run_on_sub_and_share(*world, solo.get(), solo_cfg,
                                                 tmp.run_dir(sgd ? "solo-sgd" : "solo"));

      INFO("K = " << K << "\n DDP losses: " << show(ddp.step_losses)
                  << "\n ref losses: " << show(ref.losses));
      CHECK(ddp.steps_done == 6);
      CHECK(ref.steps_done == 6);
      CHECK(ddp.step_losses.size() == 6);
      CHECK(max_rel_diff(ddp.step_losses, ref.losses) <= 1e-5);
      // Final parameters: rank 0 evaluates them on the same validation windows in both runs.
      if (r == 0) CHECK(ddp.final_val_loss == Catch::Approx(ref.val_loss).epsilon(1e-5));
      // Training moved (the comparison above is not between two untouched models).
      CHECK(std::abs(ddp.step_losses.front() - ddp.step_losses.back()) > 1e-3);
      CHECK(ddp.tokens == 6LL * K * kMicroBatch * kSeqLen);

      const auto hashes = gather_hashes(*world, ddp.params_hash);
      CHECK(mismatching_ranks(hashes).empty());
    }
  }
}

// ------------------------------------------------------------------ DiLoCo

TEST_CASE("DiLoCo with H = 1, outer lr 1, momentum 0 and inner SGD equals DDP",
          "[train][diloco][mpi]") {
  quiet();
  auto world = make_mpi_world(kTimeout);
  const int K = world->size();
  testing::TmpDir tmp(*world, "loco-mpi-train");
  REQUIRE(tmp.ok());

  json j = tiny_json();
  make_plain_sgd(j, 0.3);
  const TrainResult ddp = train(to_config(j), tmp.run_dir("ddp"), *world);

  for (const bool nesterov : {true, false}) {
    {
      INFO("outer nesterov " << nesterov);
      json jd = j;
      jd["distributed"] = {{"method", "diloco"},
                           {"replica_size", 1},
                           {"timeout_s", kTimeout},
                           {"outer",
                            {{"interval", 1},
                             {"lr", 1.0},
                             {"momentum", 0.0},
                             {"nesterov", nesterov},
                             {"wire_dtype", "f32"}}}};
      const TrainResult dl =
          train(to_config(jd), tmp.run_dir(nesterov ? "diloco-n" : "diloco"), *world);

      // Every step is a sync point (H = 1): the mean over the replicas is known at each.
      INFO("K = " << K << "\n DDP losses:    " << show(ddp.step_losses)
                  << "\n DiLoCo losses: " << show(dl.sync_mean_losses));
      CHECK(dl.steps_done == 6);
      CHECK(dl.sync_mean_losses.size() == 6);
      CHECK(max_rel_diff(dl.sync_mean_losses, ddp.step_losses) <= 1e-5);
      if (world->rank() == 0)
        CHECK(dl.final_val_loss == Catch::Approx(ddp.final_val_loss).epsilon(1e-5));
      CHECK(std::abs(dl.step_losses.front() - dl.step_losses.back()) > 1e-3);
      CHECK(dl.summary["comm"]["outer_syncs"].get<int>() == 6);

      const auto hashes = gather_hashes(*world, dl.params_hash);
      CHECK(mismatching_ranks(hashes).empty());
    }
  }
}

TEST_CASE("DiLoCo with local steps diverges from DDP but keeps every rank's θ identical",
          "[train][diloco][mpi]") {
  quiet();
  auto world = make_mpi_world(kTimeout);
  const int K = world->size();
  testing::TmpDir tmp(*world, "loco-mpi-train");
  REQUIRE(tmp.ok());

  json j = tiny_json();
  j["training"]["steps"] = 6;
  const TrainResult ddp = train(to_config(j), tmp.run_dir("ddp"), *world);
  j["distributed"] = {{"method", "diloco"},
                      {"replica_size", 1},
                      {"timeout_s", kTimeout},
                      {"outer",
                       {{"interval", 3},
                        {"lr", 0.7},
                        {"momentum", 0.9},
                        {"nesterov", true},
                        {"wire_dtype", "f32"}}}};
  const TrainResult dl = train(to_config(j), tmp.run_dir("diloco"), *world);

  // The replicas train apart for H = 3 steps; the outer Nesterov step (η 0.7, μ 0.9) then
  // moves θ differently from DDP's averaged gradients.
  INFO("K = " << K << "\n DDP losses:    " << show(ddp.step_losses)
              << "\n DiLoCo losses: " << show(dl.step_losses));
  CHECK(dl.steps_done == 6);
  CHECK(dl.step_losses.size() == 6);
  // Step 1 sees the same data and the same initial θ in both runs (DiLoCo's step losses are
  // each replica's own: their mean is DDP's).
  const double first_mean = world->all_reduce_host(dl.step_losses[0], ReduceOp::Mean);
  CHECK(first_mean == Catch::Approx(ddp.step_losses[0]).epsilon(1e-6));
  CHECK(max_rel_diff(dl.sync_mean_losses, {ddp.step_losses[2], ddp.step_losses[5]}) > 1e-5);
  // θ bitwise identical on every rank after the final sync (the trainer also checks this
  // after every sync and would have thrown).
  const auto hashes = gather_hashes(*world, dl.params_hash);
  CHECK(mismatching_ranks(hashes).empty());
  CHECK(dl.params_hash != ddp.params_hash);
}

// ------------------------------------------------------------------ the outer step itself

TEST_CASE("outer_sgd_step equals the hand-computed Nesterov and heavy-ball updates",
          "[outer][mpi]") {
  CpuBackend be;
  const size_t n = 5;
  const std::vector<float> theta0{1.0f, -2.0f, 0.5f, 3.0f, 0.0f};
  const std::vector<float> v0{0.25f, -0.5f, 1.0f, 0.0f, 2.0f};
  const std::vector<float> delta{0.5f, 0.125f, -1.0f, 2.0f, -0.75f};
  const double lr = 0.7, mu = 0.9;

  for (const bool nesterov : {true, false}) {
    DYNAMIC_SECTION("nesterov " << nesterov) {
      Buf g = be.alloc(n, DType::F32), v = be.alloc(n, DType::F32), d = be.alloc(n, DType::F32);
      be.upload(g, theta0.data());
      be.upload(v, v0.data());
      be.upload(d, delta.data());
      outer_sgd_step(be, g, v, d, lr, mu, nesterov);
      for (size_t i = 0; i < n; ++i) {
        const double v1 = mu * v0[i] + delta[i];
        const double t1 = nesterov ? theta0[i] - lr * (delta[i] + mu * v1) : theta0[i] - lr * v1;
        INFO("i = " << i);
        CHECK(v.f32()[i] == Catch::Approx(v1).margin(1e-6));
        CHECK(g.f32()[i] == Catch::Approx(t1).margin(1e-6));
        CHECK(d.f32()[i] == delta[i]);  // Δ is an input only
      }
      // Δ > 0 ("old minus new" points like a gradient) must move θ down: descent, not ascent.
      CHECK(g.f32()[3] < theta0[3]);
      // A second step accumulates momentum: v2 = μ·v1 + Δ.
      outer_sgd_step(be, g, v, d, lr, mu, nesterov);
      for (size_t i = 0; i < n; ++i) {
        const double v1 = mu * v0[i] + delta[i];
        const double t1 = nesterov ? theta0[i] - lr * (delta[i] + mu * v1) : theta0[i] - lr * v1;
        const double v2 = mu * v1 + delta[i];
        const double t2 = nesterov ? t1 - lr * (delta[i] + mu * v2) : t1 - lr * v2;
        INFO("i = " << i);
        CHECK(v.f32()[i] == Catch::Approx(v2).margin(1e-6));
        CHECK(g.f32()[i] == Catch::Approx(t2).margin(1e-6));
      }
      be.release(g);
      be.release(v);
      be.release(d);
    }
  }
}

TEST_CASE("OuterSync averages rank-dependent pseudo-gradients and applies the outer step",
          "[outer][mpi]") {
  auto world = make_mpi_world(kTimeout);
  const int K = world->size(), r = world->rank();
  CpuBackend be;
  const size_t n = 6;
  const std::vector<float> theta0{1.0f, -1.0f, 2.0f, 0.5f, -4.0f, 8.0f};
  const std::vector<float> d{0.5f, -0.25f, 1.0f, 0.125f, -2.0f, 0.0f};  // per-unit direction

  for (const std::string wire : {"f32", "bf16"}) {
    DYNAMIC_SECTION("wire " << wire) {
      world->reset_stats();
      OuterConfig oc;
      oc.interval = 4;
      oc.lr = 0.7;
      oc.momentum = 0.9;
      oc.nesterov = true;
      oc.wire_dtype = wire;
      Buf params = be.alloc(n, DType::F32);
      be.upload(params, theta0.data());
      OuterSync sync(oc, be, *world, params);
      CHECK(sync.due(4));
      CHECK(sync.due(8));
      CHECK_FALSE(sync.due(3));

      // Outer step 1: rank r moved by -(r+1)·d, so Δ_r = (r+1)·d and mean Δ = (K+1)/2·d.
      // Every value is a small dyadic number: exact in bf16 too.
      for (size_t i = 0; i < n; ++i) params.f32()[i] = theta0[i] - float(r + 1) * d[i];
      const double norm1 = sync.sync(params);
      const double m1 = (K + 1) / 2.0;
      double dnorm = 0.0;
      for (float x : d) dnorm += double(x) * x;
      dnorm = std::sqrt(dnorm);
      CHECK(norm1 == Catch::Approx(m1 * dnorm).epsilon(1e-6));
      std::vector<double> th(n), v(n);
      for (size_t i = 0; i < n; ++i) {
        const double delta = m1 * d[i];
        v[i] = delta;  // v0 = 0
        th[i] = theta0[i] - oc.lr * (delta + oc.momentum * v[i]);
        INFO("step 1, i = " << i);
        CHECK(params.f32()[i] == Catch::Approx(th[i]).margin(1e-5));
        CHECK(sync.global_params().f32()[i] == params.f32()[i]);
        CHECK(sync.momentum().f32()[i] == Catch::Approx(v[i]).margin(1e-6));
      }
      CHECK(sync.syncs_done() == 1);

      // Outer step 2 from the new θ: rank r moves by +r·d (Δ_r = -r·d, mean -(K-1)/2·d).
      const std::vector<float> theta1(params.f32(), params.f32() + n);
      for (size_t i = 0; i < n; ++i) params.f32()[i] = theta1[i] + float(r) * d[i];
      sync.sync(params);
      const double m2 = -(K - 1) / 2.0;
      for (size_t i = 0; i < n; ++i) {
        // Δ_r = θ1 - (θ1 + r·d) is -r·d up to one fp32 rounding, which bf16 rounds away.
        const double delta = m2 * d[i];
        v[i] = oc.momentum * v[i] + delta;
        th[i] = th[i] - oc.lr * (delta + oc.momentum * v[i]);
        INFO("step 2, i = " << i);
        const double tol = 1e-5;
        CHECK(params.f32()[i] == Catch::Approx(th[i]).margin(tol));
        CHECK(sync.momentum().f32()[i] == Catch::Approx(v[i]).margin(tol));
      }
      CHECK(sync.syncs_done() == 2);

      // Bitwise-identical θ on every rank after each sync.
      const auto hashes = world->all_gather_host(std::hash<std::string>{}(
          std::string(reinterpret_cast<const char*>(params.data), params.bytes())));
      CHECK(mismatching_ranks(hashes).empty());

      // Two dense all-reduces of n elements of the wire dtype.
      const uint64_t S = n * (wire == "bf16" ? 2 : 4);
      const CommCounters ar = world->stats()[CommKind::AllReduce];
      CHECK(ar.calls == 2);
      CHECK(ar.payload_bytes == 2 * S);
      CHECK(ar.sent_bytes == 2 * ring_ar(S, K));
      CHECK(ar.recv_bytes == 2 * ring_ar(S, K));
      be.release(params);
    }
  }
}

// ------------------------------------------------------------------ accounting

TEST_CASE("communication figures equal the ring formulas", "[train][comm][mpi]") {
  quiet();
  auto world = make_mpi_world(kTimeout);
  const int K = world->size();
  testing::TmpDir tmp(*world, "loco-mpi-train");
  REQUIRE(tmp.ok());
  const int S = 5, H = 2;  // syncs after steps 2, 4 and 5 (the last step always syncs)
  const uint64_t syncs = (S + H - 1) / H;

  json j = tiny_json();
  j["training"]["steps"] = S;

  SECTION("DDP: one all-reduce of the fp32 gradients per step") {
    const TrainResult res = train(to_config(j), tmp.run_dir("ddp"), *world);
    const json& c = res.summary["comm"];
    const uint64_t N = res.summary["parameters"].get<uint64_t>();
    INFO(c.dump(1));
    CHECK(N > 1000);
    CHECK(c["method"] == "ddp");
    CHECK(c["workers"].get<int>() == K);
    CHECK(c["outer_syncs"].get<int>() == 0);
    CHECK(c["sent_bytes"].get<uint64_t>() == S * ring_ar(4 * N, K));
    CHECK(c["sent_bytes"].get<uint64_t>() == S * ring_allreduce_bytes(4 * N, K));
    CHECK(c["recv_bytes"].get<uint64_t>() == S * ring_ar(4 * N, K));
    CHECK(c["by_kind"]["all_reduce"]["calls"].get<uint64_t>() == uint64_t(S));
    CHECK(c["ddp_fp32_bytes"].get<uint64_t>() == ddp_equivalent_bytes(N, 4, K, S));
    CHECK(c["ddp_fp32_bytes"].get<uint64_t>() == S * ring_ar(4 * N, K));
    CHECK(c["ddp_bf16_bytes"].get<uint64_t>() == ddp_equivalent_bytes(N, 2, K, S));
    CHECK(c["ratio_vs_ddp_fp32"].get<double>() == Catch::Approx(1.0));
    CHECK(c["sent_bytes_max_over_ranks"].get<uint64_t>() == c["sent_bytes"].get<uint64_t>());
  }

  for (const std::string wire : {"f32", "bf16"}) {
    DYNAMIC_SECTION("DiLoCo H = " << H << ", wire " << wire) {
      j["distributed"] = {{"method", "diloco"},
                          {"replica_size", 1},
                          {"timeout_s", kTimeout},
                          {"outer",
                           {{"interval", H},
                            {"lr", 0.7},
                            {"momentum", 0.9},
                            {"nesterov", true},
                            {"wire_dtype", wire}}}};
      const std::string dir = tmp.run_dir("diloco-" + wire);
      const TrainResult res = train(to_config(j), dir, *world);
      const json& c = res.summary["comm"];
      const uint64_t N = res.summary["parameters"].get<uint64_t>();
      const uint64_t b = wire == "bf16" ? 2 : 4;
      INFO(c.dump(1));
      CHECK(c["method"] == "diloco");
      CHECK(c["outer_syncs"].get<uint64_t>() == syncs);
      CHECK(c["by_kind"]["all_reduce"]["calls"].get<uint64_t>() == syncs);
      CHECK(c["sent_bytes"].get<uint64_t>() == syncs * ring_ar(b * N, K));
      CHECK(c["sent_bytes"].get<uint64_t>() == syncs * ring_allreduce_bytes(b * N, K));
      CHECK(c["recv_bytes"].get<uint64_t>() == syncs * ring_ar(b * N, K));
      if (wire == "bf16")  // half of the fp32 figure (N even: no rounding in between)
        CHECK(2 * c["sent_bytes"].get<uint64_t>() == syncs * ring_ar(4 * N, K));
      CHECK(c["ddp_fp32_bytes"].get<uint64_t>() == ddp_equivalent_bytes(N, 4, K, S));
      CHECK(c["ddp_fp32_bytes"].get<uint64_t>() == S * ring_ar(4 * N, K));
      CHECK(c["ratio_vs_ddp_fp32"].get<double>() ==
            Catch::Approx(double(S) * 4 / (double(syncs) * b)));

      // One metrics record per step; the syncing ones carry that sync's traffic.
      if (world->rank() == 0) {
        std::vector<json> steps;
        for (const json& rec : testing::read_jsonl(dir + "/metrics.jsonl"))
          if (rec.contains("loss")) steps.push_back(rec);
        CHECK(steps.size() == size_t(S));
        std::vector<int> synced_at;
        for (const json& rec : steps)
          if (rec.contains("outer")) {
            synced_at.push_back(rec["step"].get<int>());
            CHECK(rec["outer"]["comm"]["all_reduce"]["sent_bytes"].get<uint64_t>() ==
                  ring_ar(b * N, K));
            CHECK(rec["outer"]["pseudo_grad_norm"].get<double>() > 0.0);
          }
        CHECK(synced_at == std::vector<int>{2, 4, 5});
        const json summary = read_json_file(dir + "/summary.json");
        CHECK(summary["comm"]["sent_bytes"] == c["sent_bytes"]);
      }
      const auto hashes = gather_hashes(*world, res.params_hash);
      CHECK(mismatching_ranks(hashes).empty());
    }
  }
}

// ------------------------------------------------------------------ replicas

TEST_CASE("2 replicas of 2 ranks behave as 2-worker DiLoCo with twice the batch",
          "[train][replicas][mpi]") {
  quiet();
  auto world = make_mpi_world(kTimeout);
  const int K = world->size(), r = world->rank();
  if (K != 4) {
    WARN("replica test needs exactly 4 ranks (this run has " << K << "): skipped");
    return;
  }
  testing::TmpDir tmp(*world, "loco-mpi-train");
  REQUIRE(tmp.ok());
  const int S = 6, H = 2;

  json j = tiny_json();  // AdamW, clipping, warmup + cosine
  j["training"]["steps"] = S;
  j["distributed"] = {{"method", "diloco"},
                      {"replica_size", 2},
                      {"timeout_s", kTimeout},
                      {"outer",
                       {{"interval", H},
                        {"lr", 0.7},
                        {"momentum", 0.9},
                        {"nesterov", true},
                        {"wire_dtype", "f32"}}}};
  const TrainResult rep = train(to_config(j), tmp.run_dir("replicas"), *world);

  // Reference: ranks {0, 1} as 2 single-rank replicas reading 2B sequences per step.
  json j2 = j;
  j2["distributed"]["replica_size"] = 1;
  j2["training"]["micro_batch"] = 2 * kMicroBatch;
  j2["training"]["eval_batches"] = 2;
  auto pair = world->split(r < 2 ? 0 : -1, r);
  CHECK((pair != nullptr) == (r < 2));
  if (pair) CHECK(pair->size() == 2);
  const RefResult ref =
      run_on_sub_and_share(*world, pair.get(), to_config(j2), tmp.run_dir("pair"));

  INFO("replicas losses: " << show(rep.step_losses) << "\n 2-rank losses:  " << show(ref.losses)
                           << "\n sync means: " << show(rep.sync_mean_losses) << " vs "
                           << show(ref.sync_means));
  CHECK(rep.steps_done == S);
  CHECK(ref.steps_done == S);
  // Step losses are each replica's own: replica 0 (ranks 0, 1) against the reference's rank 0.
  if (r < 2) CHECK(max_rel_diff(rep.step_losses, ref.losses) <= 1e-5);
  CHECK(rep.sync_mean_losses.size() == size_t((S + H - 1) / H));
  CHECK(max_rel_diff(rep.sync_mean_losses, ref.sync_means) <= 1e-5);
  if (r == 0) CHECK(rep.final_val_loss == Catch::Approx(ref.val_loss).epsilon(1e-5));
  CHECK(std::abs(rep.step_losses.front() - rep.step_losses.back()) > 1e-3);

  // All 4 ranks hold the same θ after the final sync.
  const auto hashes = gather_hashes(*world, rep.params_hash);
  CHECK(mismatching_ranks(hashes).empty());

  // Traffic per rank: a gradient all-reduce over the 2-rank replica every step, plus a
  // pseudo-gradient all-reduce over the 2 replicas at every sync.
  const json& c = rep.summary["comm"];
  const uint64_t N = rep.summary["parameters"].get<uint64_t>();
  const uint64_t syncs = (S + H - 1) / H;
  INFO(c.dump(1));
  CHECK(c["replicas"].get<int>() == 2);
  CHECK(c["workers"].get<int>() == 4);
  CHECK(c["outer_syncs"].get<uint64_t>() == syncs);
  CHECK(c["by_kind"]["all_reduce"]["calls"].get<uint64_t>() == S + syncs);
  CHECK(c["sent_bytes"].get<uint64_t>() == (S + syncs) * ring_ar(4 * N, 2));
}

TEST_CASE("a replica_size that does not divide the world is refused on every rank",
          "[train][replicas][mpi]") {
  quiet();
  auto world = make_mpi_world(kTimeout);
  const int K = world->size();
  testing::TmpDir tmp(*world, "loco-mpi-train");
  REQUIRE(tmp.ok());
  json j = tiny_json();
  j["distributed"] = {{"method", "diloco"}, {"replica_size", K + 1}, {"timeout_s", kTimeout}};
  const Config c = to_config(j);
  CHECK_THROWS_WITH(train(c, tmp.run_dir("bad"), *world),
                    LOCO_CONTAINS("replica_size = " + std::to_string(K + 1)));
  // Every rank threw before any collective: the world is still in step.
  world->barrier();
}

// ------------------------------------------------------------------ replicas share nothing

TEST_CASE("between outer syncs the replicas share nothing: at most 3 cross-replica calls a sync",
          "[train][diloco][comm][mpi]") {
  quiet();
  auto world = make_mpi_world(kTimeout);
  const int K = world->size();
  testing::TmpDir tmp(*world, "loco-mpi-train");
  REQUIRE(tmp.ok());

  struct Case {
    const char* name;
    int replica_size;
    bool compressed;
    uint64_t calls_per_sync;  // blocking, no checkpoints: the collective + the sync point
  };
  std::vector<Case> cases{{"diloco", 1, false, 2}, {"sparseloco", 1, true, 3}};
  if (K % 2 == 0 && K >= 4) cases.push_back({"replicas-2x2", 2, false, 2});
  for (const Case& c : cases) {
    INFO(c.name << ", K = " << K);
    json j = tiny_json();
    j["training"]["steps"] = 8;
    j["distributed"] = {{"method", "diloco"},
                        {"replica_size", c.replica_size},
                        {"timeout_s", kTimeout},
                        {"outer", {{"interval", 4}, {"lr", 0.7}, {"momentum", 0.9}}}};
    if (c.compressed)
      j["distributed"]["compression"] = {{"error_feedback", true},
                                         {"selector", "chunked_topk"},
                                         {"topk", 16},
                                         {"chunk", 16},
                                         {"quantizer", "2bit"}};
    const TrainResult r = train(to_config(j), tmp.run_dir(c.name), *world);
    const json& xr = r.summary["comm"]["cross_replica"];
    const uint64_t syncs = r.summary["comm"]["outer_syncs"].get<uint64_t>();
    CHECK(syncs == 2);
    const uint64_t calls = xr["calls"].get<uint64_t>();
    // The bound of the issue, and the exact count: no per-step traffic between replicas.
    CHECK(calls <= 3 * syncs);
    CHECK(calls == c.calls_per_sync * syncs);
    CHECK(xr["bytes"].get<uint64_t>() > 0);
    // The host collectives of the loop: the replica's loss and stop flag every step (when it
    // has more than one rank), the sync point at each sync, and SparseLoCo's payload sizes.
    const json& control = r.summary["comm"]["control"];
    const uint64_t steps = r.summary["steps"].get<uint64_t>();
    CHECK(control["calls"].get<uint64_t>() ==
          (c.replica_size > 1 ? steps : 0) + syncs * (c.compressed ? 2 : 1));
    CHECK(control["seconds"].get<double>() >= 0.0);
    // The mean over the replicas is known at every sync, and is the final loss.
    REQUIRE(r.sync_mean_losses.size() == syncs);
    CHECK(r.final_train_loss == r.sync_mean_losses.back());
    const double mine = r.step_losses.back();
    CHECK(world->all_reduce_host(mine, ReduceOp::Mean) ==
          Catch::Approx(r.sync_mean_losses.back()).epsilon(1e-12));
  }

  // One replica (DDP): nothing crosses replicas.
  const TrainResult ddp = train(to_config(tiny_json()), tmp.run_dir("ddp-x"), *world);
  CHECK(ddp.summary["comm"]["cross_replica"]["calls"].get<uint64_t>() == 0);
  // DDP's one host collective a step (mean loss, stop flag): the time a rank waits there for
  // a slower peer is reported with it.
  CHECK(ddp.summary["comm"]["control"]["calls"].get<uint64_t>() ==
        ddp.summary["steps"].get<uint64_t>());
  CHECK(ddp.summary["comm"]["control"]["bytes"].get<uint64_t>() > 0);
}
