// Which training windows each replica read, for checking the data guarantees of a run
// (no window read twice, none skipped, also across elastic restarts).
//
// With the environment variable LOCO_DATA_TRACE=<dir>, the first rank of every replica
// appends one line per window it reads to <dir>/windows-<replica key>-<pid>.txt:
//
//   <step> <epoch> <slot> <first token> <replica> <replicas>
//
// (step: the 1-based step the window is read for; slot: the window's index in the epoch's
// shuffled order; loco/data/stream.hpp). With a mixture of sources (data.train as a list)
// each line has two more fields, `<source> <deck slot>`, and epoch, slot and first token are
// the source's. Lines are flushed at the end of every step, so a
// killed run leaves whole lines of the steps it finished. Meant for tests and audits; it
// costs a line of text per window.
#pragma once
#include <cstdio>
#include <memory>
#include <string>

#include "loco/data/stream.hpp"

namespace loco {

class DataTrace {
 public:
  // nullptr unless LOCO_DATA_TRACE is set (and this rank is its replica's first).
  static std::unique_ptr<DataTrace> from_environment(const std::string& replica_key, int replica,
                                                     int replicas, bool first_rank_of_replica);
  ~DataTrace();
  DataTrace(const DataTrace&) = delete;
  DataTrace& operator=(const DataTrace&) = delete;

  // Hooks the trace into `stream`; `step` (0-based index of the running step) is read at
  // every window.
  void attach(TokenStream& stream, const int& step);
  void end_of_step();  // flushes

 private:
  DataTrace(std::FILE* file, int replica, int replicas);
  std::FILE* file_;
  int replica_, replicas_;
};

}  // namespace loco
