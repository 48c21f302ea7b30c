// The communication layer: a group of ranks that run collectives together.
//
// Implementations (a run's communicators are built in one place: loco/runtime/runtime.hpp):
//  - MPI (make_mpi_world, below): host buffers. The CPU backend's Bufs are host memory.
//  - NCCL (loco/dist/nccl_communicator.hpp, CUDA builds only): device buffers; small host
//    reductions go over the MPI communicator it was bootstrapped from.
//  - Host-staged MPI (loco/dist/host_staged.hpp): device buffers copied through page-locked
//    host memory and sent over MPI (distributed.outer.transport = "mpi" on CUDA).
//  - Decorators: the simulated slow link (loco/dist/simulated_link.hpp).
//
// Semantics shared by every implementation:
//  - Every rank of the communicator makes the same calls in the same order with the same
//    sizes (the MPI rule). Calls block until the result is in place.
//  - Every call is bounded by timeout_s(): when it does not complete in time the call throws
//    CommTimeoutError ("collective all_reduce (N bytes) did not complete within T s on rank R
//    of K [name]: a peer is dead or stuck"). The communicator is then unusable (every later
//    call throws) and the buffers of the abandoned call may still be written by the transport
//    if the missing peer turns up: the caller's only sound move is to report and
//    abort_world(). timeout_s <= 0 waits forever.
//  - Every call is accounted in stats() (loco/dist/comm_stats.hpp for the formulas).
//  - Not thread-safe: one thread drives a communicator.
//
// Started (non-blocking) collectives, for overlapping communication with computation
// (Streaming DiLoCo, docs/algorithms.md §7): start_all_reduce / start_all_gather return a
// CommRequest. Same rules as the blocking calls (same order on every rank — a started call
// counts at its start — same sizes, same accounting), plus:
//  - the buffers belong to the transport until the request completes: do not read or write
//    them, do not free them;
//  - test() makes progress (MPI moves data only inside MPI calls) and says whether it is done;
//    wait() blocks until done, bounded by timeout_s() counted from the wait() call (peers may
//    legitimately be busy computing until then), throwing CommTimeoutError like the blocking
//    calls; the communicator is then unusable;
//  - the bytes are accounted at completion, exactly as the blocking call would account them;
//    the seconds are those this rank spent inside the calls (start, test()s, wait()), not the
//    computation the collective overlapped;
//  - a request must not outlive its communicator. Destroying one still in flight abandons it:
//    the communicator becomes unusable (the ranks' collective sequences no longer match).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loco/core/buffer.hpp"
#include "loco/core/error.hpp"
#include "loco/dist/comm_stats.hpp"

namespace loco {

enum class ReduceOp : uint8_t { Sum, Mean, Max, Min };
const char* reduce_op_name(ReduceOp op);  // "sum", "mean", "max", "min"

// Thrown when a collective does not complete within the communicator's timeout.
class CommTimeoutError : public Error {
 public:
  using Error::Error;
};

// Thrown when the transport itself reports a failure (an MPI call that returned an error,
// e.g. a peer's connection closed because its process died).
class CommFailureError : public Error {
 public:
  using Error::Error;
};

// A started collective (see above), owned by the caller.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  CommRequest() = default;
  CommRequest(const CommRequest&) = delete;
  CommRequest& operator=(const CommRequest&) = delete;
  // Progress without blocking; true once the result is in place (and stays true).
  virtual bool test() = 0;
  // Blocks until complete or throws CommTimeoutError after the communicator's timeout.
  virtual void wait() = 0;
  virtual bool done() const = 0;
};

class Communicator {
 public:
  explicit Communicator(double timeout_s) : timeout_s_(timeout_s) {}
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // For messages: "mpi:world", "mpi:world/split(color=1)", "nccl:world", ...
  virtual std::string name() const = 0;
  // Which memory the buffer collectives take: MPI host memory, NCCL memory of the current
  // CUDA device, a host-staged MPI communicator both (loco/dist/host_staged.hpp). A buffer in
  // a memory space the communicator does not take is refused with an error naming the
  // collective, the communicator and the space: it is never dereferenced.
  virtual bool accepts(MemSpace space) const = 0;

  double timeout_s() const { return timeout_s_; }
  void set_timeout_s(double seconds) { timeout_s_ = seconds; }

  // ---------------------------------------------------------------- buffer collectives
  // The public calls check their arguments (memory space, dtypes, sizes) once, here, then run
  // the transport's do_* implementation.
  //
  // In place over every rank's `buf`. F32 and BF16 take every op; I32 takes Sum/Max/Min; U8
  // (bytes) is refused.
  // Mean = Sum, then divided by size() (fp32 arithmetic, one rounding for BF16).
  // BF16 travels as bf16 on both transports: each partial sum is computed in fp32 and
  // rounded to bf16 (as NCCL does), so wire bytes are 2 per element.
  void all_reduce(Buf buf, ReduceOp op);

  // Fixed-size pieces: every rank contributes `send_piece`; recv_all (same dtype, size() times
  // the elements) receives size() pieces in rank order (rank r's at element r*send.numel).
  // send_piece may be the rank's own slot inside recv_all. Used for packed (sparse /
  // quantised) payloads: U8 for bytes (host_bytes()), I32 words on devices.
  void all_gather(Buf send_piece, Buf recv_all);

  // Started forms of all_reduce and all_gather: same semantics and accounting, the result is
  // in place once the request completes.
  std::unique_ptr<CommRequest> start_all_reduce(Buf buf, ReduceOp op);
  std::unique_ptr<CommRequest> start_all_gather(Buf send_piece, Buf recv_all);

  // `buf` from `root` into every rank's `buf`.
  void broadcast(Buf buf, int root);

  virtual void barrier() = 0;

  // Sub-groups: ranks that pass the same color form one communicator, ordered by key (ties
  // by rank in this communicator). color < 0: this rank joins no group and gets nullptr.
  // Collective over this communicator. The child inherits the timeout and has its own stats.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // ---------------------------------------------------------------- small host collectives
  // Always host memory, whatever accepts() says.
  virtual void all_reduce_host(std::vector<double>& values, ReduceOp op) = 0;
  // Sum / Max / Min (Mean throws: integer division would hide a remainder).
  virtual void all_reduce_host(std::vector<uint64_t>& values, ReduceOp op) = 0;
  // Every rank's values, in rank order: each rank passes the same number n of values and gets
  // size()·n back, rank r's at [r·n, r·n + n) (e.g. parameter hashes with flags: name the ranks
  // that differ; several small facts in one exchange).
  virtual std::vector<uint64_t> all_gather_host(const std::vector<uint64_t>& values) = 0;
  std::vector<uint64_t> all_gather_host(uint64_t value) {
    return all_gather_host(std::vector<uint64_t>{value});
  }
  virtual void broadcast_host(void* data, size_t bytes, int root) = 0;

  double all_reduce_host(double value, ReduceOp op) {
    std::vector<double> v{value};
    all_reduce_host(v, op);
    return v[0];
  }

  // ---------------------------------------------------------------- accounting
  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_.reset(); }

 protected:
  // The transport's collectives, called with checked arguments (see the public calls).
  // Decorators forward to the wrapped communicator's public calls.
  virtual void do_all_reduce(Buf buf, ReduceOp op) = 0;
  virtual void do_all_gather(Buf send_piece, Buf recv_all) = 0;
  virtual void do_broadcast(Buf buf, int root) = 0;
  // The default runs the blocking call and returns a completed request (a transport without
  // a non-blocking path still works).
  virtual std::unique_ptr<CommRequest> do_start_all_reduce(Buf buf, ReduceOp op);
  virtual std::unique_ptr<CommRequest> do_start_all_gather(Buf send_piece, Buf recv_all);

  CommStats stats_;
  double timeout_s_;

 private:
  // Throws loco::Error when `buf` is in a memory space this communicator does not take.
  void check_space(const char* collective, const char* what, Buf buf) const;
  void check_gather(const char* collective, Buf send_piece, Buf recv_all) const;
  void check_reducible(Buf buf, ReduceOp op) const;
};

// Ranks (in rank order) whose value differs from the most common one; empty when all agree.
std::vector<int> mismatching_ranks(const std::vector<uint64_t>& per_rank);

// ------------------------------------------------------------------ MPI

// MPI for the process's lifetime. Initialises MPI (MPI_Init_thread, MPI_THREAD_SERIALIZED
// requested) unless something already did, and finalises only what it initialised. A plain
// `./loco` without mpirun runs as a 1-rank world (Open MPI singleton).
class MpiRuntime {
 public:
  MpiRuntime(int* argc = nullptr, char*** argv = nullptr);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;
  int thread_level() const { return thread_level_; }  // the MPI_THREAD_* provided
  bool initialised_here() const { return initialised_here_; }

 private:
  bool initialised_here_ = false;
  int thread_level_ = 0;
};

// A communicator over a private duplicate of MPI_COMM_WORLD (its traffic never matches the
// caller's own MPI calls). Requires MPI to be initialised. Host buffers.
std::unique_ptr<Communicator> make_mpi_world(double timeout_s);

// Where this process runs. A node is what MPI calls one shared-memory domain
// (MPI_COMM_TYPE_SHARED): on a cluster a machine, under scripts/netns-cluster.sh one emulated
// node. Computed once; the first call is collective over MPI_COMM_WORLD (every rank must make
// it). Without MPI initialised: OMPI_COMM_WORLD_LOCAL_RANK / SLURM_LOCALID, else rank 0 of 1.
struct NodeInfo {
  std::string host;    // MPI_Get_processor_name (the host name)
  int index = 0;       // which node, 0..count-1, ordered by the nodes' lowest world rank
  int count = 1;       // nodes in the job
  int local_rank = 0;  // this rank's index among the ranks of its node (picks its GPU)
  int local_size = 1;  // ranks on this node
};
const NodeInfo& node_info();
int node_local_rank();  // node_info().local_rank
int node_local_size();  // node_info().local_size

// MPI_Abort(MPI_COMM_WORLD, code): ends every rank of the job, e.g. after a CommTimeoutError.
[[noreturn]] void abort_world(int code);

}  // namespace loco
