// One JSON config per experiment. Every key has a default (docs/config.md lists them);
// loading validates everything and throws loco::Error naming the JSON path, the value and
// what is allowed.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace loco {

struct ModelConfig {
  int vocab_size = 256;
  int d_model = 128;
  int n_layers = 4;
  int n_heads = 4;
  int n_kv_heads = 2;  // grouped-query attention: must divide n_heads
  int d_ff = 384;      // SwiGLU hidden size
  int max_seq_len = 256;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  bool tie_embeddings = false;
  double init_std = 0.02;
  // Weights to start from: a Hugging Face directory or a loco checkpoint (file, step or run
  // directory); "" = random initialisation. Made absolute by load_config.
  std::string init_from;

  int head_dim() const { return d_model / n_heads; }
};

// One source of a training mixture (data.train given as a list).
struct TrainSource {
  std::string path;     // shard path or glob
  double weight = 1.0;  // > 0; the weights are normalised over the sources
};

// One more validation set (data.extra_val): its loss is reported under its name.
struct ValSource {
  std::string name;
  std::string path;  // shard path or glob
};

struct DataConfig {
  // data.train: a shard path or glob (`train`), or a list of {"path", "weight"}: a weighted
  // mixture (`train_mixture`, two sources or more; `train` is then ""). A list of one source
  // is read as its path.
  std::string train = "data/kjv-train.bin";
  std::vector<TrainSource> train_mixture;
  std::string val = "data/kjv-val.bin";  // shard path or glob; empty = no validation
  std::vector<ValSource> extra_val;      // more validation sets, each reported by name
  // "byte", or the path of a SentencePiece .model file (loco/data/text_tokenizer.hpp); a run
  // copies it to <run dir>/tokenizer.model.
  std::string tokenizer = "byte";
  // Resuming with other training data or seq_len than the checkpoint's: "refuse" (an error
  // naming what changed) or "restart" (keep the weights and optimizer state, read the new
  // data from its beginning).
  std::string on_resume_change = "refuse";
};

struct OptimizerConfig {
  std::string type = "adamw";  // "adamw", "muon", or "sgd" (plain, for equivalence tests)
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  bool decay_embeddings = false;  // weight decay on embedding and LM head
  double grad_clip = 1.0;         // global-norm clip; 0 disables
  // type "muon" (docs/algorithms.md §3): Muon for the 2-D hidden matrices; embeddings, LM head and
  // norm gains use the AdamW keys above. muon_lr is the Muon group's peak lr; the schedule
  // scales it by the same factor as lr.
  double muon_lr = 0.02;
  double muon_momentum = 0.95;
  bool muon_nesterov = true;
  double muon_weight_decay = 0.1;
  int ns_steps = 5;  // Newton–Schulz iterations, coefficients (a, b, c) below
  double ns_a = 3.4445;
  double ns_b = -4.7750;
  double ns_c = 2.0315;
  std::string muon_scale = "original";  // "original" or "match_adamw"
};

struct ScheduleConfig {
  // "constant", "linear", "cosine", "wsd", "infinite"
  std::string type = "cosine";
  int warmup_steps = 50;
  double min_lr_ratio = 0.1;    // floor, as a fraction of optimizer.lr
  double decay_fraction = 0.2;  // wsd: last fraction of steps that decays
  int cooldown_steps = 200;     // infinite: cosine from lr to const_lr_ratio·lr
  double const_lr_ratio = 0.5;  // infinite: the constant phase's level
  int anneal_steps = 100;       // infinite: final linear anneal to min_lr_ratio·lr
};

struct TrainingConfig {
  int steps = 600;
  int micro_batch = 8;
  int grad_accum = 1;
  int seq_len = 128;
  int eval_interval = 100;  // 0 disables periodic validation
  int eval_batches = 8;
  int log_interval = 1;
  uint64_t seed = 1234;
  // What a non-finite gradient does: "stop" (error naming the tensor and step) or "skip"
  // (the step's update is dropped, the run goes on). Non-finite parameters, losses and
  // pseudo-gradients always stop; none is ever written into a checkpoint.
  std::string nan_policy = "stop";
};

struct OutputConfig {
  std::string dir = "runs/tiny";
};

// Outer synchronisation (docs/algorithms.md §2): every `interval` inner steps the replicas'
// pseudo-gradients Δ = θ_global − θ_local are averaged and an outer optimizer (SGD with
// optional Nesterov momentum) updates θ_global.
struct OuterConfig {
  int interval = 50;      // H: inner steps between outer syncs
  double lr = 0.7;        // η_out (1 with momentum 0 is FedAvg / local SGD)
  double momentum = 0.9;  // μ
  bool nesterov = true;
  std::string wire_dtype = "f32";  // dtype of the dense all-reduce: "f32" or "bf16"
  // Streaming DiLoCo overlap (docs/algorithms.md §7): the sync due at step t is started there and
  // completed τ inner steps later (0 = blocking, as plain DiLoCo); must be < interval.
  int overlap_steps = 0;
  // α at completion: θ_local ← α·θ_local + (1 − α)·θ_global (unused when overlap_steps = 0).
  double merge_alpha = 0.5;
  // Streaming DiLoCo fragments (docs/algorithms.md §7; loco/outer/fragments.hpp): p groups of
  // strided layers, fragment j synced at the steps t ≡ j·H/p (mod H). 1 = the whole model
  // every H steps (plain DiLoCo). Must divide interval and be <= model.n_layers.
  int fragments = 1;
  // What carries the outer sync between replicas (the cross group): "nccl" (device memory,
  // NCCL; needs backend "cuda"), "mpi" (host memory over MPI: on CUDA the pseudo-gradients
  // are staged through page-locked host memory; with replica_size 1 no NCCL communicator is
  // made at all, so ranks may share a GPU), or "auto" (nccl on CUDA, mpi on the CPU).
  std::string transport = "auto";
};

// Compression of DiLoCo's pseudo-gradients (docs/algorithms.md §4, §5): error feedback →
// selector → quantiser, sent packed through all-gather (loco/compress/compress.hpp). The
// defaults (no EF, selector "none", quantizer "none") are plain DiLoCo: a dense all-reduce.
struct CompressionConfig {
  bool error_feedback = false;
  double beta = 0.95;                         // e ← β·e + Δ
  std::string selector = "none";              // "none", "chunked_topk", "global_topk", "random_k"
  int topk = 64;                              // kept per full chunk of chunk×chunk elements
  int chunk = 64;                             // tile side: 2-D tensors in chunk×chunk tiles
  std::string quantizer = "none";             // "none", "bf16", "8bit", "4bit", "2bit"
  std::string index_coding = "auto";          // "auto", "rice", "fixed", "bitmap"
  std::string aggregation = "mean_selected";  // or "mean_all"
  uint64_t seed = 0;                          // random_k: shared by every rank
  // "loco" (loco/compress/compress.hpp) or "templar": the SparseLoCo reference's k per chunk,
  // 2-bit level rule and median-norm clipping (loco/compress/templar_rules.hpp).
  std::string rules = "loco";

  // True when the payload is packed and all-gathered; false = the dense all-reduce (error
  // feedback on a dense uncompressed payload is a no-op: nothing is ever left behind).
  bool compressed() const { return selector != "none" || quantizer != "none"; }
};

// A simulated slow link for the outer-sync (cross-replica) group: its all-reduces and
// all-gathers take latency + 8·bytes/bandwidth at least (loco/comm/simulated_link.hpp), so
// what overlapping the outer sync buys can be measured with every rank on one machine.
// Both 0 (the default): no simulation. Needs method "diloco" (DDP has no outer-sync group).
struct LinkConfig {
  double bandwidth_mbps = 0.0;  // megabits per second; 0 = unlimited (latency only)
  double latency_ms = 0.0;      // per collective

  bool enabled() const { return bandwidth_mbps > 0.0 || latency_ms > 0.0; }
};

struct DistributedConfig {
  // "ddp": gradients all-reduced every step across all ranks (the baseline);
  // "diloco": replicas train locally and sync pseudo-gradients every outer.interval steps.
  std::string method = "ddp";
  // diloco: ranks per replica; they DDP among themselves every step over their own group.
  int replica_size = 1;
  double timeout_s = 120.0;  // a collective slower than this aborts the run
  OuterConfig outer;
  CompressionConfig compression;
  LinkConfig link;
};

// Checkpoints (loco/io/checkpoint.hpp). Either periodic, one file per rank:
// <dir>/step-<N>/rank-<r>.bin + <dir>/latest; or at outer syncs (DiLoCo), written in the
// background: <dir>/step-<N>/global.bin (θ_global, outer momentum, position) once and
// replica-<key>.bin (inner optimizer state, error feedback) once per replica, which a run
// with another number of replicas can resume from (loco/train/sync_checkpoint.hpp).
struct CheckpointConfig {
  int interval = 0;   // steps between per-rank checkpoints; 0 disables
  int at_sync = 0;    // a checkpoint at every at_sync-th outer sync; 0 disables
  int keep_last = 3;  // step directories kept (older ones are deleted); 0 keeps all
  std::string dir;    // empty: <output.dir>/checkpoints
  // at_sync checkpoints: "shared" (one file system for every node: rank 0 writes the global
  // state) or "node_local" (every node's first rank writes the global state and `latest`
  // into its own disk, so each node can resume from what it holds).
  std::string storage = "shared";
};

struct Config {
  std::string name = "tiny";
  std::string backend = "cpu";  // "cpu", "cuda", "auto"
  ModelConfig model;
  DataConfig data;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  TrainingConfig training;
  OutputConfig output;
  DistributedConfig distributed;
  CheckpointConfig checkpoint;
};

// Parse and validate. `source` names the file in messages. Unknown keys are errors.
Config config_from_json(const nlohmann::json& j, const std::string& source);
nlohmann::json config_to_json(const Config& c);  // every key, resolved

// Read a JSON file, apply "--set a.b.c=VALUE" overrides (VALUE parsed as JSON when it
// parses, else taken as a string), then validate. Relative data paths resolve against the
// current directory first, then against the source tree (so configs/ work from anywhere).
Config load_config(const std::string& path, const std::vector<std::string>& overrides);

// Apply one "a.b.c=VALUE" override to a JSON document; errors name the override.
void apply_override(nlohmann::json& j, const std::string& assignment);

}  // namespace loco
