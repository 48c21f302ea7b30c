// Checkpoints at outer syncs (checkpoint.at_sync), the ones an elastic run resumes from.
//
// Right after a completed outer sync every rank holds the same θ_global, so a checkpoint
// there splits into what the run shares and what each replica owns:
//
//   <root>/step-000080/global.bin        θ_global ("params", so export-hf and eval read it),
//                                        the outer momentum, and in its metadata the step,
//                                        the syncs done, the data position of the whole run
//                                        (one slot of the epoch's deck, loco/data/stream.hpp),
//                                        the tokens and skipped steps so far, and the keys
//                                        of the replicas that trained up to this step
//   <root>/step-000080/replica-<key>.bin the replica's inner optimizer state and its step
//                                        counter, its error feedback (compression), and its
//                                        local parameters when they differ from θ_global
//                                        (a merge or a fragment sync left them apart)
//   <root>/latest                        "step-000080", written after global.bin
//
// global.bin is written once (storage "shared": by rank 0) or once per node (storage
// "node_local": by the node's first rank, with its own `latest`, into that node's disk); each
// replica's file once, by its first rank. A replica's key is its first rank's host name and
// its ordinal among the replicas that start on that host ("node3-0"): after a restart the
// replica on the same host takes over the state of the one that was there.
//
// Writing costs the training loop only the copy to host memory (and waiting for the previous
// checkpoint, if it is still being written): the files are written by a background thread
// (loco/io/async_checkpoint.hpp) in the same atomic, checksummed container as every
// checkpoint. `latest` is written by the global writer after its own files, without waiting
// for the other replicas' files: after a crash, a replica whose file of the resumed step is
// missing starts like a new one (loco/train/elastic_resume.hpp).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loco/config/config.hpp"
#include "loco/io/async_checkpoint.hpp"
#include "loco/runtime/runtime.hpp"

namespace loco {

class InnerOptimizer;
class LlamaModel;
class OuterSync;
class TokenStream;

inline constexpr const char* kGlobalStateFile = "global.bin";
inline constexpr const char* kSyncLayout = "sync";  // meta["layout"] of both kinds of file

// "replica-<key>.bin"; the key's characters outside [A-Za-z0-9._-] become '_'.
std::string replica_state_file_name(const std::string& key);
std::string global_state_path(const std::string& step_dir);
std::string replica_state_path(const std::string& step_dir, const std::string& key);

// Every replica's key, in replica order: "<host of its first rank>-<ordinal>", the ordinal
// counting the replicas whose first rank is on the same host.
std::vector<std::string> replica_keys(const std::vector<RankPlacement>& placement);

// Which files this rank writes.
struct SyncCheckpointRoles {
  bool global = false;   // global.bin and `latest` (and pruning) into its checkpoint root
  bool replica = false;  // its replica's file
};
SyncCheckpointRoles sync_checkpoint_roles(const CheckpointConfig& cfg, const RankPlacement& mine);

// What must match between a sync checkpoint and the run resuming from it: the model's shape,
// the method, the replica size and the inner optimizer (not the number of replicas).
nlohmann::json sync_checkpoint_identity(const Config& config);

// The training state a checkpoint is taken from (all owned by the trainer).
struct SyncCheckpointState {
  int64_t step = 0;
  LlamaModel* model = nullptr;
  InnerOptimizer* optimizer = nullptr;
  OuterSync* outer = nullptr;
  const TokenStream* stream = nullptr;
  int64_t tokens = 0;
  int64_t skipped_steps = 0;
  uint64_t data_hash = 0;
};

// What a checkpoint cost the training loop, and the writes behind it.
struct SyncCheckpointCost {
  double stall_seconds = 0.0;         // inside save(): waiting for the previous write + copies
  double waited_seconds = 0.0;        // of which waiting for the previous checkpoint's write
  uint64_t host_bytes = 0;            // copied to host memory by this rank
  double previous_write_seconds = 0;  // the previous checkpoint's write on this rank
};

// This rank's checkpoints of a run, for metrics.jsonl and summary.json.
struct SyncCheckpointStats {
  int count = 0;
  double stall_total = 0.0, stall_max = 0.0, waited_total = 0.0;
  uint64_t host_bytes = 0;  // per checkpoint (the last one's)
  double write_total = 0.0;
  int writes_measured = 0;
  // Adds one checkpoint; returns its metrics record {"stall_s", "waited_s", "host_bytes",
  // "previous_write_s"}.
  nlohmann::json add(const SyncCheckpointCost& cost);
  // {"kind": "at_sync", "count", "stall_s_mean", "stall_s_max", "waited_s_total",
  //  "host_bytes", "write_s_mean"} (write_s_mean: the background writes measured so far).
  nlohmann::json to_json() const;
};

class SyncCheckpointer {
 public:
  SyncCheckpointer(const Config& config, std::string root, const Runtime& runtime);

  // Collective in effect (every rank calls it at the same sync point) but without any
  // communication: copies this rank's share to host memory and queues the writes.
  SyncCheckpointCost save(const SyncCheckpointState& state);
  // Waits for the queued writes; returns the first error since the last call ("" = none).
  std::string finish();
  // An error of a write so far, without waiting ("" = none); reported once.
  std::string take_error();

  const SyncCheckpointRoles& roles() const { return roles_; }
  const std::string& key() const { return keys_.at(size_t(replica_)); }
  const std::vector<std::string>& keys() const { return keys_; }

 private:
  const Config& config_;
  std::string root_;
  const Runtime& runtime_;
  SyncCheckpointRoles roles_;
  std::vector<std::string> keys_;
  int replica_ = 0;
  std::string pending_error_;
  AsyncCheckpointWriter writer_;
};

}  // namespace loco
