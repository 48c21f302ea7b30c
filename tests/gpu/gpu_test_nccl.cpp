// The NCCL communicator with one rank (NCCL refuses two ranks on one GPU): all-reduce (sum,
// mean; f32 and bf16), all-gather and broadcast through the Communicator interface return the
// right values on device buffers, and the accounting follows the ring formulas (K = 1: zero
// bytes). MPI is started as a singleton. Skips without a GPU.
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/comm/communicator.hpp"
#include "loco/comm/nccl_communicator.hpp"
#include "support/catch.hpp"

using namespace loco;

TEST_CASE("NCCL communicator, one rank: collectives on device buffers") {
  std::string why;
  if (!cuda_available(&why)) {
    WARN("SKIP: no usable CUDA device: " << why);
    return;
  }
  MpiRuntime mpi;
  auto comm = make_nccl_world(/*timeout_s=*/60.0);
  REQUIRE(comm->size() == 1);
  REQUIRE(comm->accepts(MemSpace::Device));
  REQUIRE_FALSE(comm->accepts(MemSpace::Host));
  auto gpu = make_backend("cuda");

  const size_t n = 1000;
  std::vector<float> host(n);
  // Integers of magnitude <= 100 and quarters below 2: exact in bf16 (8 significant bits).
  for (size_t i = 0; i < n; ++i)
    host[i] = i % 2 ? static_cast<float>(static_cast<int>(i % 201) - 100) : 0.25f * (i % 8);
  Buf buf = gpu->alloc(n, DType::F32);
  gpu->upload(buf, host.data());
  comm->all_reduce(buf, ReduceOp::Sum);
  comm->all_reduce(buf, ReduceOp::Mean);
  std::vector<float> back(n);
  gpu->download(back.data(), buf);
  CHECK(back == host);  // one rank: sum and mean are the identity

  Buf bf = gpu->alloc(n, DType::BF16);
  gpu->copy(bf, buf);
  comm->all_reduce(bf, ReduceOp::Mean);
  Buf f = gpu->alloc(n, DType::F32);
  gpu->copy(f, bf);
  gpu->download(back.data(), f);
  CHECK(back == host);  // every value is exact in bf16, so the round trip is the identity

  Buf all = gpu->alloc(n, DType::F32);
  comm->all_gather(buf, all);
  gpu->download(back.data(), all);
  CHECK(back == host);

  comm->broadcast(buf, 0);
  gpu->download(back.data(), buf);
  CHECK(back == host);

  CHECK(comm->stats()[CommKind::AllReduce].calls == 3);
  CHECK(comm->stats()[CommKind::AllReduce].sent_bytes == 0);  // K = 1 moves nothing
  for (Buf* b : {&buf, &bf, &f, &all}) gpu->release(*b);
}
