// A stand-in for NCCL, for the CPU emulator (tests/emu/, scripts/emu-check.sh): NCCL's API and
// semantics as loco uses them, implemented over MPI on host memory (the emulator's "device"
// memory is host memory). It lets `mpirun -np K loco train` with backend "cuda" run its real
// NCCL path on a machine without a GPU.
//
//  - ncclGetUniqueId: the id names its creator (world rank) and a serial number.
//  - ncclCommInitRank / ncclCommInitRankConfig: a rendezvous at the creator over
//    MPI_COMM_WORLD point-to-point (tags from the serial, so concurrent inits do not mix):
//    every member sends its NCCL rank, world rank, host and current device; the creator
//    answers with the member list, or with an error when two members sit on one GPU of one
//    host (NCCL's "Duplicate GPU detected"); then MPI_Comm_create_group over the members, in
//    NCCL rank order. Non-blocking configs complete at once (the state is ncclSuccess).
//  - ncclAllReduce, ncclAllGather, ncclBroadcast: run at once ("streams" are synchronous in
//    the emulator). All-reduce gathers every rank's contribution and combines them in rank
//    order, so every rank gets bitwise the same result; bf16 partial sums are rounded to bf16
//    after each combine (fp32 arithmetic), avg divides the sum by the size in fp32.
//  - ncclGroupStart/End: counted; the calls inside already ran in order.
//  - ncclCommGetAsyncError: ncclSuccess (nothing runs asynchronously); ncclCommAbort marks
//    the communicator dead without freeing it (a peer may be gone); ncclCommDestroy frees it.
//
// Every call is counted per function, with the bytes each collective was handed. With
// LOCO_NCCL_STANDIN_LOG=DIR set, each process writes DIR/nccl-rank-<world rank>.json at exit:
// {"calls": {"ncclAllReduce": n, ...}, "bytes": {"ncclAllReduce": b, ...},
//  "communicators": [{"size", "rank"}...]}. Tests read these to prove that model traffic took
// the NCCL path.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, size = 1, device = 0;
  bool aborted = false;
  std::string last_error;
};

namespace {

constexpr char kMagic[8] = "LOCOEMU";
constexpr int kTagBase = 23000;

struct IdFields {
  char magic[8];
  int creator;  // world rank
  int serial;
};
static_assert(sizeof(IdFields) <= sizeof(ncclUniqueId), "id too small");

struct Member {
  int nccl_rank, world_rank, device;
  char host[64];
};

std::string g_last_error;

struct Counts {
  std::map<std::string, long long> calls, bytes;
  std::vector<std::pair<int, int>> comms;  // (size, rank) of each communicator made
  int world_rank = -1;
  ~Counts() { write(); }
  void write() const {
    const char* dir = std::getenv("LOCO_NCCL_STANDIN_LOG");
    if (!dir || !*dir || world_rank < 0) return;
    const std::string path =
        std::string(dir) + "/nccl-rank-" + std::to_string(world_rank) + ".json";
    FILE* f = std::fopen(path.c_str(), "w");
    if (!f) return;
    auto dump = [&](const char* key, const std::map<std::string, long long>& m) {
      std::fprintf(f, "\"%s\": {", key);
      bool first = true;
      for (const auto& [k, v] : m) {
        std::fprintf(f, "%s\"%s\": %lld", first ? "" : ", ", k.c_str(), v);
        first = false;
      }
      std::fprintf(f, "}");
    };
    std::fprintf(f, "{");
    dump("calls", calls);
    std::fprintf(f, ", ");
    dump("bytes", bytes);
    std::fprintf(f, ", \"communicators\": [");
    for (size_t i = 0; i < comms.size(); ++i)
      std::fprintf(f, "%s{\"size\": %d, \"rank\": %d}", i ? ", " : "", comms[i].first,
                   comms[i].second);
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
};
Counts g_counts;

void count(const char* fn, long long bytes = 0) {
  if (g_counts.world_rank < 0) {
    int init = 0;
    MPI_Initialized(&init);
    if (init) MPI_Comm_rank(MPI_COMM_WORLD, &g_counts.world_rank);
  }
  g_counts.calls[fn] += 1;
  g_counts.bytes[fn] += bytes;
}

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8:
      return 1;
    case ncclFloat16:
    case ncclBfloat16:
      return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
      return 8;
    default:
      return 0;
  }
}

ncclResult_t fail(ncclComm* comm, ncclResult_t r, const std::string& why) {
  g_last_error = why;
  if (comm) comm->last_error = why;
  return r;
}

bool usable(ncclComm* comm) { return comm && !comm->aborted && comm->mpi != MPI_COMM_NULL; }

// Combine b into a (a = a op b), element type T read/written as float.
template <typename Load, typename Store>
void combine(void* acc, const void* in, size_t n, ncclRedOp_t op, Load load, Store store) {
  for (size_t i = 0; i < n; ++i) {
    const float x = load(acc, i), y = load(in, i);
    float r = x + y;
    if (op == ncclMax) r = std::fmax(x, y);
    if (op == ncclMin) r = std::fmin(x, y);
    if (op == ncclProd) r = x * y;
    store(acc, i, r);
  }
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess:
      return "no error";
    case ncclInvalidUsage:
      return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidArgument:
      return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInProgress:
      return "NCCL operation in progress";
    default:
      return "internal error (emulated NCCL stand-in)";
  }
}

const char* ncclGetLastError(ncclComm_t comm) {
  if (comm && !comm->last_error.empty()) return comm->last_error.c_str();
  return g_last_error.c_str();
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  static int serial = 0;
  count("ncclGetUniqueId");
  std::memset(id, 0, sizeof *id);
  IdFields f{};
  std::memcpy(f.magic, kMagic, sizeof kMagic);
  MPI_Comm_rank(MPI_COMM_WORLD, &f.creator);
  f.serial = ++serial;
  std::memcpy(id->internal, &f, sizeof f);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* out, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t*) {
  count("ncclCommInitRank");
  *out = nullptr;
  IdFields f{};
  std::memcpy(&f, id.internal, sizeof f);
  if (std::memcmp(f.magic, kMagic, sizeof kMagic) != 0 || nranks < 1 || rank < 0 || rank >= nranks)
    return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: bad unique id, nranks or rank");
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  const int tag = kTagBase + f.serial % 4096;
  Member me{};
  me.nccl_rank = rank;
  me.world_rank = world_rank;
  cudaGetDevice(&me.device);
  int len = 0;
  char host[MPI_MAX_PROCESSOR_NAME] = {};
  MPI_Get_processor_name(host, &len);
  std::strncpy(me.host, host, sizeof me.host - 1);

  // members[r] = NCCL rank r; the creator collects and answers. Message: an int flag
  // (0 ok, else the two clashing NCCL ranks follow) and the members.
  std::vector<Member> members(static_cast<size_t>(nranks));
  std::vector<int> verdict(3, 0);
  if (world_rank == f.creator) {
    members[size_t(rank)] = me;
    for (int i = 1; i < nranks; ++i) {
      Member m{};
      MPI_Recv(&m, sizeof m, MPI_BYTE, MPI_ANY_SOURCE, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      members[size_t(m.nccl_rank)] = m;
    }
    for (int a = 0; a < nranks && !verdict[0]; ++a)
      for (int b = a + 1; b < nranks && !verdict[0]; ++b)
        if (members[size_t(a)].device == members[size_t(b)].device &&
            std::strcmp(members[size_t(a)].host, members[size_t(b)].host) == 0)
          verdict = {1, a, b};
    for (int i = 0; i < nranks; ++i) {
      if (i == rank) continue;
      MPI_Send(verdict.data(), 3, MPI_INT, members[size_t(i)].world_rank, tag, MPI_COMM_WORLD);
      MPI_Send(members.data(), int(sizeof(Member) * members.size()), MPI_BYTE,
               members[size_t(i)].world_rank, tag, MPI_COMM_WORLD);
    }
  } else {
    MPI_Send(&me, sizeof me, MPI_BYTE, f.creator, tag, MPI_COMM_WORLD);
    MPI_Recv(verdict.data(), 3, MPI_INT, f.creator, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Recv(members.data(), int(sizeof(Member) * members.size()), MPI_BYTE, f.creator, tag,
             MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
  if (verdict[0])
    return fail(nullptr, ncclInvalidUsage,
                "Duplicate GPU detected : rank " + std::to_string(verdict[1]) + " and rank " +
                    std::to_string(verdict[2]) + " both on CUDA device " +
                    std::to_string(members[size_t(verdict[1])].device));

  MPI_Group world_group = MPI_GROUP_NULL, group = MPI_GROUP_NULL;
  MPI_Comm_group(MPI_COMM_WORLD, &world_group);
  std::vector<int> ranks(static_cast<size_t>(nranks));
  for (int i = 0; i < nranks; ++i) ranks[size_t(i)] = members[size_t(i)].world_rank;
  MPI_Group_incl(world_group, nranks, ranks.data(), &group);
  auto* comm = new ncclComm;
  if (MPI_Comm_create_group(MPI_COMM_WORLD, group, tag, &comm->mpi) != MPI_SUCCESS) {
    delete comm;
    return fail(nullptr, ncclSystemError, "MPI_Comm_create_group failed");
  }
  MPI_Group_free(&group);
  MPI_Group_free(&world_group);
  comm->rank = rank;
  comm->size = nranks;
  comm->device = me.device;
  g_counts.comms.emplace_back(nranks, rank);
  *out = comm;
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  return ncclCommInitRankConfig(comm, nranks, id, rank, nullptr);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* state) {
  *state = comm && comm->aborted ? ncclRemoteError : ncclSuccess;
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
  count("ncclCommFinalize");
  return usable(comm) ? ncclSuccess : ncclInvalidArgument;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  count("ncclCommDestroy");
  if (!comm) return ncclInvalidArgument;
  if (comm->mpi != MPI_COMM_NULL) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Comm_free(&comm->mpi);
  }
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  count("ncclCommAbort");
  if (comm) comm->aborted = true;  // leaked on purpose: a peer may never arrive
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* n) {
  *n = comm->size;
  return ncclSuccess;
}
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* r) {
  *r = comm->rank;
  return ncclSuccess;
}
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* d) {
  *d = comm->device;
  return ncclSuccess;
}

ncclResult_t ncclCommSplit(ncclComm_t comm, int, int, ncclComm_t*, ncclConfig_t*) {
  count("ncclCommSplit");
  return fail(comm, ncclInvalidUsage,
              "ncclCommSplit is not emulated (loco makes one "
              "communicator per group with ncclCommInitRank)");
}

ncclResult_t ncclGroupStart() {
  count("ncclGroupStart");
  return ncclSuccess;
}
ncclResult_t ncclGroupEnd() {
  count("ncclGroupEnd");
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t n, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t) {
  const size_t es = type_size(type);
  count("ncclAllReduce", (long long)(n * es));
  if (!usable(comm)) return fail(comm, ncclInvalidUsage, "ncclAllReduce on an unusable comm");
  if (type != ncclFloat32 && type != ncclBfloat16 && type != ncclInt32)
    return fail(comm, ncclInvalidArgument, "ncclAllReduce: type not emulated");
  const size_t bytes = n * es;
  std::vector<unsigned char> all(bytes * size_t(comm->size));
  MPI_Allgather(send, int(bytes), MPI_BYTE, all.data(), int(bytes), MPI_BYTE, comm->mpi);
  std::vector<unsigned char> acc(all.begin(), all.begin() + std::ptrdiff_t(bytes));
  const ncclRedOp_t base = op == ncclAvg ? ncclSum : op;
  for (int r = 1; r < comm->size; ++r) {
    const void* in = all.data() + size_t(r) * bytes;
    if (type == ncclFloat32)
      combine(
          acc.data(), in, n, base,
          [](const void* p, size_t i) { return static_cast<const float*>(p)[i]; },
          [](void* p, size_t i, float v) { static_cast<float*>(p)[i] = v; });
    else if (type == ncclBfloat16)
      combine(
          acc.data(), in, n, base,
          [](const void* p, size_t i) {
            return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
          },
          [](void* p, size_t i, float v) {
            static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
          });
    else
      for (size_t i = 0; i < n; ++i) {
        int32_t& a = reinterpret_cast<int32_t*>(acc.data())[i];
        const int32_t b = static_cast<const int32_t*>(in)[i];
        a = base == ncclMax ? std::max(a, b) : base == ncclMin ? std::min(a, b) : a + b;
      }
  }
  if (op == ncclAvg) {
    const float k = float(comm->size);
    if (type == ncclFloat32)
      for (size_t i = 0; i < n; ++i) reinterpret_cast<float*>(acc.data())[i] /= k;
    else if (type == ncclBfloat16)
      for (size_t i = 0; i < n; ++i) {
        auto& v = reinterpret_cast<__nv_bfloat16*>(acc.data())[i];
        v = __float2bfloat16_rn(__bfloat162float(v) / k);
      }
    else
      return fail(comm, ncclInvalidArgument, "ncclAllReduce: avg of int32");
  }
  std::memcpy(recv, acc.data(), bytes);
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t n, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t) {
  const size_t bytes = n * type_size(type);
  count("ncclAllGather", (long long)bytes);
  if (!usable(comm)) return fail(comm, ncclInvalidUsage, "ncclAllGather on an unusable comm");
  const bool in_place = send == static_cast<char*>(recv) + size_t(comm->rank) * bytes;
  MPI_Allgather(in_place ? MPI_IN_PLACE : send, int(bytes), MPI_BYTE, recv, int(bytes), MPI_BYTE,
                comm->mpi);
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t n, ncclDataType_t type, int root,
                           ncclComm_t comm, cudaStream_t) {
  const size_t bytes = n * type_size(type);
  count("ncclBroadcast", (long long)bytes);
  if (!usable(comm)) return fail(comm, ncclInvalidUsage, "ncclBroadcast on an unusable comm");
  if (comm->rank == root && send != recv) std::memmove(recv, send, bytes);
  MPI_Bcast(recv, int(bytes), MPI_BYTE, root, comm->mpi);
  return ncclSuccess;
}

}  // extern "C"
