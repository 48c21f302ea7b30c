// NCCL communicator on device buffers; see loco/comm/nccl_communicator.hpp. Plain C++ against
// the CUDA runtime and NCCL (no kernels).
#include "loco/comm/nccl_communicator.hpp"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

namespace loco {

namespace {

using Clock = std::chrono::steady_clock;

std::string format_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

std::string cuda_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

void cuda_check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error(what + " failed: " + cuda_text(e));
}

std::string nccl_text(ncclResult_t r, ncclComm_t comm) {
  std::string s = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last && *last) s += std::string(": ") + last;
  return s;
}

Clock::time_point deadline_after(double timeout_s) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(timeout_s > 0 ? timeout_s : 0.0));
}

// Spin briefly, then sleep with a backoff from 20 us to 250 us.
class Backoff {
 public:
  void pause() {
    if (++spins_ < 64) return;
    std::this_thread::sleep_for(nap_);
    nap_ = std::min(nap_ * 2, std::chrono::microseconds(250));
  }

 private:
  int spins_ = 0;
  std::chrono::microseconds nap_{20};
};

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32:
      return ncclFloat32;
    case DType::BF16:
      return ncclBfloat16;
    case DType::I32:
      return ncclInt32;
    case DType::U8:
      return ncclUint8;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return ncclSum;
    case ReduceOp::Mean:
      return ncclAvg;
    case ReduceOp::Max:
      return ncclMax;
    case ReduceOp::Min:
      return ncclMin;
  }
  return ncclSum;
}

ncclConfig_t nonblocking_config() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> host, ncclComm_t comm, int device,
                   cudaStream_t stream, bool own_stream, double timeout_s, std::string name)
      : Communicator(timeout_s),
        host_(std::move(host)),
        comm_(comm),
        device_(device),
        stream_(stream),
        own_stream_(own_stream),
        name_(std::move(name)),
        rank_(host_->rank()),
        size_(host_->size()) {}

  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    if (comm_ && !broken_) {
      // Flush and release cleanly, but never hang in a destructor: abort when the flush does
      // not finish within the timeout.
      ncclResult_t r = ncclCommFinalize(comm_);
      const auto deadline = deadline_after(timeout_s_ > 0 ? timeout_s_ : 60.0);
      Backoff backoff;
      while (r == ncclInProgress && Clock::now() < deadline) {
        if (ncclCommGetAsyncError(comm_, &r) != ncclSuccess) break;
        if (r == ncclInProgress) backoff.pause();
      }
      if (r == ncclSuccess)
        ncclCommDestroy(comm_);
      else
        ncclCommAbort(comm_);
    } else if (comm_) {
      ncclCommAbort(comm_);
    }
    if (own_stream_ && stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "nccl:" + name_; }
  bool accepts(MemSpace space) const override { return space == MemSpace::Device; }

  // Synchronises the processes (over the host communicator), not device streams.
  void barrier() override {
    check_usable();
    via_host([&] { host_->barrier(); });
  }

 protected:
  void do_all_reduce(Buf buf, ReduceOp op) override {
    if (buf.dtype == DType::I32 && op == ReduceOp::Mean)
      throw Error("all_reduce: mean of an i32 buffer is not defined");
    run("all_reduce", CommKind::AllReduce, buf.bytes(), 0, [&] {
      return ncclAllReduce(buf.data, buf.data, buf.numel, nccl_type(buf.dtype), nccl_op(op), comm_,
                           stream_);
    });
  }

  void do_all_gather(Buf send, Buf recv) override {
    const void* send_piece = send.data;
    const size_t piece_bytes = send.bytes();
    void* recv_all = recv.data;
    run("all_gather", CommKind::AllGather, piece_bytes, 0,
        [&] { return ncclAllGather(send_piece, recv_all, piece_bytes, ncclChar, comm_, stream_); });
  }

  std::unique_ptr<CommRequest> do_start_all_reduce(Buf buf, ReduceOp op) override {
    if (buf.dtype == DType::I32 && op == ReduceOp::Mean)
      throw Error("all_reduce: mean of an i32 buffer is not defined");
    // ncclAvg divides on the device: nothing is left to do at completion.
    return start("all_reduce", CommKind::AllReduce, buf.bytes(), [&] {
      return ncclAllReduce(buf.data, buf.data, buf.numel, nccl_type(buf.dtype), nccl_op(op), comm_,
                           stream_);
    });
  }

  std::unique_ptr<CommRequest> do_start_all_gather(Buf send, Buf recv) override {
    const void* send_piece = send.data;
    const size_t piece_bytes = send.bytes();
    void* recv_all = recv.data;
    return start("all_gather", CommKind::AllGather, piece_bytes, [&] {
      return ncclAllGather(send_piece, recv_all, piece_bytes, ncclChar, comm_, stream_);
    });
  }

  void do_broadcast(Buf buf, int root) override {
    void* data = buf.data;
    const size_t bytes = buf.bytes();
    if (root < 0 || root >= size_)
      throw Error("broadcast: root " + std::to_string(root) + " is not a rank of " + name() +
                  " (size " + std::to_string(size_) + ")");
    run("broadcast", CommKind::Broadcast, bytes, root,
        [&] { return ncclBroadcast(data, data, bytes, ncclChar, root, comm_, stream_); });
  }

 public:
  std::unique_ptr<Communicator> split(int color, int key) override {
    check_usable();
    // The host split first: it proves every peer reached this call (with a timeout) before
    // NCCL's own split, and gives the child its host communicator.
    std::unique_ptr<Communicator> sub_host;
    via_host([&] { sub_host = host_->split(color, key); });
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    ncclConfig_t config = nonblocking_config();
    ncclComm_t sub = nullptr;
    const auto deadline = deadline_after(timeout_s_);
    ncclResult_t r =
        ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &sub, &config);
    if (r != ncclSuccess && r != ncclInProgress)
      throw Error("ncclCommSplit on " + name() + " failed: " + nccl_text(r, comm_));
    wait_ready(comm_, "split", 0, deadline);
    if (color < 0) {
      LOCO_CHECK(sub == nullptr && sub_host == nullptr, "split without a color made a group");
      return nullptr;
    }
    LOCO_CHECK(sub != nullptr && sub_host != nullptr, "split lost its group");
    try {
      wait_ready(sub, "split", 0, deadline);
    } catch (...) {
      ncclCommAbort(sub);
      throw;
    }
    int sub_rank = -1, sub_size = -1;
    ncclCommUserRank(sub, &sub_rank);
    ncclCommCount(sub, &sub_size);
    LOCO_CHECK(sub_rank == sub_host->rank() && sub_size == sub_host->size(),
               "NCCL and host sub-communicators disagree on ranks");
    cudaStream_t stream = stream_;
    if (own_stream_)
      cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                 "cudaStreamCreateWithFlags");
    return std::make_unique<NcclCommunicator>(
        std::move(sub_host), sub, device_, stream, own_stream_, timeout_s_,
        name_ + "/split(color=" + std::to_string(color) + ")");
  }

  void all_reduce_host(std::vector<double>& values, ReduceOp op) override {
    check_usable();
    via_host([&] { host_->all_reduce_host(values, op); });
  }
  void all_reduce_host(std::vector<uint64_t>& values, ReduceOp op) override {
    check_usable();
    via_host([&] { host_->all_reduce_host(values, op); });
  }
  using Communicator::all_gather_host;
  std::vector<uint64_t> all_gather_host(const std::vector<uint64_t>& values) override {
    check_usable();
    std::vector<uint64_t> out;
    via_host([&] { out = host_->all_gather_host(values); });
    return out;
  }
  void broadcast_host(void* data, size_t bytes, int root) override {
    check_usable();
    via_host([&] { host_->broadcast_host(data, bytes, root); });
  }

 private:
  void check_usable() const {
    if (broken_)
      throw Error("communicator " + name() + " is unusable after an earlier collective failed " +
                  "on rank " + std::to_string(rank_) + " of " + std::to_string(size_));
  }

  // Host calls keep the host communicator's timeout in step with ours and are accounted as
  // they were there.
  template <typename F>
  void via_host(F&& f) {
    host_->set_timeout_s(timeout_s_);
    const CommStats before = host_->stats();
    try {
      f();
    } catch (const CommTimeoutError&) {
      abort_comm();
      throw;
    }
    stats_ += host_->stats() - before;
  }

  void abort_comm() {
    broken_ = true;
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  [[noreturn]] void timed_out(const char* what, size_t bytes) {
    abort_comm();
    throw CommTimeoutError("collective " + std::string(what) + " (" + std::to_string(bytes) +
                           " bytes) did not complete within " + format_seconds(timeout_s_) +
                           " s on rank " + std::to_string(rank_) + " of " + std::to_string(size_) +
                           " [" + name() + "]: a peer is dead or stuck");
  }

  [[noreturn]] void failed(const char* what, const std::string& why) {
    abort_comm();
    throw Error("collective " + std::string(what) + " on rank " + std::to_string(rank_) + " of " +
                std::to_string(size_) + " [" + name() + "] failed: " + why);
  }

  // Non-blocking communicators: wait until `comm` has left ncclInProgress.
  void wait_ready(ncclComm_t comm, const char* what, size_t bytes, Clock::time_point deadline) {
    Backoff backoff;
    for (;;) {
      ncclResult_t state = ncclSuccess;
      ncclResult_t r = ncclCommGetAsyncError(comm, &state);
      if (r != ncclSuccess) failed(what, nccl_text(r, comm));
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) failed(what, nccl_text(state, comm));
      if (timeout_s_ > 0 && Clock::now() >= deadline) timed_out(what, bytes);
      backoff.pause();
    }
  }

  // Wait for the stream to drain, watching NCCL's asynchronous errors meanwhile.
  void wait_stream(const char* what, size_t bytes, Clock::time_point deadline) {
    Backoff backoff;
    for (;;) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) failed(what, cuda_text(q));
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) failed(what, nccl_text(state, comm_));
      if (timeout_s_ > 0 && Clock::now() >= deadline) timed_out(what, bytes);
      backoff.pause();
    }
  }

  template <typename Enqueue>
  void run(const char* what, CommKind kind, size_t bytes, int root, Enqueue enqueue) {
    check_usable();
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    // Our own stream knows nothing of the backend's work: let it finish first.
    if (own_stream_) cuda_check(cudaDeviceSynchronize(), std::string(what) + ": device sync");
    const auto t0 = Clock::now();
    const auto deadline = deadline_after(timeout_s_);
    const ncclResult_t r = enqueue();
    if (r != ncclSuccess && r != ncclInProgress) failed(what, nccl_text(r, comm_));
    wait_ready(comm_, what, bytes, deadline);
    wait_stream(what, bytes, deadline);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    stats_.account(kind, bytes, size_, rank_, root, secs);
  }

  // A started collective: enqueued on stream_ (the communicator's own stream unless the
  // caller supplied one), followed by an event that test() queries and wait() polls.
  class Request final : public CommRequest {
   public:
    Request(NcclCommunicator& comm, const char* what, CommKind kind, size_t bytes,
            Clock::time_point t0, cudaEvent_t event)
        : comm_(comm),
          what_(what),
          kind_(kind),
          bytes_(bytes),
          event_(event),
          seconds_(since(t0)) {}
    ~Request() override {
      // Still in flight: the ranks' sequences of collectives no longer match.
      if (!done_ && !failed_) comm_.abort_comm();
      if (event_) cudaEventDestroy(event_);
    }

    bool test() override {
      if (done_) return true;
      check_not_failed();
      const auto t0 = Clock::now();
      guard([&] {
        const bool done = comm_.event_done(event_, what_);
        seconds_ += since(t0);
        if (done) complete();
      });
      return done_;
    }

    void wait() override {
      if (done_) return;
      check_not_failed();
      const auto t0 = Clock::now();
      const auto deadline = deadline_after(comm_.timeout_s_);
      Backoff backoff;
      guard([&] {
        while (!comm_.event_done(event_, what_)) {
          if (comm_.timeout_s_ > 0 && Clock::now() >= deadline) comm_.timed_out(what_, bytes_);
          backoff.pause();
        }
        seconds_ += since(t0);
        complete();
      });
    }

    bool done() const override { return done_; }

   private:
    template <typename F>
    void guard(F&& f) {
      try {
        f();
      } catch (...) {
        failed_ = true;  // the communicator aborted itself
        throw;
      }
    }
    void check_not_failed() const {
      if (failed_)
        throw Error("collective " + std::string(what_) + " on " + comm_.name() +
                    " failed or timed out earlier");
    }
    static double since(Clock::time_point t0) {
      return std::chrono::duration<double>(Clock::now() - t0).count();
    }
    // Accounted: the time this rank spent in the calls (start, tests, wait), like a blocking
    // call's time; the computation the collective overlapped is not communication time.
    void complete() {
      comm_.stats_.account(kind_, bytes_, comm_.size_, comm_.rank_, 0, seconds_);
      done_ = true;
    }

    NcclCommunicator& comm_;
    const char* what_;
    CommKind kind_;
    size_t bytes_;
    cudaEvent_t event_ = nullptr;
    double seconds_ = 0.0;  // spent in this request's calls so far
    bool done_ = false, failed_ = false;
  };

  // Enqueues like run() but returns at once with a request on an event recorded after the
  // collective. With the communicator's own stream the collective runs beside the backend's
  // compute stream: that is the overlap. (A caller-supplied stream serialises it with the
  // caller's work instead; still correct.)
  template <typename Enqueue>
  std::unique_ptr<CommRequest> start(const char* what, CommKind kind, size_t bytes,
                                     Enqueue enqueue) {
    check_usable();
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    // The buffer was written by the backend's stream: let that work finish first (as run()).
    if (own_stream_) cuda_check(cudaDeviceSynchronize(), std::string(what) + ": device sync");
    const auto t0 = Clock::now();
    const auto deadline = deadline_after(timeout_s_);
    const ncclResult_t r = enqueue();
    if (r != ncclSuccess && r != ncclInProgress) failed(what, nccl_text(r, comm_));
    wait_ready(comm_, what, bytes, deadline);  // enqueued (not completed)
    cudaEvent_t event = nullptr;
    cuda_check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
    const cudaError_t e = cudaEventRecord(event, stream_);
    if (e != cudaSuccess) {
      cudaEventDestroy(event);
      failed(what, cuda_text(e));
    }
    return std::make_unique<Request>(*this, what, kind, bytes, t0, event);
  }

  // True once `event` has completed; throws on a CUDA or NCCL error (aborting the
  // communicator).
  bool event_done(cudaEvent_t event, const char* what) {
    check_usable();
    const cudaError_t q = cudaEventQuery(event);
    if (q == cudaSuccess) return true;
    if (q != cudaErrorNotReady) failed(what, cuda_text(q));
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm_, &state);
    if (state != ncclSuccess && state != ncclInProgress) failed(what, nccl_text(state, comm_));
    return false;
  }

  std::unique_ptr<Communicator> host_;
  ncclComm_t comm_ = nullptr;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  bool own_stream_ = false;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  bool broken_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host, int device,
                                                     double timeout_s, void* cuda_stream) {
  LOCO_CHECK(host != nullptr, "make_nccl_communicator needs a host communicator");
  host->set_timeout_s(timeout_s);
  const int rank = host->rank(), size = host->size();

  // Every rank learns whether every other rank could select its GPU before anyone enters
  // NCCL (a rank that fails alone would leave the others waiting in ncclCommInitRank).
  const cudaError_t selected = cudaSetDevice(device);
  const std::string select_error =
      selected == cudaSuccess
          ? std::string()
          : "cudaSetDevice(" + std::to_string(device) + "): " + cuda_text(selected);
  const std::vector<uint64_t> ok = host->all_gather_host(select_error.empty() ? 1 : 0);
  std::string bad;
  for (int r = 0; r < size; ++r)
    if (!ok[size_t(r)]) bad += (bad.empty() ? "" : ", ") + std::to_string(r);
  if (!bad.empty())
    throw Error("NCCL bootstrap [" + host->name() + "]: rank(s) " + bad + " of " +
                std::to_string(size) + " cannot use their GPU" +
                (select_error.empty() ? "" : " (this rank: " + select_error + ")"));

  // Rank 0's unique id (and whether it got one) to everyone.
  struct {
    int32_t ok;
    ncclUniqueId id;
  } boot{};
  std::string id_error;
  if (rank == 0) {
    const ncclResult_t r = ncclGetUniqueId(&boot.id);
    boot.ok = r == ncclSuccess;
    if (!boot.ok) id_error = nccl_text(r, nullptr);
  }
  host->broadcast_host(&boot, sizeof boot, 0);
  if (!boot.ok)
    throw Error("NCCL bootstrap: ncclGetUniqueId failed on rank 0" +
                (id_error.empty() ? std::string() : ": " + id_error));

  cudaStream_t stream = static_cast<cudaStream_t>(cuda_stream);
  const bool own_stream = stream == nullptr;
  if (own_stream)
    cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
               "cudaStreamCreateWithFlags");

  ncclConfig_t config = nonblocking_config();
  ncclComm_t comm = nullptr;
  const auto deadline = deadline_after(timeout_s);
  ncclResult_t r = ncclCommInitRankConfig(&comm, size, boot.id, rank, &config);
  Backoff backoff;
  while (r == ncclInProgress) {
    if (timeout_s > 0 && Clock::now() >= deadline) {
      ncclCommAbort(comm);
      if (own_stream) cudaStreamDestroy(stream);
      throw CommTimeoutError("NCCL initialisation did not complete within " +
                             format_seconds(timeout_s) + " s on rank " + std::to_string(rank) +
                             " of " + std::to_string(size) + ": a peer is dead or stuck");
    }
    backoff.pause();
    ncclResult_t state = ncclInProgress;
    const ncclResult_t q = ncclCommGetAsyncError(comm, &state);
    r = q != ncclSuccess ? q : state;
  }
  if (r != ncclSuccess) {
    const std::string why = nccl_text(r, comm);
    if (comm) ncclCommAbort(comm);
    if (own_stream) cudaStreamDestroy(stream);
    throw Error("NCCL initialisation failed on rank " + std::to_string(rank) + " of " +
                std::to_string(size) + " [" + host->name() + "] (GPU " + std::to_string(device) +
                "): " + why);
  }
  std::string name = host->name();  // "mpi:world" -> "world"
  if (name.rfind("mpi:", 0) == 0) name = name.substr(4);
  return std::make_unique<NcclCommunicator>(std::move(host), comm, device, stream, own_stream,
                                            timeout_s, name);
}

std::unique_ptr<Communicator> make_nccl_world(double timeout_s, int device, void* cuda_stream) {
  return make_nccl_communicator(make_mpi_world(timeout_s), device, timeout_s, cuda_stream);
}

}  // namespace loco
