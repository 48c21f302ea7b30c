// Memory spaces are explicit: a communicator handed a buffer in a memory space it does not
// carry refuses it with an error naming the collective, the communicator and the space, and
// never dereferences it; the host-staged communicator (outer.transport "mpi" on CUDA) carries
// device buffers by staging them through host memory, with the plain MPI values and bytes.
// Runs under mpirun -np 2 and -np 4.
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "loco/backend/cpu_backend.hpp"
#include "loco/dist/communicator.hpp"
#include "loco/dist/host_staged.hpp"
#include "support/catch.hpp"

using namespace loco;

namespace {

constexpr double kTimeout = 60.0;

// A pointer that crashes when dereferenced: the refusals below must not touch it.
Buf poisoned_device_buf(DType t, size_t n) {
  return Buf{reinterpret_cast<void*>(uintptr_t(16)), t, n, MemSpace::Device};
}

// The CPU backend with its allocations labelled as device memory: stands in for the CUDA
// backend (whose buffers the host must not read) so that staging runs on a machine without a
// GPU.
class LabelledDeviceBackend final : public CpuBackend {
 public:
  Buf alloc(size_t numel, DType dtype) override {
    Buf b = CpuBackend::alloc(numel, dtype);
    b.space = MemSpace::Device;
    return b;
  }
  // Its ops take the labelled buffers (and refuse host ones) and copy as cudaMemcpy would.
  MemSpace memory_space() const override { return MemSpace::Device; }
  int host_allocs = 0;
  Buf alloc_host(size_t numel, DType dtype) override {
    ++host_allocs;
    return CpuBackend::alloc_host(numel, dtype);
  }
};

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("MPI refuses device buffers, naming the collective and the space", "[comm][mpi]") {
  auto comm = make_mpi_world(kTimeout);
  const int K = comm->size();
  const Buf dev = poisoned_device_buf(DType::F32, 8);
  const Buf dev_all = poisoned_device_buf(DType::F32, 8 * size_t(K));
  std::vector<float> host(8 * size_t(K));
  const Buf host_piece{host.data(), DType::F32, 8};
  const Buf host_all{host.data(), DType::F32, host.size()};

  std::string m = message_of([&] { comm->all_reduce(dev, ReduceOp::Sum); });
  CHECK(m.find("all_reduce on mpi:world") != std::string::npos);
  CHECK(m.find("device memory") != std::string::npos);
  CHECK(m.find("host memory only") != std::string::npos);
  m = message_of([&] { comm->all_gather(host_piece, dev_all); });
  CHECK(m.find("all_gather on mpi:world: the receive buffer is in device memory") !=
        std::string::npos);
  m = message_of([&] { comm->all_gather(dev, host_all); });
  CHECK(m.find("the send piece is in device memory") != std::string::npos);
  m = message_of([&] { comm->broadcast(dev, 0); });
  CHECK(m.find("broadcast on mpi:world") != std::string::npos);
  m = message_of([&] { (void)comm->start_all_reduce(dev, ReduceOp::Mean); });
  CHECK(m.find("all_reduce on mpi:world") != std::string::npos);
  m = message_of([&] { (void)comm->start_all_gather(dev, dev_all); });
  CHECK(m.find("all_gather on mpi:world") != std::string::npos);
  // Bytes are not numbers.
  std::vector<uint8_t> bytes(4);
  m = message_of([&] { comm->all_reduce(host_bytes(bytes.data(), 4), ReduceOp::Sum); });
  CHECK(m.find("u8 buffer holds bytes") != std::string::npos);
  // Nothing was sent: every refusal came before the transport.
  CHECK(comm->stats().total().calls == 0);
  // The communicator is still usable afterwards.
  std::vector<float> one{1.0f};
  comm->all_reduce(Buf{one.data(), DType::F32, 1}, ReduceOp::Sum);
  CHECK(one[0] == float(K));
}

TEST_CASE("host routines refuse device buffers", "[comm][mpi]") {
  const Buf dev = poisoned_device_buf(DType::F32, 4);
  CHECK_THROWS_WITH(dev.f32(), Catch::Matchers::Contains("device memory"));
  CpuBackend cpu;
  CHECK_THROWS_WITH(cpu.scale(dev, 2.0f), Catch::Matchers::Contains("device memory"));
  CHECK_THROWS_WITH(cpu.zero(dev), Catch::Matchers::Contains("device memory"));
  std::vector<float> h(4);
  CHECK_THROWS_WITH(cpu.download(h.data(), dev), Catch::Matchers::Contains("device memory"));
}

TEST_CASE("host-staged MPI carries device buffers with MPI's values and bytes", "[comm][mpi]") {
  LabelledDeviceBackend dev;
  auto plain = make_mpi_world(kTimeout);
  auto staged = make_host_staged_communicator(make_mpi_world(kTimeout), dev);
  const int K = plain->size(), r = plain->rank();
  CHECK(staged->accepts(MemSpace::Device));
  CHECK(staged->accepts(MemSpace::Host));

  const size_t n = 1001;
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) values[i] = float(r + 1) * 0.25f + float(i % 7);
  Buf d = dev.alloc(n, DType::F32);
  REQUIRE(d.space == MemSpace::Device);
  dev.upload(d, values.data());
  std::vector<float> expect = values;
  plain->all_reduce(Buf{expect.data(), DType::F32, n}, ReduceOp::Mean);
  staged->all_reduce(d, ReduceOp::Mean);
  std::vector<float> got(n);
  dev.download(got.data(), d);
  CHECK(got == expect);

  // Started: the device buffer holds the result once the request is done.
  dev.upload(d, values.data());
  auto req = staged->start_all_reduce(d, ReduceOp::Mean);
  req->wait();
  dev.download(got.data(), d);
  CHECK(got == expect);

  // All-gather of I32 words (the packed payloads' staging), device to device.
  Buf piece = dev.alloc(5, DType::I32), all = dev.alloc(5 * size_t(K), DType::I32);
  std::vector<int32_t> mine(5, 100 * r + 7), everything(5 * size_t(K));
  dev.upload(piece, mine.data());
  staged->all_gather(piece, all);
  dev.download(everything.data(), all);
  for (int q = 0; q < K; ++q) CHECK(everything[size_t(q) * 5 + 4] == 100 * q + 7);
  auto g = staged->start_all_gather(piece, all);
  g->wait();

  // Broadcast from the last rank.
  std::vector<float> b(3, float(r));
  Buf db = dev.alloc(3, DType::F32);
  dev.upload(db, b.data());
  staged->broadcast(db, K - 1);
  dev.download(b.data(), db);
  CHECK(b[2] == float(K - 1));

  // Accounting: the same calls and bytes as MPI on host buffers (the copies are not
  // communication).
  auto reference = make_mpi_world(kTimeout);
  std::vector<float> h(n);
  std::vector<int32_t> hp(5), ha(5 * size_t(K));
  std::vector<float> hb(3);
  reference->all_reduce(Buf{h.data(), DType::F32, n}, ReduceOp::Mean);
  reference->all_reduce(Buf{h.data(), DType::F32, n}, ReduceOp::Mean);
  reference->all_gather(Buf{hp.data(), DType::I32, 5}, Buf{ha.data(), DType::I32, ha.size()});
  reference->all_gather(Buf{hp.data(), DType::I32, 5}, Buf{ha.data(), DType::I32, ha.size()});
  reference->broadcast(Buf{hb.data(), DType::F32, 3}, K - 1);
  for (CommKind k : {CommKind::AllReduce, CommKind::AllGather, CommKind::Broadcast}) {
    CHECK(staged->stats()[k].calls == reference->stats()[k].calls);
    CHECK(staged->stats()[k].sent_bytes == reference->stats()[k].sent_bytes);
    CHECK(staged->stats()[k].recv_bytes == reference->stats()[k].recv_bytes);
  }
  CHECK(dev.host_allocs >= 1);
  for (Buf* x : {&d, &piece, &all, &db}) dev.release(*x);
}
