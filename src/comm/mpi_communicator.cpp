// MPI communicator on host buffers, plus the transport-independent parts of Communicator.
//
// Timeouts: every collective is non-blocking (MPI_Iallreduce, MPI_Iallgather, MPI_Ibcast,
// MPI_Ibarrier) and polled with MPI_Testall against a deadline. The started forms
// (start_all_reduce, start_all_gather) issue the same requests and hand them to a
// CommRequest instead of polling at once; its wait() is the same polling loop. The poll spins
// briefly (fast collectives return at once), then sleeps with a backoff from 20 us up to 1 ms, so
// ranks oversubscribed on few cores leave the CPU to the peers they are waiting for.
//
// BF16 reductions use user-defined MPI ops on 2-byte elements: each pairwise combine widens
// to fp32, combines, and rounds back to bf16 (nearest-even), like NCCL. The wire carries bf16
// (2 bytes per element) so the accounting is the same as NCCL's; the price is one rounding per
// combine (K-1 along a ring) instead of one overall. Mean divides the bf16 sum by K in fp32
// and rounds once more. The ops are commutative: every rank gets bitwise the same result.
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <thread>

#include "loco/comm/communicator.hpp"
#include "loco/ops/bf16.hpp"

namespace loco {

// ------------------------------------------------------------------ transport-independent

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return "sum";
    case ReduceOp::Mean:
      return "mean";
    case ReduceOp::Max:
      return "max";
    case ReduceOp::Min:
      return "min";
  }
  return "unknown";
}

void Communicator::check_space(const char* collective, const char* what, Buf buf) const {
  if (buf.bytes() == 0 || accepts(buf.space)) return;
  throw Error(std::string(collective) + " on " + name() + ": " + what + " is in " +
              mem_space_name(buf.space) + " memory, but this communicator carries " +
              (accepts(MemSpace::Host) ? "host" : "device") + " memory only");
}

void Communicator::check_gather(const char* collective, Buf send_piece, Buf recv_all) const {
  if (send_piece.dtype != recv_all.dtype)
    throw Error(std::string(collective) + ": send piece is " + dtype_name(send_piece.dtype) +
                " but the receive buffer is " + dtype_name(recv_all.dtype));
  if (recv_all.numel != send_piece.numel * size_t(size()))
    throw Error(std::string(collective) + ": receive buffer holds " +
                std::to_string(recv_all.numel) + " elements, expected " + std::to_string(size()) +
                " x " + std::to_string(send_piece.numel));
  check_space(collective, "the send piece", send_piece);
  check_space(collective, "the receive buffer", recv_all);
}

void Communicator::check_reducible(Buf buf, ReduceOp op) const {
  if (buf.dtype == DType::U8)
    throw Error("all_reduce on " + name() + ": a u8 buffer holds bytes, not numbers");
  if (buf.dtype == DType::I32 && op == ReduceOp::Mean)
    throw Error("all_reduce on " + name() + ": mean of an i32 buffer is not defined");
}

void Communicator::all_reduce(Buf buf, ReduceOp op) {
  check_space("all_reduce", "the buffer", buf);
  check_reducible(buf, op);
  do_all_reduce(buf, op);
}

void Communicator::all_gather(Buf send_piece, Buf recv_all) {
  check_gather("all_gather", send_piece, recv_all);
  do_all_gather(send_piece, recv_all);
}

std::unique_ptr<CommRequest> Communicator::start_all_reduce(Buf buf, ReduceOp op) {
  check_space("all_reduce", "the buffer", buf);
  check_reducible(buf, op);
  return do_start_all_reduce(buf, op);
}

std::unique_ptr<CommRequest> Communicator::start_all_gather(Buf send_piece, Buf recv_all) {
  check_gather("all_gather", send_piece, recv_all);
  return do_start_all_gather(send_piece, recv_all);
}

void Communicator::broadcast(Buf buf, int root) {
  check_space("broadcast", "the buffer", buf);
  do_broadcast(buf, root);
}

namespace {
// What a transport without a non-blocking path returns: the call already ran.
class CompletedRequest final : public CommRequest {
 public:
  bool test() override { return true; }
  void wait() override {}
  bool done() const override { return true; }
};
}  // namespace

std::unique_ptr<CommRequest> Communicator::do_start_all_reduce(Buf buf, ReduceOp op) {
  do_all_reduce(buf, op);
  return std::make_unique<CompletedRequest>();
}

std::unique_ptr<CommRequest> Communicator::do_start_all_gather(Buf send_piece, Buf recv_all) {
  do_all_gather(send_piece, recv_all);
  return std::make_unique<CompletedRequest>();
}

std::vector<int> mismatching_ranks(const std::vector<uint64_t>& per_rank) {
  // The reference is the most common value; a tie goes to the value seen at the lowest rank,
  // so a 1-vs-1 disagreement names rank 1.
  std::map<uint64_t, int> counts;
  for (uint64_t v : per_rank) ++counts[v];
  if (counts.size() <= 1) return {};
  uint64_t reference = per_rank[0];
  for (uint64_t v : per_rank)
    if (counts[v] > counts[reference]) reference = v;
  std::vector<int> out;
  for (size_t r = 0; r < per_rank.size(); ++r)
    if (per_rank[r] != reference) out.push_back(int(r));
  return out;
}

// ------------------------------------------------------------------ MPI helpers

namespace {

using Clock = std::chrono::steady_clock;

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, size_t(len));
}

void mpi_check(int code, const std::string& what) {
  if (code != MPI_SUCCESS) throw CommFailureError(what + " failed: " + mpi_error_text(code));
}

bool mpi_is_initialised() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

std::string format_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

// BF16 combines for MPI_Op_create: widen, combine in fp32, round to nearest-even.
template <typename F>
void bf16_combine(void* in, void* inout, int* len, F f) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i)
    b[i] = ops::float_to_bf16_bits(f(ops::bf16_bits_to_float(a[i]), ops::bf16_bits_to_float(b[i])));
}
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  bf16_combine(in, inout, len, [](float x, float y) { return x + y; });
}
void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  bf16_combine(in, inout, len, [](float x, float y) { return std::max(x, y); });
}
void bf16_min(void* in, void* inout, int* len, MPI_Datatype*) {
  bf16_combine(in, inout, len, [](float x, float y) { return std::min(x, y); });
}

// MPI counts are int: big buffers go as several requests of at most this many elements.
constexpr size_t kMaxCount = size_t(1) << 30;

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, std::string name, double timeout_s)
      : Communicator(timeout_s), comm_(comm), name_(std::move(name)) {
    mpi_check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    mpi_check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    mpi_check(MPI_Op_create(bf16_sum, 1, &bf16_sum_), "MPI_Op_create");
    mpi_check(MPI_Op_create(bf16_max, 1, &bf16_max_), "MPI_Op_create");
    mpi_check(MPI_Op_create(bf16_min, 1, &bf16_min_), "MPI_Op_create");
  }

  ~MpiCommunicator() override {
    if (!mpi_is_initialised()) return;
    // Requests abandoned by a timeout: reap those the late peer has completed since. Those
    // still pending cannot be freed (MPI forbids freeing collective requests); they and their
    // staging buffers are leaked on purpose.
    for (auto& p : abandoned_) {
      int done = 0;
      MPI_Testall(int(p.requests.size()), p.requests.data(), &done, MPI_STATUSES_IGNORE);
      if (!done) new Pending(std::move(p));  // leaked: the transport may still write it
    }
    MPI_Op_free(&bf16_sum_);
    MPI_Op_free(&bf16_max_);
    MPI_Op_free(&bf16_min_);
    MPI_Comm_free(&comm_);  // deferred by MPI until pending operations complete
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi:" + name_; }
  bool accepts(MemSpace space) const override { return space == MemSpace::Host; }

  void barrier() override {
    check_usable();
    const auto t0 = Clock::now();
    Pending p;
    p.requests.emplace_back();
    mpi_check(MPI_Ibarrier(comm_, &p.requests.back()), "MPI_Ibarrier");
    wait(std::move(p), "barrier", 0);
    account(CommKind::Barrier, 0, 0, t0);
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    check_usable();
    // MPI_Comm_split cannot time out: first make sure every peer has reached the split (this
    // exchange can), then split. The exchange also catches ranks disagreeing on the call.
    const uint64_t mine = (uint64_t(uint32_t(color < 0 ? -1 : color)) << 32) | uint32_t(key);
    (void)all_gather_host(mine);
    MPI_Comm sub = MPI_COMM_NULL;
    mpi_check(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &sub),
              "MPI_Comm_split");
    if (sub == MPI_COMM_NULL) return nullptr;
    return std::make_unique<MpiCommunicator>(
        sub, name_ + "/split(color=" + std::to_string(color) + ")", timeout_s_);
  }

  void all_reduce_host(std::vector<double>& values, ReduceOp op) override {
    host_all_reduce(values, MPI_DOUBLE, op);
    if (op == ReduceOp::Mean)
      for (double& v : values) v /= double(size_);
  }

  void all_reduce_host(std::vector<uint64_t>& values, ReduceOp op) override {
    if (op == ReduceOp::Mean)
      throw Error("all_reduce_host: mean of integers is not defined (use doubles)");
    host_all_reduce(values, MPI_UINT64_T, op);
  }

 protected:
  void do_all_reduce(Buf buf, ReduceOp op) override {
    check_usable();
    const auto t0 = Clock::now();
    Pending p = issue_all_reduce(buf, op);
    wait(std::move(p), "all_reduce", buf.bytes());
    if (op == ReduceOp::Mean && size_ > 1) divide_by_size(buf);
    account(CommKind::AllReduce, buf.bytes(), 0, t0);
  }

  std::unique_ptr<CommRequest> do_start_all_reduce(Buf buf, ReduceOp op) override {
    check_usable();
    const auto t0 = Clock::now();
    Pending p = issue_all_reduce(buf, op);
    // Mean: the division waits for the sum, like the blocking call's.
    auto finish = [this, buf, op] {
      if (op == ReduceOp::Mean && size_ > 1) divide_by_size(buf);
    };
    return std::make_unique<Request>(*this, std::move(p), "all_reduce", CommKind::AllReduce,
                                     buf.bytes(), t0, finish);
  }

  void do_all_gather(Buf send, Buf recv) override {
    const void* send_piece = send.data;
    const size_t piece_bytes = send.bytes();
    void* recv_all = recv.data;
    check_usable();
    const auto t0 = Clock::now();
    Pending p = issue_all_gather(send_piece, piece_bytes, recv_all);
    wait(std::move(p), "all_gather", piece_bytes);
    account(CommKind::AllGather, piece_bytes, 0, t0);
  }

  std::unique_ptr<CommRequest> do_start_all_gather(Buf send, Buf recv) override {
    const void* send_piece = send.data;
    const size_t piece_bytes = send.bytes();
    void* recv_all = recv.data;
    check_usable();
    const auto t0 = Clock::now();
    Pending p = issue_all_gather(send_piece, piece_bytes, recv_all);
    return std::make_unique<Request>(*this, std::move(p), "all_gather", CommKind::AllGather,
                                     piece_bytes, t0, nullptr);
  }

  void do_broadcast(Buf buf, int root) override {
    void* data = buf.data;
    const size_t bytes = buf.bytes();
    check_usable();
    check_root(root, "broadcast");
    const auto t0 = Clock::now();
    ibcast(data, bytes, root, "broadcast");
    account(CommKind::Broadcast, bytes, root, t0);
  }

 public:
  using Communicator::all_gather_host;
  std::vector<uint64_t> all_gather_host(const std::vector<uint64_t>& values) override {
    check_usable();
    const auto t0 = Clock::now();
    const size_t n = values.size(), bytes = n * sizeof(uint64_t);
    Pending p;
    p.staging.resize(bytes * (size_t(size_) + 1));
    if (bytes) std::memcpy(p.staging.data(), values.data(), bytes);
    char* recv = p.staging.data() + bytes;
    p.requests.emplace_back();
    mpi_check(MPI_Iallgather(p.staging.data(), int(n), MPI_UINT64_T, recv, int(n), MPI_UINT64_T,
                             comm_, &p.requests.back()),
              "MPI_Iallgather");
    std::vector<uint64_t> out(n * size_t(size_));
    wait(p, "host_all_gather", bytes);
    if (bytes) std::memcpy(out.data(), recv, out.size() * sizeof(uint64_t));
    account(CommKind::HostAllGather, bytes, 0, t0);
    return out;
  }

  void broadcast_host(void* data, size_t bytes, int root) override {
    check_usable();
    check_root(root, "host_broadcast");
    const auto t0 = Clock::now();
    // Staged: a timed-out call leaves MPI writing into our buffer, never the caller's.
    std::vector<char> staging(static_cast<char*>(data), static_cast<char*>(data) + bytes);
    ibcast(staging.data(), bytes, root, "host_broadcast", &staging);
    std::memcpy(data, staging.data(), bytes);
    account(CommKind::HostBroadcast, bytes, root, t0);
  }

 private:
  // Requests of one call, and the staging memory they use (kept alive if abandoned).
  struct Pending {
    std::vector<MPI_Request> requests;
    std::vector<char> staging;
  };

  // A started collective: its requests, polled by test() / wait(); accounted (and, for a
  // mean, divided) once complete.
  class Request final : public CommRequest {
   public:
    Request(MpiCommunicator& comm, Pending p, const char* what, CommKind kind, size_t bytes,
            Clock::time_point t0, std::function<void()> finish)
        : comm_(comm),
          p_(std::move(p)),
          what_(what),
          kind_(kind),
          bytes_(bytes),
          finish_(std::move(finish)),
          seconds_(since(t0)) {}

    ~Request() override {
      // Still in flight: the peers' sequence of collectives no longer matches ours.
      if (!done_ && !failed_ && mpi_is_initialised()) {
        comm_.broken_ = true;
        comm_.abandoned_.push_back(std::move(p_));
      }
    }

    bool test() override {
      if (done_) return true;
      check_not_failed();
      const auto t0 = Clock::now();
      int flag = 0;
      mpi_check(
          MPI_Testall(int(p_.requests.size()), p_.requests.data(), &flag, MPI_STATUSES_IGNORE),
          std::string("collective ") + what_);
      seconds_ += since(t0);
      if (flag) complete();
      return done_;
    }

    void wait() override {
      if (done_) return;
      check_not_failed();
      const auto t0 = Clock::now();
      try {
        comm_.wait(p_, what_, bytes_);
      } catch (...) {
        failed_ = true;  // the requests now belong to the communicator's abandoned list
        throw;
      }
      seconds_ += since(t0);
      complete();
    }

    bool done() const override { return done_; }

   private:
    void check_not_failed() const {
      if (failed_)
        throw Error("collective " + std::string(what_) + " on " + comm_.name() +
                    " was abandoned after a timeout");
    }
    static double since(Clock::time_point t0) {
      return std::chrono::duration<double>(Clock::now() - t0).count();
    }
    // Accounted: the time this rank spent in the calls (start, tests, wait), like a blocking
    // call's time; the computation the collective overlapped is not communication time.
    void complete() {
      const auto t0 = Clock::now();
      if (finish_) finish_();
      seconds_ += since(t0);
      comm_.stats_.account(kind_, bytes_, comm_.size_, comm_.rank_, 0, seconds_);
      done_ = true;
    }

    MpiCommunicator& comm_;
    Pending p_;
    const char* what_;
    CommKind kind_;
    size_t bytes_;
    std::function<void()> finish_;
    double seconds_ = 0.0;  // spent in this request's calls so far
    bool done_ = false, failed_ = false;
  };

  Pending issue_all_reduce(Buf buf, ReduceOp op) {
    MPI_Datatype type = MPI_FLOAT;
    MPI_Op mop = MPI_SUM;
    switch (buf.dtype) {
      case DType::F32:
        type = MPI_FLOAT;
        mop = op == ReduceOp::Max ? MPI_MAX : op == ReduceOp::Min ? MPI_MIN : MPI_SUM;
        break;
      case DType::I32:
        if (op == ReduceOp::Mean) throw Error("all_reduce: mean of an i32 buffer is not defined");
        type = MPI_INT32_T;
        mop = op == ReduceOp::Max ? MPI_MAX : op == ReduceOp::Min ? MPI_MIN : MPI_SUM;
        break;
      case DType::BF16:
        type = MPI_UINT16_T;
        mop = op == ReduceOp::Max ? bf16_max_ : op == ReduceOp::Min ? bf16_min_ : bf16_sum_;
        break;
      case DType::U8:
        throw Error("all_reduce: a u8 buffer holds bytes, not numbers");
    }
    Pending p;
    const size_t esize = dtype_size(buf.dtype);
    size_t off = 0;
    do {
      const size_t n = std::min(kMaxCount, buf.numel - off);
      p.requests.emplace_back();
      mpi_check(MPI_Iallreduce(MPI_IN_PLACE, static_cast<char*>(buf.data) + off * esize, int(n),
                               type, mop, comm_, &p.requests.back()),
                "MPI_Iallreduce");
      off += n;
    } while (off < buf.numel);
    return p;
  }

  Pending issue_all_gather(const void* send_piece, size_t piece_bytes, void* recv_all) {
    if (piece_bytes > size_t(INT_MAX))
      throw Error("all_gather: pieces of " + std::to_string(piece_bytes) +
                  " bytes exceed the 2 GiB MPI limit: send the payload in parts");
    const void* send = send_piece;
    if (send == static_cast<const char*>(recv_all) + size_t(rank_) * piece_bytes)
      send = MPI_IN_PLACE;
    Pending p;
    p.requests.emplace_back();
    mpi_check(MPI_Iallgather(send, int(piece_bytes), MPI_BYTE, recv_all, int(piece_bytes), MPI_BYTE,
                             comm_, &p.requests.back()),
              "MPI_Iallgather");
    return p;
  }

  void check_usable() const {
    if (broken_)
      throw Error("communicator " + name() + " is unusable after an earlier collective timed " +
                  "out on rank " + std::to_string(rank_) + " of " + std::to_string(size_));
  }

  void check_root(int root, const char* what) const {
    if (root < 0 || root >= size_)
      throw Error(std::string(what) + ": root " + std::to_string(root) + " is not a rank of " +
                  name() + " (size " + std::to_string(size_) + ")");
  }

  void account(CommKind kind, size_t bytes, int root, Clock::time_point t0) {
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    stats_.account(kind, bytes, size_, rank_, root, secs);
  }

  // Polls `p` to completion or throws CommTimeoutError after timeout_s_. On a timeout the
  // requests (and staging) move to abandoned_ and the communicator is marked broken.
  void wait(Pending& p, const char* what, size_t bytes) {
    const auto t0 = Clock::now();
    const bool bounded = timeout_s_ > 0;
    const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(bounded ? timeout_s_ : 0.0));
    auto nap = std::chrono::microseconds(20);
    for (int spins = 0;; ++spins) {
      int done = 0;
      mpi_check(MPI_Testall(int(p.requests.size()), p.requests.data(), &done, MPI_STATUSES_IGNORE),
                std::string("collective ") + what);
      if (done) return;
      if (bounded && Clock::now() >= deadline) {
        broken_ = true;
        abandoned_.push_back(std::move(p));
        throw CommTimeoutError("collective " + std::string(what) + " (" + std::to_string(bytes) +
                               " bytes) did not complete within " + format_seconds(timeout_s_) +
                               " s on rank " + std::to_string(rank_) + " of " +
                               std::to_string(size_) + " [" + name() +
                               "]: a peer is dead or stuck");
      }
      if (spins < 64) continue;
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(1000));
    }
  }
  void wait(Pending&& p, const char* what, size_t bytes) { wait(p, what, bytes); }

  void ibcast(void* data, size_t bytes, int root, const char* what,
              std::vector<char>* staging = nullptr) {
    Pending p;
    size_t off = 0;
    do {
      const size_t n = std::min(kMaxCount, bytes - off);
      p.requests.emplace_back();
      mpi_check(MPI_Ibcast(static_cast<char*>(data) + off, int(n), MPI_BYTE, root, comm_,
                           &p.requests.back()),
                "MPI_Ibcast");
      off += n;
    } while (off < bytes);
    if (staging) p.staging = std::move(*staging);
    wait(p, what, bytes);
    if (staging) *staging = std::move(p.staging);
  }

  template <typename T>
  void host_all_reduce(std::vector<T>& values, MPI_Datatype type, ReduceOp op) {
    check_usable();
    LOCO_CHECK(values.size() <= kMaxCount, "host all-reduce vector too large");
    const auto t0 = Clock::now();
    const MPI_Op mop = op == ReduceOp::Max ? MPI_MAX : op == ReduceOp::Min ? MPI_MIN : MPI_SUM;
    const size_t bytes = values.size() * sizeof(T);
    Pending p;
    p.staging.resize(bytes);
    if (bytes) std::memcpy(p.staging.data(), values.data(), bytes);
    p.requests.emplace_back();
    mpi_check(MPI_Iallreduce(MPI_IN_PLACE, p.staging.data(), int(values.size()), type, mop, comm_,
                             &p.requests.back()),
              "MPI_Iallreduce");
    wait(p, "host_all_reduce", bytes);
    if (bytes) std::memcpy(values.data(), p.staging.data(), bytes);
    account(CommKind::HostAllReduce, bytes, 0, t0);
  }

  void divide_by_size(Buf buf) {
    const float k = float(size_);
    if (buf.dtype == DType::F32) {
      float* x = buf.f32();
      for (size_t i = 0; i < buf.numel; ++i) x[i] /= k;
    } else {
      auto* x = static_cast<uint16_t*>(buf.data);
      for (size_t i = 0; i < buf.numel; ++i)
        x[i] = ops::float_to_bf16_bits(ops::bf16_bits_to_float(x[i]) / k);
    }
  }

  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  MPI_Op bf16_sum_ = MPI_OP_NULL, bf16_max_ = MPI_OP_NULL, bf16_min_ = MPI_OP_NULL;
  bool broken_ = false;
  std::vector<Pending> abandoned_;
};

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

}  // namespace

// ------------------------------------------------------------------ runtime and world

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int init = 0;
  MPI_Initialized(&init);
  if (init) {
    MPI_Query_thread(&thread_level_);
    return;
  }
  mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &thread_level_), "MPI_Init_thread");
  initialised_here_ = true;
}

MpiRuntime::~MpiRuntime() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (initialised_here_ && !fin) MPI_Finalize();
}

std::unique_ptr<Communicator> make_mpi_world(double timeout_s) {
  if (!mpi_is_initialised())
    throw Error("make_mpi_world: MPI is not initialised (create a loco::MpiRuntime first)");
  // MPI_Comm_idup can time out where MPI_Comm_dup would hang on a missing peer.
  MPI_Comm dup = MPI_COMM_NULL;
  MPI_Request req = MPI_REQUEST_NULL;
  mpi_check(MPI_Comm_idup(MPI_COMM_WORLD, &dup, &req), "MPI_Comm_idup");
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(timeout_s > 0 ? timeout_s : 0.0));
  auto nap = std::chrono::microseconds(20);
  for (;;) {
    int done = 0;
    mpi_check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Comm_idup");
    if (done) break;
    if (timeout_s > 0 && Clock::now() >= deadline) {
      int rank = 0, size = 1;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      MPI_Comm_size(MPI_COMM_WORLD, &size);
      throw CommTimeoutError("creating the world communicator did not complete within " +
                             format_seconds(timeout_s) + " s on rank " + std::to_string(rank) +
                             " of " + std::to_string(size) + ": a peer is dead or stuck");
    }
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::microseconds(1000));
  }
  return std::make_unique<MpiCommunicator>(dup, "world", timeout_s);
}

namespace {
NodeInfo query_node_info() {
  NodeInfo out;
  char host[MPI_MAX_PROCESSOR_NAME] = {};
  if (!mpi_is_initialised()) {
    out.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", env_int("SLURM_LOCALID", 0));
    out.local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", env_int("SLURM_NTASKS_PER_NODE", 1));
    if (gethostname(host, sizeof host - 1) == 0) out.host = host;
    return out;
  }
  int len = 0;
  if (MPI_Get_processor_name(host, &len) == MPI_SUCCESS) out.host.assign(host, size_t(len));
  // The node is what MPI considers one shared-memory domain: its lowest world rank names it.
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm local = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local),
            "MPI_Comm_split_type");
  MPI_Comm_rank(local, &out.local_rank);
  MPI_Comm_size(local, &out.local_size);
  int leader = world_rank;
  mpi_check(MPI_Allreduce(&world_rank, &leader, 1, MPI_INT, MPI_MIN, local), "MPI_Allreduce");
  MPI_Comm_free(&local);
  int world_size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  std::vector<int> leaders(size_t(world_size), 0);
  mpi_check(MPI_Allgather(&leader, 1, MPI_INT, leaders.data(), 1, MPI_INT, MPI_COMM_WORLD),
            "MPI_Allgather");
  std::sort(leaders.begin(), leaders.end());
  leaders.erase(std::unique(leaders.begin(), leaders.end()), leaders.end());
  out.index = int(std::lower_bound(leaders.begin(), leaders.end(), leader) - leaders.begin());
  out.count = int(leaders.size());
  return out;
}

}  // namespace

// Computed once: the first call is collective over MPI_COMM_WORLD.
const NodeInfo& node_info() {
  static const NodeInfo value = query_node_info();
  return value;
}

int node_local_rank() { return node_info().local_rank; }
int node_local_size() { return node_info().local_size; }

void abort_world(int code) {
  if (mpi_is_initialised()) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace loco
