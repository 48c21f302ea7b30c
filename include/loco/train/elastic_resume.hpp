// Resuming from checkpoints written at outer syncs (loco/train/sync_checkpoint.hpp), on the
// same or another number of replicas of the same size: the elastic restart.
//
// What carries over, and what each replica starts from:
//  - the run's state — θ_global, the outer momentum, the step (and with it the learning-rate
//    schedule), the syncs done, the tokens and skipped steps so far, and the data position
//    (one slot of the epoch's shuffled deck of windows) — is the same for every replica;
//  - a replica whose key (its first rank's host and ordinal, see replica_keys) has a file at
//    the resumed step keeps its inner optimizer state (and step counter), its error feedback
//    and, when they differed from θ_global, its local parameters;
//  - a replica without one (a node that joined, or came back after the resumed step) starts
//    from θ_global with fresh inner optimizer state: zero moments and step counter 0, so
//    AdamW's bias correction starts over; zero error feedback. Fresh rather than a copy of
//    another replica's state: a copy would cross the slow network (twice the model for AdamW)
//    and a node could not join from what it holds; fresh moments settle within a few steps;
//  - a replica of the checkpoint that is not in this run is dropped, and with it its inner
//    state and its error feedback — the part of its pseudo-gradients it had not yet sent.
//    The log says so, naming the replica.
//
// Data: the checkpoint's replicas had consumed the slots [0, g) of epoch e between them; the
// new replicas are dealt the slots from g on (loco/data/stream.hpp `redeal`), so no window is
// read twice and none is skipped, whatever the number of replicas before and after (except
// the fewer-than-K windows left at the end of an epoch, skipped as in every epoch).
//
// Where the checkpoint is found (storage "node_local": every node looks at its own disk;
// "shared": every node sees the same files): each rank reads the `latest` its node holds (or
// the given step directory); the resumed step is the newest any node holds. Nodes holding
// that step's global.bin read it from their disk; the others receive it from the first of
// them over the network. A node whose `latest` names a step whose global.bin is missing, or
// a replica file that cannot be read, stops every rank with a message naming the node and
// the file (nothing is written). No checkpoint on any node: an error naming the nodes and the
// pointer each looked for ("latest"), or a fresh start ("auto").
//
// Every failure here is collective: all ranks throw together.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "loco/config/config.hpp"
#include "loco/runtime/runtime.hpp"

namespace loco {

class InnerOptimizer;
class LlamaModel;
class OuterSync;
class TokenStream;

struct ElasticResume {
  bool found = false;  // false: "auto" found no checkpoint anywhere (a fresh start)
  int64_t step = 0;
  int64_t skipped_steps = 0;
  int64_t tokens = 0;
  std::string from;         // the resumed step directory (as the first holder names it)
  std::string data_change;  // training_data_change(): "" when the data is the same
  uint64_t global_fingerprint = 0;
  // For metrics.jsonl's resume record: {"replicas_before", "replicas_now", "kept", "new",
  // "dropped", "global_fingerprint", "data": {"epoch", "slot"}}.
  nlohmann::json record;
};

// Collective. `spec`: "latest", "auto" or a path (step directory, checkpoint or run
// directory, or a global.bin). Loads the state into `model`, `optimizer`, `outer` and
// `stream` (constructed fresh for this run). Throws loco::Error on every rank alike.
ElasticResume resume_from_sync_checkpoint(const std::string& spec, const std::string& root,
                                          const Config& config, Runtime& runtime, LlamaModel& model,
                                          InnerOptimizer& optimizer, OuterSync& outer,
                                          TokenStream& stream, uint64_t data_hash);

}  // namespace loco
