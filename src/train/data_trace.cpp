// The training-window trace: see include/loco/train/data_trace.hpp.
#include "loco/train/data_trace.hpp"

#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdlib>
#include <cstring>

#include "loco/core/error.hpp"
#include "loco/core/files.hpp"

namespace loco {

std::unique_ptr<DataTrace> DataTrace::from_environment(const std::string& replica_key, int replica,
                                                       int replicas, bool first_rank_of_replica) {
  const char* dir = std::getenv("LOCO_DATA_TRACE");
  if (dir == nullptr || *dir == '\0' || !first_rank_of_replica) return nullptr;
  make_directories(dir);
  std::string key = replica_key;
  for (char& c : key)
    if (c == '/' || c == ' ') c = '_';
  const std::string path =
      std::string(dir) + "/windows-" + key + "-" + std::to_string(::getpid()) + ".txt";
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (f == nullptr)
    throw Error("LOCO_DATA_TRACE: cannot open " + path + ": " + std::strerror(errno));
  return std::unique_ptr<DataTrace>(new DataTrace(f, replica, replicas));
}

DataTrace::DataTrace(std::FILE* file, int replica, int replicas)
    : file_(file), replica_(replica), replicas_(replicas) {}

DataTrace::~DataTrace() { std::fclose(file_); }

void DataTrace::attach(TokenStream& stream, const int& step) {
  stream.set_window_observer([this, &step](const WindowRead& w) {
    if (w.source < 0)
      std::fprintf(file_, "%d %" PRIu64 " %" PRIu64 " %" PRIu64 " %d %d\n", step + 1, w.epoch,
                   w.slot, w.first_token, replica_, replicas_);
    else  // a mixture: the source, and the slot of the mixture's deck
      std::fprintf(file_, "%d %" PRIu64 " %" PRIu64 " %" PRIu64 " %d %d %d %" PRIu64 "\n", step + 1,
                   w.epoch, w.slot, w.first_token, replica_, replicas_, w.source, w.deck_slot);
  });
}

void DataTrace::end_of_step() { std::fflush(file_); }

}  // namespace loco
