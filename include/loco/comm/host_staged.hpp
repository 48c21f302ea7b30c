// A host communicator (MPI) that also takes device buffers, by copying them through
// page-locked host memory: distributed.outer.transport = "mpi" with the CUDA backend. The outer
// sync then goes over MPI (TCP across nodes, as many DiLoCo deployments over slow links do)
// and needs no NCCL communicator, so several ranks may share one GPU.
//
// Semantics (those of loco::Communicator; the wrapped communicator does the work):
//  - host buffers go straight to the wrapped communicator;
//  - device buffers: the backend downloads them into staging memory (Backend::alloc_host),
//    the wrapped collective runs on the staging, the result is uploaded back. all_gather
//    downloads the send piece and uploads every received piece; broadcast downloads on every
//    rank (only the root's bytes matter) and uploads the result;
//  - started collectives download at the start and upload at completion (the test() that
//    returns true, or wait()), so the device buffer holds the result once the request is done;
//  - stats() are the wrapped communicator's: the same calls and bytes as MPI on host buffers
//    (the copies are not communication);
//  - split() stages the child through the same backend.
#pragma once
#include <memory>

#include "loco/backend/backend.hpp"
#include "loco/comm/communicator.hpp"

namespace loco {

// `backend` must outlive the communicator. Throws when `host` does not take host memory.
std::unique_ptr<Communicator> make_host_staged_communicator(std::unique_ptr<Communicator> host,
                                                            Backend& backend);

}  // namespace loco
