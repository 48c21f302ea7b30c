// Collective timeouts: one rank skips a collective; every other rank must throw
// CommTimeoutError within about the configured timeout, naming the collective, its size and
// the rank. Afterwards the skipping rank makes its late call, which completes the requests
// the others abandoned, so that MPI is left clean for the shared main's MPI_Finalize.
#include <mpi.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "loco/comm/communicator.hpp"
#include "support/catch.hpp"

using namespace loco;

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kTimeout = 1.0;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

TEST_CASE("a peer that arrives late but within the timeout is waited for", "[comm][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  if (comm->rank() == comm->size() - 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto t0 = Clock::now();
  comm->barrier();
  CHECK(seconds_since(t0) < kTimeout);
  std::vector<float> v{1.0f};
  comm->all_reduce(Buf{v.data(), DType::F32, 1}, ReduceOp::Sum);
  CHECK(v[0] == float(comm->size()));
}

TEST_CASE("ranks time out when a peer skips a barrier", "[comm][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  const int r = comm->rank(), K = comm->size();
  if (K == 1) return;  // nobody to wait for
  const int skipper = K - 1;

  if (r != skipper) {
    const auto t0 = Clock::now();
    std::string message;
    try {
      comm->barrier();
      FAIL("barrier returned although rank " << skipper << " never entered it");
    } catch (const CommTimeoutError& e) {
      message = e.what();
    }
    const double waited = seconds_since(t0);
    CHECK(waited >= kTimeout);
    CHECK(waited < 2 * kTimeout);
    CHECK_THAT(message, LOCO_CONTAINS("collective barrier (0 bytes) did not complete within 1 s "
                                      "on rank " +
                                      std::to_string(r) + " of " + std::to_string(K)));
    CHECK_THAT(message, LOCO_CONTAINS("a peer is dead or stuck"));
    // The communicator refuses further work instead of mismatching collectives.
    CHECK_THROWS_WITH(comm->barrier(), LOCO_CONTAINS("unusable"));
    CHECK_THROWS_AS(comm->all_gather_host(1), Error);
  }

  // Meet on another communicator, then let the skipper make its late call: that completes
  // the barrier the others abandoned (they progress it while waiting in MPI_Barrier).
  MPI_Barrier(MPI_COMM_WORLD);
  if (r == skipper) comm->barrier();
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST_CASE("ranks time out when a peer skips an all_reduce", "[comm][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  const int r = comm->rank(), K = comm->size();
  if (K == 1) return;
  const int skipper = 0;  // the root of many algorithms: the others still must not hang

  // Static: the abandoned all-reduce may still write into it after this test returns.
  static std::vector<float> v;
  v.assign(1000, float(r + 1));
  if (r != skipper) {
    const auto t0 = Clock::now();
    try {
      comm->all_reduce(Buf{v.data(), DType::F32, v.size()}, ReduceOp::Sum);
      FAIL("all_reduce returned although rank " << skipper << " never entered it");
    } catch (const CommTimeoutError& e) {
      const double waited = seconds_since(t0);
      CHECK(waited >= kTimeout);
      CHECK(waited < 2 * kTimeout);
      CHECK_THAT(std::string(e.what()),
                 LOCO_CONTAINS("collective all_reduce (4000 bytes) did not complete within 1 s "
                               "on rank " +
                               std::to_string(r) + " of " + std::to_string(K) + " [mpi:world]"));
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (r == skipper) {
    // The late call meets the others' abandoned contributions and gets the full sum.
    comm->all_reduce(Buf{v.data(), DType::F32, v.size()}, ReduceOp::Sum);
    CHECK(v[0] == float(K * (K + 1) / 2));
    CHECK(v[999] == float(K * (K + 1) / 2));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST_CASE("a fresh communicator works after another one timed out", "[comm][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  std::vector<double> x{double(comm->rank())};
  comm->all_reduce_host(x, ReduceOp::Max);
  CHECK(x[0] == double(comm->size() - 1));
}
