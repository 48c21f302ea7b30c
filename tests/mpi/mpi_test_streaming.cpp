// Overlapped ("streaming") outer syncs (Streaming DiLoCo, docs/algorithms.md §7) under mpirun -np 2
// and -np 4:
//  - the started collectives (start_all_reduce, start_all_gather): the blocking call's
//    values and accounting, progress through test(), a timeout counted from wait();
//  - OuterSync::start/poll/finish against a hand simulation of every rank (delayed outer step,
//    then θ_local ← α·θ_local + (1 − α)·θ_global), and bitwise against the blocking sync();
//  - sync() (τ = 0) bitwise equal to the original blocking DiLoCo step, written out here;
//  - the trainer: syncs complete τ steps after they start, θ_global identical on every rank,
//    the same bytes as blocking DiLoCo, the hidden fraction in the metrics and the summary.
//
// Rule for every test case: all ranks make the same world collectives in the same order
// whatever the assertions say (CHECK, not REQUIRE, before a collective).
#include <mpi.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "loco/backend/cpu_backend.hpp"
#include "loco/config/config.hpp"
#include "loco/core/hash.hpp"
#include "loco/core/rng.hpp"
#include "loco/dist/comm_stats.hpp"
#include "loco/dist/communicator.hpp"
#include "loco/dist/outer_sync.hpp"
#include "loco/model/param_layout.hpp"
#include "loco/ops/bf16.hpp"
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

using Clock = std::chrono::steady_clock;
constexpr double kTimeout = 120.0;
constexpr int kSeqLen = 32;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The figures of one kind that must not depend on blocking vs started (not the seconds).
void check_same_bytes(const CommCounters& a, const CommCounters& b) {
  CHECK(a.calls == b.calls);
  CHECK(a.payload_bytes == b.payload_bytes);
  CHECK(a.sent_bytes == b.sent_bytes);
  CHECK(a.recv_bytes == b.recv_bytes);
}

// Calls test() until it reports completion; false after `seconds`.
bool test_until_done(CommRequest& req, double seconds) {
  const auto t0 = Clock::now();
  while (!req.test()) {
    if (seconds_since(t0) > seconds) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return true;
}

std::vector<float> normal_vector(size_t n, uint64_t seed, double scale) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = float(rng.normal() * scale);
  return v;
}

uint64_t hash_buf(Buf b) { return hash_bytes(b.data, b.bytes()); }

// A small layout for the compressed path (2-D tensors tile, 1-D tensors chunk).
ParamLayout small_layout() {
  ParamLayout l;
  auto add = [&](const char* name, std::vector<int64_t> shape, ParamKind kind) {
    size_t n = 1;
    for (auto d : shape) n *= size_t(d);
    l.views.push_back(ParamView{name, shape, l.total, n, kind, -1});
    l.total += n;
  };
  add("embed", {40, 32}, ParamKind::Embedding);
  add("norm", {32}, ParamKind::Norm);
  add("w", {64, 48}, ParamKind::Matrix);
  return l;
}

// ---------------------------------------------------------------- trainer helpers

json tiny_json() {
  return tiny_diloco_json({"mpi-streaming", 7, 2, kSeqLen, 2, kTimeout},
                          {{"interval", 3}, {"lr", 0.7}, {"momentum", 0.9}, {"nesterov", true}});
}

}  // namespace

// ------------------------------------------------------------------ started collectives

TEST_CASE("started all_reduce: the blocking call's values and bytes, accounted at completion",
          "[comm][overlap][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  const int K = comm->size(), r = comm->rank();
  const size_t n = 50000;  // big enough for a multi-round algorithm
  for (const ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min}) {
    for (const DType dt : {DType::F32, DType::BF16}) {
      DYNAMIC_SECTION(reduce_op_name(op) << " " << dtype_name(dt)) {
        // Rank-dependent values (exact in bf16: small multiples of 1/8).
        std::vector<float> x(n);
        for (size_t i = 0; i < n; ++i) x[i] = float((int(i % 13) - 6) * (r + 1)) * 0.125f;
        std::vector<uint16_t> xb(n);
        for (size_t i = 0; i < n; ++i) xb[i] = ops::float_to_bf16_bits(x[i]);
        auto a = x, b = x;
        auto ab = xb, bb = xb;
        auto buf = [&](std::vector<float>& f, std::vector<uint16_t>& h) {
          return dt == DType::F32 ? Buf{f.data(), DType::F32, n} : Buf{h.data(), DType::BF16, n};
        };

        comm->reset_stats();
        comm->all_reduce(buf(a, ab), op);
        const CommCounters blocking = comm->stats()[CommKind::AllReduce];

        comm->reset_stats();
        auto req = comm->start_all_reduce(buf(b, bb), op);
        // Nothing is accounted before completion.
        CHECK(comm->stats()[CommKind::AllReduce].calls == 0);
        CHECK(test_until_done(*req, 60.0));
        CHECK(req->done());
        CHECK(req->test());  // stays true
        req->wait();         // a no-op once done
        const CommCounters started = comm->stats()[CommKind::AllReduce];
        check_same_bytes(started, blocking);
        CHECK(started.calls == 1);
        CHECK(started.sent_bytes == ring_ar(n * dtype_size(dt), K));

        // Bitwise the blocking call's result (the mean divided after completion).
        if (dt == DType::F32)
          CHECK(std::memcmp(a.data(), b.data(), n * sizeof(float)) == 0);
        else
          CHECK(std::memcmp(ab.data(), bb.data(), n * sizeof(uint16_t)) == 0);
        // And the right value: element 1 is (1-6)/8·(r+1) on rank r.
        const double s1 = -5 * 0.125 * K * (K + 1) / 2.0;
        const double expect = op == ReduceOp::Sum    ? s1
                              : op == ReduceOp::Mean ? s1 / K
                              : op == ReduceOp::Max  ? -5 * 0.125
                                                     : -5 * 0.125 * K;
        const float got = dt == DType::F32 ? b[1] : ops::bf16_bits_to_float(bb[1]);
        CHECK(got == Catch::Approx(expect).epsilon(1e-2));
      }
    }
  }
}

TEST_CASE("started all_gather: rank order, the blocking call's bytes", "[comm][overlap][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  const int K = comm->size(), r = comm->rank();
  const size_t piece = 1003;  // odd: packed payloads
  std::vector<uint8_t> send(piece);
  for (size_t i = 0; i < piece; ++i) send[i] = uint8_t((i * 7 + size_t(r) * 31) & 0xff);
  std::vector<uint8_t> a(piece * size_t(K)), b(a.size());

  comm->reset_stats();
  comm->all_gather(host_bytes(send.data(), piece), host_bytes(a.data(), a.size()));
  const CommCounters blocking = comm->stats()[CommKind::AllGather];
  comm->reset_stats();
  auto req = comm->start_all_gather(host_bytes(send.data(), piece), host_bytes(b.data(), b.size()));
  CHECK(comm->stats()[CommKind::AllGather].calls == 0);
  CHECK(test_until_done(*req, 60.0));
  check_same_bytes(comm->stats()[CommKind::AllGather], blocking);
  CHECK(comm->stats()[CommKind::AllGather].sent_bytes == uint64_t(K - 1) * piece);
  CHECK(a == b);
  for (int q = 0; q < K; ++q)
    for (size_t i = 0; i < piece; i += 97)
      CHECK(b[size_t(q) * piece + i] == uint8_t((i * 7 + size_t(q) * 31) & 0xff));
}

TEST_CASE("started collectives overlap other work; wait()'s timeout counts from the wait() call",
          "[comm][overlap][mpi]") {
  // Three "inner steps" of 1 s each; the last rank starts its part of the collective only
  // after two of them. The others wait() 3 s after their start, longer than the 2 s timeout:
  // the deadline must count from wait(), not from the start.
  constexpr double kShort = 2.0;
  auto comm = make_mpi_world(kShort);
  auto other = make_mpi_world(kTimeout);  // blocking traffic on another communicator meanwhile
  const int K = comm->size(), r = comm->rank();
  const bool late = r == K - 1;
  std::vector<float> v(1000, float(r + 1));
  const Buf buf{v.data(), DType::F32, v.size()};
  std::unique_ptr<CommRequest> req;
  if (!late) req = comm->start_all_reduce(buf, ReduceOp::Sum);
  for (int step = 0; step < 3; ++step) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    std::vector<double> loss{double(r)};
    other->all_reduce_host(loss, ReduceOp::Sum);  // keeps the ranks in step
    CHECK(loss[0] == double(K * (K - 1) / 2));
    if (late && step == 1) req = comm->start_all_reduce(buf, ReduceOp::Sum);
    if (req && K > 1 && step == 0) CHECK_FALSE(req->test());  // the late rank is missing
  }
  REQUIRE(req);
  CHECK_NOTHROW(req->wait());
  CHECK(req->done());
  // Accounted once, with the time spent inside the calls, not the 3 s of "computation".
  CHECK(comm->stats()[CommKind::AllReduce].calls == 1);
  CHECK(comm->stats()[CommKind::AllReduce].seconds < 1.5);
  CHECK(v[0] == float(K * (K + 1) / 2));
  CHECK(v[999] == float(K * (K + 1) / 2));
}

TEST_CASE("a started all_reduce times out in wait() when a peer never joins",
          "[comm][overlap][mpi]") {
  constexpr double kShort = 1.0;
  auto comm = make_mpi_world(kShort);
  const int r = comm->rank(), K = comm->size();
  if (K == 1) return;
  const int skipper = K - 1;
  // Static: the abandoned collective may still write into it after this test returns.
  static std::vector<float> v;
  v.assign(1000, float(r + 1));
  if (r != skipper) {
    auto req = comm->start_all_reduce(Buf{v.data(), DType::F32, v.size()}, ReduceOp::Sum);
    CHECK_FALSE(req->test());
    const auto t0 = Clock::now();
    std::string message;
    try {
      req->wait();
      FAIL("wait() returned although rank " << skipper << " never started the all_reduce");
    } catch (const CommTimeoutError& e) {
      message = e.what();
    }
    const double waited = seconds_since(t0);
    CHECK(waited >= kShort);
    CHECK(waited < 2 * kShort);
    CHECK_THAT(message, LOCO_CONTAINS("collective all_reduce (4000 bytes) did not complete "
                                      "within 1 s on rank " +
                                      std::to_string(r) + " of " + std::to_string(K) +
                                      " [mpi:world]: a peer is dead or stuck"));
    CHECK_FALSE(req->done());
    CHECK_THROWS_AS(req->test(), Error);
    // The communicator refuses further work instead of mismatching collectives.
    CHECK_THROWS_WITH(comm->start_all_reduce(Buf{v.data(), DType::F32, 1}, ReduceOp::Sum),
                      LOCO_CONTAINS("unusable"));
  }
  // The skipper's late call completes what the others abandoned (MPI left clean).
  MPI_Barrier(MPI_COMM_WORLD);
  if (r == skipper) {
    comm->all_reduce(Buf{v.data(), DType::F32, v.size()}, ReduceOp::Sum);
    CHECK(v[0] == float(K * (K + 1) / 2));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// ------------------------------------------------------------------ OuterSync

TEST_CASE("τ = 0: OuterSync::sync is the original blocking DiLoCo step, bit for bit",
          "[outer][overlap][mpi]") {
  auto world = make_mpi_world(kTimeout);
  const int r = world->rank();
  CpuBackend be;
  const size_t n = 777;
  const std::vector<float> theta0 = normal_vector(n, 5, 1.0);
  for (const std::string wire : {"f32", "bf16"}) {
    DYNAMIC_SECTION("wire " << wire) {
      OuterConfig oc;
      oc.interval = 4;
      oc.wire_dtype = wire;
      Buf params = be.alloc(n, DType::F32);
      be.upload(params, theta0.data());
      OuterSync sync(oc, be, *world, params);
      // The original code, written out: Δ = θ_g − θ_l; all-reduce mean (bf16 on the wire when
      // asked); outer Nesterov step; θ_l ← θ_g.
      Buf g = be.alloc(n, DType::F32), m = be.alloc(n, DType::F32), d = be.alloc(n, DType::F32);
      Buf w = be.alloc(n, DType::BF16);
      be.upload(g, theta0.data());
      be.zero(m);
      for (int s = 0; s < 3; ++s) {
        const auto step = normal_vector(n, 100 * uint64_t(r) + uint64_t(s), 0.01);
        std::vector<float> local(n);
        for (size_t i = 0; i < n; ++i) local[i] = g.f32()[i] - step[i];
        be.upload(params, local.data());
        sync.sync(params);

        Buf ref = be.alloc(n, DType::F32);
        be.upload(ref, local.data());
        be.copy(d, g);
        be.axpby(d, -1.0f, ref, 1.0f);
        if (wire == "bf16") {
          be.copy(w, d);
          world->all_reduce(w, ReduceOp::Mean);
          be.copy(d, w);
        } else {
          world->all_reduce(d, ReduceOp::Mean);
        }
        outer_sgd_step(be, g, m, d, oc.lr, oc.momentum, oc.nesterov);
        be.copy(ref, g);
        INFO("sync " << s);
        CHECK(std::memcmp(params.data, ref.data, n * sizeof(float)) == 0);
        CHECK(std::memcmp(sync.global_params().data, g.data, n * sizeof(float)) == 0);
        CHECK(std::memcmp(sync.momentum().data, m.data, n * sizeof(float)) == 0);
        be.release(ref);
      }
      CHECK_FALSE(sync.in_flight());
      CHECK(sync.total_overlap().syncs == 0);
      CHECK(sync.overlap_json()["enabled"] == false);
      for (Buf b : {params, g, m, d, w}) be.release(b);
    }
  }
}

TEST_CASE("overlapped OuterSync equals a hand-simulated delayed outer step and merge",
          "[outer][overlap][mpi]") {
  auto world = make_mpi_world(kTimeout);
  const int K = world->size(), r = world->rank();
  CpuBackend be;
  const size_t n = 300;
  const int tau = 3;
  const double alpha = 0.3;  // not 0.5: a swapped α / (1 − α) would show
  const std::vector<float> theta0 = normal_vector(n, 9, 1.0);
  // Rank q's inner steps: before sync s (H steps, one move) and during its flight (τ moves).
  auto h_move = [](int q, int s, size_t n) { return normal_vector(n, 1000u * q + s, 0.02); };
  auto t_move = [](int q, int s, int k, size_t n) {
    return normal_vector(n, 50000u + 1000u * q + 10u * s + k, 0.005);
  };

  for (const std::string wire : {"f32", "bf16"}) {
    DYNAMIC_SECTION("wire " << wire) {
      OuterConfig oc;
      oc.interval = 10;
      oc.lr = 0.7;
      oc.momentum = 0.9;
      oc.nesterov = true;
      oc.wire_dtype = wire;
      oc.overlap_steps = tau;
      oc.merge_alpha = alpha;
      Buf params = be.alloc(n, DType::F32);
      be.upload(params, theta0.data());
      OuterSync sync(oc, be, *world, params);

      // Reference, in double, for every rank q: θ_local_q, θ_global, v.
      std::vector<std::vector<double>> local(size_t(K),
                                             std::vector<double>(theta0.begin(), theta0.end()));
      std::vector<double> glob(theta0.begin(), theta0.end()), v(n, 0.0);
      double worst = 0.0;
      for (int s = 0; s < 3; ++s) {
        // H inner steps, then the sync starts from θ_local(t).
        std::vector<double> mean(n, 0.0);
        for (int q = 0; q < K; ++q) {
          const auto mv = h_move(q, s, n);
          for (size_t i = 0; i < n; ++i) {
            local[size_t(q)][i] -= mv[i];
            mean[i] += (glob[i] - local[size_t(q)][i]) / K;
          }
        }
        std::vector<float> mine(n);
        for (size_t i = 0; i < n; ++i) mine[i] = float(local[size_t(r)][i]);
        be.upload(params, mine.data());
        sync.start(params);
        CHECK(sync.in_flight());
        // τ inner steps while the collective is in flight: θ_local moves on, the sync's
        // buffers do not.
        const std::vector<float> g_before(sync.global_params().f32(),
                                          sync.global_params().f32() + n);
        for (int k = 0; k < tau; ++k) {
          for (int q = 0; q < K; ++q) {
            const auto mv = t_move(q, s, k, n);
            for (size_t i = 0; i < n; ++i) local[size_t(q)][i] -= mv[i];
          }
          for (size_t i = 0; i < n; ++i) params.f32()[i] -= t_move(r, s, k, n)[i];
          sync.poll();
        }
        CHECK(std::memcmp(sync.global_params().data, g_before.data(), n * sizeof(float)) == 0);
        const std::vector<float> local_now(params.f32(), params.f32() + n);
        sync.finish(params);
        CHECK_FALSE(sync.in_flight());
        CHECK(sync.syncs_done() == s + 1);

        // The outer step from the Δ of the start step, then the merge.
        for (size_t i = 0; i < n; ++i) {
          v[i] = oc.momentum * v[i] + mean[i];
          glob[i] -= oc.lr * (mean[i] + oc.momentum * v[i]);
          for (int q = 0; q < K; ++q)
            local[size_t(q)][i] = alpha * local[size_t(q)][i] + (1 - alpha) * glob[i];
        }
        // bf16 on the wire rounds Δ to 8 bits of mantissa: compare at that resolution.
        const double tol = wire == "bf16" ? 2e-3 : 2e-5;
        for (size_t i = 0; i < n; ++i) {
          const double eg = std::abs(sync.global_params().f32()[i] - glob[i]);
          const double el = std::abs(params.f32()[i] - local[size_t(r)][i]);
          const double ev = std::abs(sync.momentum().f32()[i] - v[i]);
          worst = std::max({worst, eg, el, ev});
        }
        CHECK(worst < tol);
        // The merge itself, bit for bit: θ_l = α·θ_l(now) + (1 − α)·θ_g(new) in fp32.
        const float a = float(alpha);
        size_t merge_mismatch = 0;
        for (size_t i = 0; i < n; ++i)
          merge_mismatch +=
              params.f32()[i] != (1.0f - a) * sync.global_params().f32()[i] + a * local_now[i];
        CHECK(merge_mismatch == 0);
        // Keep the reference on this rank's actual values (no drift across syncs).
        for (size_t i = 0; i < n; ++i) local[size_t(r)][i] = params.f32()[i];

        // θ_global bitwise identical on every rank; θ_local differs (each merged its own).
        const auto g_hashes = world->all_gather_host(hash_buf(sync.global_params()));
        CHECK(mismatching_ranks(g_hashes).empty());
        const auto l_hashes = world->all_gather_host(hash_buf(params));
        if (K > 1) CHECK_FALSE(mismatching_ranks(l_hashes).empty());
        // Re-sync the reference's other ranks to their actual values.
        for (int q = 0; q < K; ++q) {
          std::vector<float> theirs(mine.size());
          std::memcpy(theirs.data(), params.data, n * sizeof(float));
          world->broadcast_host(theirs.data(), n * sizeof(float), q);
          for (size_t i = 0; i < n; ++i) local[size_t(q)][i] = theirs[i];
        }
      }
      INFO("largest deviation from the reference " << worst);
      CHECK(sync.total_overlap().syncs == 3);
      CHECK(sync.total_overlap().blocked_seconds <= sync.total_overlap().comm_seconds + 1e-9);
      const double hf = sync.total_overlap().hidden_fraction();
      CHECK(hf >= 0.0);
      CHECK(hf <= 1.0);
      CHECK(sync.overlap_json()["enabled"] == true);
      CHECK(sync.overlap_json()["overlap_steps"] == tau);
      be.release(params);
    }
  }
}

TEST_CASE("overlapped OuterSync = blocking sync + merge, bit for bit (dense and compressed)",
          "[outer][overlap][sparse][mpi]") {
  auto world = make_mpi_world(kTimeout);
  const int r = world->rank();
  CpuBackend be;
  const ParamLayout layout = small_layout();
  const size_t n = layout.total;
  const std::vector<float> theta0 = normal_vector(n, 21, 0.5);
  const double alpha = 0.5;

  for (const bool compressed : {false, true}) {
    DYNAMIC_SECTION((compressed ? "compressed (SparseLoCo)" : "dense")) {
      OuterConfig oc;
      oc.interval = 8;
      oc.lr = compressed ? 1.0 : 0.7;
      oc.momentum = compressed ? 0.0 : 0.9;
      oc.nesterov = !compressed;
      CompressionConfig cc;
      if (compressed) {
        cc.error_feedback = true;
        cc.beta = 0.95;
        cc.selector = "chunked_topk";
        cc.topk = 16;
        cc.chunk = 16;
        cc.quantizer = "2bit";
      }
      OuterConfig oc_overlap = oc;
      oc_overlap.overlap_steps = 2;
      oc_overlap.merge_alpha = alpha;
      Buf pa = be.alloc(n, DType::F32), pb = be.alloc(n, DType::F32);
      be.upload(pa, theta0.data());
      be.upload(pb, theta0.data());
      OuterSync blocking(oc, cc, layout, be, *world, pa);
      OuterSync overlapped(oc_overlap, cc, layout, be, *world, pb);
      CHECK(overlapped.compressed() == compressed);
      world->reset_stats();
      for (int s = 0; s < 3; ++s) {
        // Both start from the same θ_local (the overlapped run's), so that Δ is the same.
        const auto mv = normal_vector(n, 700u * uint64_t(r) + uint64_t(s), 0.01);
        for (size_t i = 0; i < n; ++i) pb.f32()[i] -= mv[i];
        be.copy(pa, pb);
        blocking.sync(pa);  // pa = θ_global
        overlapped.start(pb);
        for (int k = 0; k < 2; ++k) {
          const auto tv = normal_vector(n, 900u * uint64_t(r) + 10u * uint64_t(s) + k, 0.003);
          for (size_t i = 0; i < n; ++i) pb.f32()[i] -= tv[i];
          overlapped.poll();
        }
        const std::vector<float> local_now(pb.f32(), pb.f32() + n);
        overlapped.finish(pb);
        INFO("sync " << s);
        CHECK(std::memcmp(overlapped.global_params().data, blocking.global_params().data,
                          n * sizeof(float)) == 0);
        CHECK(std::memcmp(overlapped.momentum().data, blocking.momentum().data,
                          n * sizeof(float)) == 0);
        CHECK(overlapped.error_feedback() == blocking.error_feedback());
        size_t mismatch = 0;
        for (size_t i = 0; i < n; ++i)
          mismatch += pb.f32()[i] != 0.5f * pa.f32()[i] + 0.5f * local_now[i];
        CHECK(mismatch == 0);
        const auto hashes = world->all_gather_host(hash_buf(overlapped.global_params()));
        CHECK(mismatching_ranks(hashes).empty());
      }
      // The same figures for both: the payload statistics and the wire bytes.
      CHECK(overlapped.total_stats().payload_bytes == blocking.total_stats().payload_bytes);
      CHECK(overlapped.total_stats().piece_bytes == blocking.total_stats().piece_bytes);
      CHECK(overlapped.total_stats().kept == blocking.total_stats().kept);
      const CommKind kind = compressed ? CommKind::AllGather : CommKind::AllReduce;
      CHECK(world->stats()[kind].calls == 6);  // 3 blocking + 3 started
      be.release(pa);
      be.release(pb);
    }
  }
}

TEST_CASE("OuterSync refuses to start or sync while a sync is in flight", "[outer][overlap][mpi]") {
  auto world = make_mpi_world(kTimeout);
  CpuBackend be;
  OuterConfig oc;
  oc.interval = 4;
  oc.overlap_steps = 1;
  Buf params = be.alloc(16, DType::F32);
  be.zero(params);
  OuterSync sync(oc, be, *world, params);
  CHECK_THROWS_WITH(sync.finish(params), LOCO_CONTAINS("finish() without a started sync"));
  sync.start(params);
  CHECK_THROWS_WITH(sync.start(params), LOCO_CONTAINS("in flight"));
  CHECK_THROWS_WITH(sync.sync(params), LOCO_CONTAINS("in flight"));
  sync.finish(params);
  CHECK(sync.syncs_done() == 1);
  be.release(params);
}

// ------------------------------------------------------------------ the trainer

TEST_CASE(
    "training with overlapped syncs: late completion, identical θ_global, same bytes, "
    "hidden fraction reported",
    "[train][overlap][mpi]") {
  spdlog::set_level(spdlog::level::warn);
  auto world = make_mpi_world(kTimeout);
  const int K = world->size();
  testing::TmpDir tmp(*world, "loco-mpi-stream");
  REQUIRE(tmp.ok());

  // H = 3 over 7 steps: syncs start at 3 and 6. τ = 1: the first completes at 4; the second
  // at 7, the last step, which then also runs the final blocking sync.
  auto run = [&](const std::string& name, int tau, bool compressed) {
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
    const std::string dir = tmp.run_dir(name);
    const TrainResult res = train(config_from_json(j, name), dir, *world);
    return std::make_pair(res, dir);
  };

  for (const bool compressed : {false, true}) {
    DYNAMIC_SECTION((compressed ? "compressed" : "dense")) {
      const auto [blocking, dir0] = run(compressed ? "c-tau0" : "d-tau0", 0, compressed);
      const auto [overlapped, dir1] = run(compressed ? "c-tau1" : "d-tau1", 1, compressed);
      CHECK(overlapped.steps_done == 7);
      for (double l : overlapped.step_losses) CHECK(std::isfinite(l));
      // The final (blocking) sync leaves θ = θ_global on every rank.
      const auto hashes = world->all_gather_host(overlapped.params_hash);
      CHECK(mismatching_ranks(hashes).empty());
      // Overlap changes the trajectory (the merge), so the result differs from τ = 0.
      if (K > 1) CHECK(overlapped.params_hash != blocking.params_hash);

      const json& c0 = blocking.summary["comm"];
      const json& c1 = overlapped.summary["comm"];
      CHECK(c0["overlap"]["enabled"] == false);
      CHECK(c0["overlap"]["hidden_fraction"].is_null());
      CHECK(c1["overlap"]["enabled"] == true);
      CHECK(c1["overlap"]["overlap_steps"] == 1);
      CHECK(c1["overlap"]["syncs"] == 2);
      const double hf = c1["overlap"]["hidden_fraction"].get<double>();
      CHECK(hf >= 0.0);
      CHECK(hf <= 1.0);
      CHECK(c1["overlap"]["blocked_seconds"].get<double>() <=
            c1["overlap"]["comm_seconds"].get<double>() + 1e-9);
      // Three syncs either way (3, 6, 7): the same collectives, the same bytes (dense: equal
      // sizes; compressed: payload sizes depend on the values, so only the call count).
      CHECK(c0["outer_syncs"] == 3);
      CHECK(c1["outer_syncs"] == 3);
      if (!compressed) {
        CHECK(c1["sent_bytes"] == c0["sent_bytes"]);
        const uint64_t S = c1["parameters"].get<uint64_t>() * 4;
        CHECK(c1["sent_bytes"].get<uint64_t>() == 3 * ring_ar(S, K));
      } else {
        CHECK(c1["by_kind"]["all_gather"]["calls"] == c0["by_kind"]["all_gather"]["calls"]);
      }

      if (world->rank() == 0) {
        const auto recs = testing::read_jsonl(dir1 + "/metrics.jsonl");
        std::vector<int> sync_steps, started, earlier_started;
        for (const json& rec : recs) {
          if (!rec.contains("outer")) continue;
          sync_steps.push_back(rec["step"].get<int>());
          const json& o = rec["outer"];
          started.push_back(o.contains("overlap") ? o["overlap"]["started_step"].get<int>() : -1);
          if (o.contains("overlap")) {
            CHECK(o["overlap"]["steps"] == 1);
            CHECK(o["overlap"]["hidden_fraction"].get<double>() >= 0.0);
            CHECK(o["overlap"]["hidden_fraction"].get<double>() <= 1.0);
          }
          if (rec.contains("outer_earlier"))
            earlier_started.push_back(rec["outer_earlier"]["overlap"]["started_step"].get<int>());
        }
        CHECK(sync_steps == std::vector<int>{4, 7});
        CHECK(started == std::vector<int>{3, -1});  // step 7's "outer" is the final blocking one
        CHECK(earlier_started == std::vector<int>{6});
        // τ = 0: the blocking syncs at 3, 6 and 7, without overlap records.
        std::vector<int> steps0;
        for (const json& rec : testing::read_jsonl(dir0 + "/metrics.jsonl"))
          if (rec.contains("outer")) {
            steps0.push_back(rec["step"].get<int>());
            CHECK_FALSE(rec["outer"].contains("overlap"));
          }
        CHECK(steps0 == std::vector<int>{3, 6, 7});
      }
    }
  }
}
