// NCCL communicator on device buffers (CUDA builds only: defined when LOCO_HAVE_CUDA).
//
// Bootstrap: over a host communicator (an MPI group): each rank selects the GPU it was given
// (the runtime picks one per rank: loco/runtime/runtime.hpp), rank 0 creates the NCCL unique
// id, the host communicator broadcasts it, and every rank joins with ncclCommInitRankConfig in
// non-blocking mode. Every group (world, replica, outer-sync) gets its own NCCL communicator
// this way. NCCL itself refuses two ranks of one communicator on the same GPU.
//
// Timeouts: NCCL calls are non-blocking (config.blocking = 0); the communicator polls
// ncclCommGetAsyncError and cudaStreamQuery against a deadline. On expiry it calls
// ncclCommAbort (which releases the GPU from the stuck kernel) and throws CommTimeoutError;
// the communicator is unusable afterwards, as with MPI.
//
// Streams: collectives run on `stream` when one is given (a cudaStream_t passed as void*,
// e.g. the backend's compute stream: ordering with the kernels that produced the data is
// then free). With nullptr the communicator owns a stream and synchronizes the device before
// each collective, so any pending backend work on any stream is complete first. Either way
// each call returns when its result is in device memory.
//
// Host-side calls (all_reduce_host, all_gather_host, broadcast_host, barrier) go over the
// host communicator. Accounting is the same as MPI's (comm_stats.hpp).
#pragma once
#include <memory>

#include "loco/comm/communicator.hpp"

namespace loco {

// Takes ownership of `host` (kept for bootstrap, host collectives and split). Collective over
// `host`. `device`: this rank's CUDA device. Throws loco::Error when a rank cannot select its
// device or NCCL fails to initialise within timeout_s (every rank throws).
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host, int device,
                                                     double timeout_s, void* cuda_stream = nullptr);

// make_nccl_communicator(make_mpi_world(timeout_s), device, timeout_s, cuda_stream).
std::unique_ptr<Communicator> make_nccl_world(double timeout_s, int device = 0,
                                              void* cuda_stream = nullptr);

}  // namespace loco
