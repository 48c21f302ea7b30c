#include "loco/train/trainer.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/comm/simulated_link.hpp"
#include "loco/core/files.hpp"
#include "loco/core/hash.hpp"
#include "loco/data/stream.hpp"
#include "loco/data/text_tokenizer.hpp"
#include "loco/io/checkpoint.hpp"
#include "loco/model/llama.hpp"
#include "loco/optim/optimizer.hpp"
#include "loco/optim/schedule.hpp"
#include "loco/outer/outer_sync.hpp"
#include "loco/runtime/runtime.hpp"
#include "loco/train/bits_per_byte.hpp"
#include "loco/train/comm_report.hpp"
#include "loco/train/data_trace.hpp"
#include "loco/train/elastic_resume.hpp"
#include "loco/train/init_from.hpp"
#include "loco/train/memory_plan.hpp"
#include "loco/train/metrics_log.hpp"
#include "loco/train/progress.hpp"
#include "loco/train/resume_checks.hpp"
#include "loco/train/run_dir.hpp"
#include "loco/train/startup_checks.hpp"
#include "loco/train/stop_signal.hpp"
#include "loco/train/sync_checkpoint.hpp"
#include "loco/train/train_step.hpp"

namespace loco {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Mean validation loss over the first `batches` batches of the (unshuffled) stream.
double evaluate(LlamaModel& model, TokenStream& val, int batches, int B, int T) {
  std::vector<int32_t> inputs(static_cast<size_t>(B) * T), targets(inputs.size());
  val.reset();
  double sum = 0.0;
  for (int i = 0; i < batches; ++i) {
    val.next_batch(B, inputs.data(), targets.data());
    sum += model.forward_loss(inputs.data(), targets.data(), B, T);
  }
  return sum / batches;
}

// The training stream of data.train: one source, or a weighted mixture.
TokenStream make_train_stream(const DataConfig& data, int T, uint64_t seed, int replica,
                              int replicas, int vocab_size) {
  if (data.train_mixture.empty())
    return TokenStream(data.train, T, seed, replica, replicas, /*shuffle=*/true, vocab_size);
  std::vector<MixtureSource> sources;
  for (const TrainSource& t : data.train_mixture) sources.push_back({t.path, t.weight});
  try {
    return TokenStream(sources, T, seed, replica, replicas, vocab_size);
  } catch (const Error& e) {
    throw Error(std::string("data.train: ") + e.what());
  }
}

// A data.extra_val set: its name, its (unshuffled) stream, batches per evaluation, and the
// text bytes per token of the scored windows (0: unknown).
struct NamedValidation {
  std::string name;
  std::unique_ptr<TokenStream> stream;
  int batches = 0;
  double bytes_per_token = 0.0;
};

// Name of the first parameter tensor whose slice of `buffer` (grads or params layout) holds a
// NaN or inf, or "" when all are finite.
std::string first_non_finite(Backend& backend, const LlamaModel& model, Buf buffer) {
  for (const auto& v : model.layout().views)
    if (!backend.all_finite(buffer.slice(v.offset, v.numel))) return v.name;
  return {};
}

// Elements of the largest outer-sync fragment (the whole model with one fragment).
size_t largest_fragment(const OuterSync& outer) {
  size_t n = 0;
  for (int j = 0; j < outer.fragments(); ++j) n = std::max(n, outer.fragment(j).numel);
  return n;
}

// On the backend: the buffer never crosses to the host (Backend::fingerprint).
uint64_t hash_params(Backend& backend, Buf params) { return backend.fingerprint(params); }

// Every rank must agree on `value` (a hash of something named `what`); otherwise every rank
// throws the same message naming the ranks that differ — no rank is left waiting.
void require_agreement(Communicator& world, uint64_t value, const std::string& what) {
  const auto values = world.all_gather_host(value);
  const auto bad = mismatching_ranks(values);
  if (bad.empty()) return;
  std::string ranks;
  for (int r : bad) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
  throw Error("ranks disagree on " + what + ": rank(s) " + ranks + " differ from the others " +
              "(every rank must run the same config, data and code)");
}

// What every rank learns at a sync point (one exchange over every rank).
struct SyncPoint {
  uint64_t fingerprint = 0;  // θ_global's, agreed by every rank
  bool stop = false;         // some rank was asked to stop
  double mean_loss = 0.0;    // mean over the ranks (= over the replicas) of their replica's loss
};

// One all-gather of {θ_global fingerprint, stop flag, replica loss, checkpoint write failed}
// per rank. Ranks that hold another θ_global than the others, or a failed background
// checkpoint write (`write_error`, checkpoint.at_sync): every rank throws.
SyncPoint agree_at_sync_point(Communicator& world, uint64_t fingerprint, bool stop, double loss,
                              int syncs_done, const std::string& write_error = {}) {
  uint64_t loss_bits = 0;
  std::memcpy(&loss_bits, &loss, sizeof loss);
  const std::vector<uint64_t> all = world.all_gather_host(
      std::vector<uint64_t>{fingerprint, stop ? 1u : 0u, loss_bits, write_error.empty() ? 0u : 1u});
  const size_t K = size_t(world.size());
  std::vector<uint64_t> prints(K);
  SyncPoint out;
  double sum = 0.0;
  for (size_t r = 0; r < K; ++r) {
    prints[r] = all[4 * r];
    out.stop = out.stop || all[4 * r + 1] != 0;
    double l = 0.0;
    std::memcpy(&l, &all[4 * r + 2], sizeof l);
    sum += l;
  }
  if (!write_error.empty()) throw Error(write_error);
  for (size_t r = 0; r < K; ++r)
    if (all[4 * r + 3] != 0)
      throw Error("a checkpoint write failed on rank " + std::to_string(r) + " (see its message)");
  out.fingerprint = fingerprint;
  out.mean_loss = sum / double(K);
  const auto bad = mismatching_ranks(prints);
  if (!bad.empty()) {
    std::string ranks;
    for (int r : bad) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
    throw CollectiveError("ranks disagree on the global parameters after outer sync " +
                          std::to_string(syncs_done) + ": rank(s) " + ranks +
                          " differ from the others (every rank must run the same config, data "
                          "and code)");
  }
  return out;
}

// The model-sync collectives (not the small host ones) of this rank's communicators.
CommStats model_traffic(const Topology& topo) {
  CommStats s = topo.replica->stats() + topo.cross->stats();
  CommStats only_model;
  for (CommKind k :
       {CommKind::AllReduce, CommKind::AllGather, CommKind::Broadcast, CommKind::Barrier})
    only_model.add(k, s[k]);
  return only_model;
}

CommStats host_traffic(const Topology& topo, Communicator& world) {
  CommStats s = topo.replica->stats() + topo.cross->stats() + world.stats();
  CommStats only_host;
  for (CommKind k : {CommKind::HostAllReduce, CommKind::HostAllGather, CommKind::HostBroadcast})
    only_host.add(k, s[k]);
  return only_host;
}

std::vector<float> download_f32(Backend& backend, Buf b) {
  if (b.dtype != DType::F32) throw Error("checkpoint: expected an F32 buffer");
  std::vector<float> host(b.numel);
  if (b.numel > 0) backend.download(host.data(), b);
  return host;
}

// Writes this rank's checkpoint of `step`, then (after a barrier) rank 0 updates `latest` and
// prunes. Every rank takes part or none: a non-finite parameter on any rank skips it.
void save_checkpoint(const Config& config, const std::string& root, Communicator& world,
                     Backend& backend, LlamaModel& model, InnerOptimizer& optimizer,
                     const OuterSync* outer, const TokenStream& train_stream, double loss,
                     int64_t step, const CommStats& traffic, int64_t skipped_steps) {
  std::vector<double> bad{(std::isfinite(loss) && backend.all_finite(model.params())) ? 0.0 : 1.0};
  world.all_reduce_host(bad, ReduceOp::Sum);
  if (bad[0] > 0) {
    spdlog::warn("checkpoint at step {} skipped: non-finite parameters or loss", step);
    return;
  }
  const int rank = world.rank();
  // Host copies that live until write().
  std::vector<std::vector<float>> keep;
  CheckpointWriter w;
  keep.push_back(download_f32(backend, model.params()));
  w.add(kParamsTensor, keep.back());
  nlohmann::json opt_names = nlohmann::json::array();
  for (auto& [name, buf] : optimizer.state()) {
    keep.push_back(download_f32(backend, buf));
    w.add(name, keep.back());
    opt_names.push_back(name);
  }
  const StreamPosition pos = train_stream.position();
  nlohmann::json meta = checkpoint_base_meta(config, world.size(), rank, step);
  meta["optimizer_steps_taken"] = optimizer.steps_taken();
  meta["optimizer_state"] = opt_names;
  meta["data_position"] = {{"epoch", pos.epoch}, {"cursor", pos.cursor}};
  meta[kDataHashKey] = train_stream.tokens_hash() ^ train_stream.total_tokens();
  meta["skipped_steps"] = skipped_steps;
  meta["comm_cumulative"] = traffic.to_json();  // informational
  if (outer) {
    keep.push_back(download_f32(backend, outer->global_params()));
    w.add("outer.global", keep.back());
    keep.push_back(download_f32(backend, outer->momentum()));
    w.add("outer.momentum", keep.back());
    meta["outer_syncs_done"] = outer->syncs_done();
    meta["outer_fragment_syncs"] = outer->fragment_syncs();  // reporting (per-fragment counts)
    keep.push_back(outer->error_feedback());                 // empty without error feedback
    if (!keep.back().empty()) w.add("outer.error_feedback", keep.back());
    meta["outer_error_feedback"] = !keep.back().empty();
  }
  w.set_meta(meta);
  write_checkpoint_rank(w, root, step, rank);
  world.barrier();
  if (rank == 0) {
    write_latest_checkpoint(root, step);
    prune_checkpoints(root, config.checkpoint.keep_last, step);
    spdlog::info("checkpoint: {}", checkpoint_step_dir(root, step));
  }
}

void restore_f32(const Checkpoint& c, const std::string& name, Backend& backend, Buf dst) {
  std::vector<float> host(dst.numel);
  c.copy_to(name, host.data(), host.size(), StorageDType::F32);
  if (dst.numel > 0) backend.upload(dst, host.data());
}

}  // namespace

TrainResult train(const Config& config, const std::string& run_dir, Communicator& world,
                  const std::string& resume, ExistingRun existing) {
  Runtime runtime = make_runtime(config, world);
  return train(config, run_dir, runtime, resume, existing);
}

TrainResult train(const Config& config, const std::string& run_dir, Runtime& runtime,
                  const std::string& resume, ExistingRun existing) {
  const auto& tc = config.training;
  const auto& dc = config.distributed;
  Communicator& world = *runtime.world;
  const bool is_root = world.rank() == 0;
  const auto t_start = Clock::now();

  // The run directory first: every rank writes into the same one, and rank 0 holds it (a
  // second run into it, or a fresh start over a finished run, is refused before any work).
  const std::string ckpt_root = checkpoint_root(run_dir, config.checkpoint.dir);
  require_same_run_directory(world, run_dir, ckpt_root);
  std::optional<RunDirectory> run_files;
  {
    std::string error;
    if (is_root) {
      try {
        run_files.emplace(run_dir, ckpt_root, !resume.empty(), existing);
      } catch (const Error& e) {
        error = e.what();
      }
    }
    fail_together(world, error, "cannot start");
  }

  // What the composition root built: the backend on this rank's device, the replica (DDP)
  // and cross (outer-sync) groups, the simulated link (if any) around the cross group.
  Topology& topo = runtime.topo;
  std::unique_ptr<Backend>& backend = runtime.backend;
  const SimulatedLinkCommunicator* link = runtime.link;
  // Before allocating: a config that asks for more memory than there is stops here, naming
  // the keys (activations live on the device with CUDA; the token buffers on the host).
  check_memory_plan("this run",
                    plan_training_memory(config, topo.replica_size,
                                         static_cast<int>(dtype_size(backend->activation_dtype()))),
                    config.model, static_cast<uint64_t>(tc.micro_batch),
                    static_cast<uint64_t>(tc.seq_len), "training.micro_batch", "training.seq_len",
                    backend->name() == "cpu", usable_host_memory());
  LlamaModel model(config.model, *backend);
  model.init_weights(config.training.seed);
  // model.init_from: the starting weights (a resumed run takes them from its checkpoint).
  if (!config.model.init_from.empty() && (resume.empty() || resume == "auto")) {
    const InitialWeights w = load_initial_weights(config.model, config.model.init_from);
    backend->upload(model.params(), w.params.data());
    model.params_changed();
    if (is_root) {
      spdlog::info("model.init_from: weights from {}; optimizer state fresh", w.description);
      for (const auto& note : w.notes) spdlog::warn("model.init_from: {}", note);
    }
  }
  auto optimizer = make_inner_optimizer(config.optimizer, model.layout(), *backend);

  // Data: one stream per replica; the replica's ranks split each batch of R·B sequences, so
  // R ranks see exactly what one process with R× the batch would see.
  const int B = tc.micro_batch, T = tc.seq_len, R = topo.replica_size;
  TokenStream train_stream = make_train_stream(config.data, T, tc.seed, topo.replica_index,
                                               topo.num_replicas, config.model.vocab_size);
  const uint64_t data_hash = train_stream.tokens_hash() ^ train_stream.total_tokens();
  int running_step = 0;  // for the window trace (LOCO_DATA_TRACE)
  const auto trace =
      DataTrace::from_environment(replica_keys(runtime.placement).at(size_t(topo.replica_index)),
                                  topo.replica_index, topo.num_replicas, topo.rank_in_replica == 0);
  if (trace) trace->attach(train_stream, running_step);
  std::unique_ptr<TokenStream> val_stream;
  if (!config.data.val.empty())
    val_stream = std::make_unique<TokenStream>(config.data.val, T, tc.seed, 0, 1,
                                               /*shuffle=*/false, config.model.vocab_size);
  const int eval_batches =
      val_stream ? static_cast<int>(std::min<size_t>(
                       tc.eval_batches, val_stream->windows_per_worker() / std::max(1, B)))
                 : 0;
  // Bits per byte of the validation text (the scored windows are fixed: counted once).
  const TextTokenizer tokenizer = TextTokenizer::from_spec(config.data.tokenizer);
  const double val_bytes_per_token =  // 0: unknown (shards of another tokenizer)
      val_stream && eval_batches > 0
          ? validation_bytes_per_token(*val_stream, tokenizer, eval_batches, B, T).value_or(0.0)
          : 0.0;
  // data.extra_val: more validation sets (rank 0 evaluates them), each reported by name.
  std::vector<NamedValidation> extra_val;
  if (is_root)
    for (const ValSource& v : config.data.extra_val) {
      NamedValidation n{v.name,
                        std::make_unique<TokenStream>(v.path, T, tc.seed, 0, 1,
                                                      /*shuffle=*/false, config.model.vocab_size),
                        0, 0.0};
      n.batches = static_cast<int>(
          std::min<size_t>(tc.eval_batches, n.stream->windows_per_worker() / std::max(1, B)));
      if (n.batches > 0)
        n.bytes_per_token =
            validation_bytes_per_token(*n.stream, tokenizer, n.batches, B, T).value_or(0.0);
      extra_val.push_back(std::move(n));
    }

  // Start-up consistency: a mismatch stops every rank with the same message.
  // (Paths may differ between nodes; the data is compared by content instead.)
  nlohmann::json shared_config = config_to_json(config);
  shared_config.erase("output");
  shared_config["data"].erase("train");
  shared_config["data"].erase("val");
  shared_config["data"].erase("extra_val");
  require_same_config(world, shared_config);
  require_agreement(world, train_stream.tokens_hash() ^ train_stream.total_tokens(),
                    "the training data (token content)");
  require_agreement(world, hash_params(*backend, model.params()), "the initial parameters");

  std::optional<OuterSync> outer;
  if (dc.method == "diloco")
    outer.emplace(dc.outer, dc.compression, model.layout(), *backend, *topo.cross, model.params());

  // Resume (after the start-up checks above, which compare the freshly initialised
  // parameters): from checkpoints at outer syncs on any number of replicas
  // (loco/train/elastic_resume.hpp), or every rank from its own file.
  const bool at_sync = config.checkpoint.at_sync > 0;
  const std::string resume_from =
      resume == "auto" && !at_sync ? resolve_auto_resume(world, ckpt_root) : resume;
  int start_step = 0;
  int skipped_before = 0;         // skipped steps before the checkpoint
  int64_t tokens_before = -1;     // tokens before the checkpoint, when it says (sync checkpoints)
  std::string resumed_from;       // the step directory
  std::string data_change;        // what changed in the training data ("" = nothing)
  nlohmann::json elastic_record;  // who continued, joined and left (sync checkpoints)
  bool resumed = false;
  if (!resume_from.empty() && at_sync) {
    const auto t_read = Clock::now();
    const ElasticResume r =
        resume_from_sync_checkpoint(resume_from, ckpt_root, config, runtime, model, *optimizer,
                                    *outer, train_stream, data_hash);
    if (r.found) {
      resumed = true;
      start_step = static_cast<int>(r.step);
      skipped_before = static_cast<int>(r.skipped_steps);
      tokens_before = r.tokens;
      resumed_from = r.from;
      data_change = r.data_change;
      elastic_record = r.record;
      if (start_step > tc.steps)
        throw Error("cannot resume: " + resumed_from + ": checkpoint step " +
                    std::to_string(start_step) +
                    " is outside this run's training.steps = " + std::to_string(tc.steps));
      stop_note_checkpoint(start_step, 2.0 * seconds_since(t_read));
      if (is_root && !data_change.empty() && start_step < tc.steps)
        spdlog::warn(
            "resume: the training data changed since the checkpoint ({}): reading the "
            "new data from its beginning (data.on_resume_change = \"restart\")",
            data_change);
    } else if (is_root) {
      spdlog::info("--resume auto: no checkpoint on any node; starting from step 0");
    }
  } else if (!resume_from.empty()) {
    resumed = true;
    std::string resume_error;
    try {
      const auto t_read = Clock::now();
      const std::string step_dir = resolve_resume(resume_from, ckpt_root);
      resumed_from = step_dir;
      require_rank_file(step_dir, world.rank());
      const Checkpoint c = read_checkpoint(checkpoint_rank_file(step_dir, world.rank()));
      if (c.meta().contains("world_size") &&
          c.meta().at("world_size") != nlohmann::json(world.size()))
        throw Error(c.path() + ": written by " + c.meta().at("world_size").dump() +
                    " rank(s), this run has " + std::to_string(world.size()) + ". " +
                    per_rank_world_size_hint());
      validate_compatible(c.meta(), checkpoint_identity(config, world.size(), world.rank()),
                          c.path());
      data_change = training_data_change(c.meta(), config,
                                         train_stream.tokens_hash() ^ train_stream.total_tokens());
      if (!data_change.empty() && config.data.on_resume_change != "restart")
        throw Error(c.path() + ": the training data changed since the checkpoint (" + data_change +
                    "); its data position means nothing for other data. To continue training "
                    "these weights on the new data from its beginning, set "
                    "data.on_resume_change = \"restart\"");
      try {
        const auto& m = c.meta();
        start_step = m.at("step").get<int>();
        if (m.contains("skipped_steps")) skipped_before = m.at("skipped_steps").get<int>();
        restore_f32(c, kParamsTensor, *backend, model.params());
        for (auto& [name, buf] : optimizer->state()) restore_f32(c, name, *backend, buf);
        optimizer->set_steps_taken(m.at("optimizer_steps_taken").get<int64_t>());
        if (data_change.empty())
          train_stream.restore(StreamPosition{m.at("data_position").at("epoch").get<uint64_t>(),
                                              m.at("data_position").at("cursor").get<uint64_t>(),
                                              m.at("data_position").value("start", uint64_t(0))});
        if (outer) {
          restore_f32(c, "outer.global", *backend, outer->global_params());
          restore_f32(c, "outer.momentum", *backend, outer->momentum());
          outer->set_syncs_done(m.at("outer_syncs_done").get<int>());
          if (m.contains("outer_fragment_syncs"))
            outer->set_fragment_syncs(m.at("outer_fragment_syncs").get<std::vector<int>>());
          if (!outer->error_feedback().empty() || c.has("outer.error_feedback")) {
            const auto& e = c.tensor("outer.error_feedback").f32();
            outer->restore_error_feedback(std::vector<float>(e.begin(), e.end()));
          }
        }
      } catch (const nlohmann::json::exception& e) {
        throw Error(c.path() + ": malformed checkpoint metadata: " + e.what());
      }
      if (start_step < 0 || start_step > tc.steps)
        throw Error(c.path() + ": checkpoint step " + std::to_string(start_step) +
                    " is outside this run's training.steps = " + std::to_string(tc.steps));
      model.params_changed();
      // Reading is faster than writing (which fsyncs); twice the read time is the estimate of
      // a checkpoint write until one is measured.
      stop_note_checkpoint(start_step, 2.0 * seconds_since(t_read));
      if (is_root && start_step < tc.steps)
        spdlog::info("resuming from {} at step {}", step_dir, start_step);
      if (is_root && !data_change.empty() && start_step < tc.steps)
        spdlog::warn(
            "resume: the training data changed since the checkpoint ({}): reading the "
            "new data from its beginning (data.on_resume_change = \"restart\")",
            data_change);
    } catch (const std::exception& e) {
      resume_error = e.what();
    }
    // Every rank stops when any rank cannot resume (none is left waiting in a collective).
    const auto failed = world.all_gather_host(resume_error.empty() ? 0 : 1);
    if (!resume_error.empty()) throw Error("cannot resume: " + resume_error);
    for (size_t r = 0; r < failed.size(); ++r)
      if (failed[r])
        throw Error("cannot resume: rank " + std::to_string(r) + " failed to read its checkpoint");
    const auto steps = world.all_gather_host(static_cast<uint64_t>(start_step));
    if (!mismatching_ranks(steps).empty())
      throw Error("cannot resume: the ranks' checkpoints are of different steps");
  }
  if (resumed) {
    // A finished run: nothing to train, and nothing in the run directory changes.
    if (start_step == tc.steps) {
      if (is_root)
        spdlog::info(
            "nothing to do: {} is at step {} = training.steps; the run is complete "
            "(raise training.steps to train further)",
            resumed_from, start_step);
      TrainResult done;
      done.nothing_to_do = true;
      done.steps_done = start_step;
      return done;
    }
  }

  // Every rank passed its start-up checks: only now does the run directory change (an
  // overwritten run's files go, config.json is written, metrics.jsonl continues).
  std::optional<MetricsLog> metrics;
  {
    std::string error;
    if (is_root) {
      try {
        run_files->begin(config);
        // The tokenizer beside the run, where export-hf and eval find it.
        if (!tokenizer.is_byte())
          write_file_atomic(run_dir + "/tokenizer.model", tokenizer.model_bytes());
        size_t dropped = 0;
        if (!resume.empty())
          dropped = trim_metrics_after(run_dir + "/metrics.jsonl", start_step).dropped;
        metrics.emplace(run_dir + "/metrics.jsonl");
        if (!resume.empty()) {
          nlohmann::json record = {
              {"from", resumed_from},
              {"dropped_records", dropped},
              {"data", data_change.empty() && resumed ? "continued" : "restarted"},
              {"data_change", data_change}};
          if (!elastic_record.is_null()) record["elastic"] = elastic_record;
          metrics->write({{"step", start_step}, {"resume", record}});
        }
      } catch (const Error& e) {
        error = e.what();
      }
    }
    fail_together(world, error, "cannot start");
  }

  if (!is_root) spdlog::set_level(spdlog::level::warn);
  for (const std::string& line : runtime.describe()) spdlog::info("{}", line);
  if (topo.num_replicas > 1)
    spdlog::info(
        "step lines show replica 0's loss (replicas talk only at outer syncs); the mean over "
        "the {} replicas follows at each sync; a stop request takes effect at the next sync",
        topo.num_replicas);
  spdlog::info("loco: {} | {} | backend {} | {} parameters | {} worker(s){} | {}", config.name,
               dc.method, backend->name(), model.num_params(), topo.world_size,
               dc.method == "diloco" ? fmt::format(" as {} replica(s) of {}, H = {}",
                                                   topo.num_replicas, R, dc.outer.interval)
                                     : std::string(),
               train_stream.describe());

  if (train_stream.is_mixture()) {
    spdlog::info(
        "data.train: a mixture of {} sources; deck slot m is the n-th window of one "
        "source, a function of (training.seed, m) alone (the same windows for any "
        "number of replicas and across restarts)",
        train_stream.source_use().size());
    for (const auto& u : train_stream.source_use())
      spdlog::info("  {:.4f} of the windows: {} ({} tokens, {} windows per epoch)", u.share, u.glob,
                   u.tokens, u.windows);
  }
  for (const auto& v : extra_val)
    spdlog::info("validation set \"{}\": {} ({} batches per evaluation)", v.name,
                 v.stream->describe(), v.batches);

  if (link)
    spdlog::info(
        "outer-sync link SIMULATED: {} (the replicas' all-reduces and all-gathers take "
        "at least latency + 8*bytes/bandwidth; the ranks actually share this machine)",
        link->link().describe());
  if (outer && outer->fragments() > 1)
    spdlog::info(
        "outer-sync fragments: {} (fragment j: layers j, j+{}, ...; syncs at steps "
        "j*{} mod {}), largest {} of {} parameters",
        outer->fragments(), outer->fragments(), dc.outer.interval / outer->fragments(),
        dc.outer.interval, largest_fragment(*outer), model.num_params());
  if (outer && dc.outer.overlap_steps > 0)
    spdlog::info(
        "outer-sync overlap: each sync completes {} inner steps after it starts, "
        "then θ_local <- {}·θ_local + {}·θ_global",
        dc.outer.overlap_steps, dc.outer.merge_alpha, 1.0 - dc.outer.merge_alpha);
  if (outer && outer->compressed()) {
    const auto& z = dc.compression;
    spdlog::info(
        "compression: error feedback {} (beta {}) | {} k={} per {}x{} chunk | {} | "
        "{} indices | aggregation {} | all-gather",
        z.error_feedback ? "on" : "off", z.beta, z.selector, z.topk, z.chunk, z.chunk, z.quantizer,
        z.index_coding, z.aggregation);
  }

  const long long tokens_per_step = static_cast<long long>(B) * T * tc.grad_accum * topo.world_size;
  std::vector<int32_t> inputs(static_cast<size_t>(R) * B * T), targets(inputs.size());
  const size_t my_offset = static_cast<size_t>(topo.rank_in_replica) * B * T;
  // The inner step (loco/train/train_step.hpp; LOCO_STEP picks host, device or graph) and
  // this rank's tokens of all its micro-batches.
  TrainStep inner_step(model, *optimizer,
                       TrainStep::Options{B, T, tc.grad_accum, config.optimizer.grad_clip,
                                          TrainStep::mode_from_env()});
  std::vector<int32_t> step_inputs(static_cast<size_t>(tc.grad_accum) * B * T),
      step_targets(step_inputs.size());

  TrainResult result;
  result.steps_done = start_step;
  result.skipped_steps = skipped_before;
  result.tokens =
      tokens_before >= 0 ? tokens_before : static_cast<long long>(start_step) * tokens_per_step;
  const int ckpt_every = config.checkpoint.interval;
  int64_t last_checkpoint = resumed ? start_step : -1;
  // Checkpoints at outer syncs: written by a background thread (loco/train/sync_checkpoint.hpp).
  std::optional<SyncCheckpointer> sync_ckpt;
  if (at_sync) sync_ckpt.emplace(config, ckpt_root, runtime);
  SyncCheckpointStats sync_ckpt_stats;
  auto checkpoint_now = [&](int64_t step, double loss) {
    if (last_checkpoint == step) return;
    const auto t_ckpt = Clock::now();
    save_checkpoint(config, ckpt_root, world, *backend, model, *optimizer,
                    outer ? &*outer : nullptr, train_stream, loss, step, model_traffic(topo),
                    result.skipped_steps);
    last_checkpoint = step;
    stop_note_checkpoint(step, seconds_since(t_ckpt));
  };
  ProgressPrinter progress(tc.steps, tokens_per_step);
  const auto t_loop = Clock::now();
  double last_val = -1.0;
  nlohmann::json last_extra_val = nlohmann::json::object();  // name -> loss
  CommStats traffic_at_last_sync;
  int overlap_started_step = -1;  // the step whose overlapped sync is in flight
  // The metrics record of a completed sync. θ_global must then be bitwise identical on every
  // rank; θ_local is not compared: after a merge it legitimately differs between replicas
  // (after a blocking sync it is a copy of θ_global). started_step < 0: a blocking sync.
  // (θ_global's agreement across ranks is checked at the sync point, below.)
  auto outer_record = [&](double delta_norm, int started_step, int step_done) {
    const CommStats now = model_traffic(topo);
    // Which fragment synced: its index, or "all" for the final sync of every fragment.
    const int frag = outer->last_fragment();
    nlohmann::json rec = {{"outer_step", outer->syncs_done()},
                          {"fragment", frag >= 0 ? nlohmann::json(frag) : nlohmann::json("all")},
                          {"sync_sent_bytes", outer->last_sync_sent_bytes()},
                          {"pseudo_grad_norm", delta_norm},
                          {"compression", outer->last_stats().to_json()},
                          {"comm", (now - traffic_at_last_sync).to_json()},
                          {"comm_cumulative", now.to_json()}};
    if (started_step >= 0) {
      nlohmann::json o = outer->last_overlap().to_json();
      o.erase("syncs");
      o["started_step"] = started_step;
      o["steps"] = step_done - started_step;
      rec["overlap"] = o;
    }
    traffic_at_last_sync = now;
    return rec;
  };
  // Between outer syncs the replicas share nothing: inner steps talk only inside their replica
  // (DDP's gradient all-reduce, the replica's mean loss and stop flag). What the replicas must
  // agree on travels with the syncs: at each sync point (a completed outer sync, or a
  // checkpoint) one small exchange over every rank carries θ_global's fingerprint, the stop
  // flags and each replica's loss. A stop request therefore takes effect at the next sync
  // point: within H inner steps (H/p with fragments), or the checkpoint interval if shorter.
  const bool several_replicas = topo.num_replicas > 1;
  bool stop_pending = false;  // asked inside this replica, not yet agreed across replicas
  // Traffic over communicators that span replicas, from the first to the last step.
  auto cross_replica_traffic = [&] {
    return several_replicas ? world.stats() + topo.cross->stats() : CommStats{};
  };
  const CommStats cross_replica_at_start = cross_replica_traffic();
  // The small host collectives (loss averages, stop flags, sync points), first to last step:
  // a rank that arrives early waits in them for its peers, so their time is time blocked.
  const CommStats control_at_start = host_traffic(topo, world);
  stop_note_loop_started(ckpt_every > 0 || at_sync, world.rank());
  for (int step = start_step; step < tc.steps; ++step) {
    const auto t_step = Clock::now();
    running_step = step;
    stop_note_step_started(step);
    const size_t n_tok = static_cast<size_t>(B) * T;
    for (int micro = 0; micro < tc.grad_accum; ++micro) {
      train_stream.next_batch(R * B, inputs.data(), targets.data());
      std::copy_n(inputs.data() + my_offset, n_tok, step_inputs.data() + micro * n_tok);
      std::copy_n(targets.data() + my_offset, n_tok, step_targets.data() + micro * n_tok);
    }
    const double lr = learning_rate(config.schedule, config.optimizer.lr, step, tc.steps);
    TrainStep::Hooks hooks;
    if (topo.replica->size() > 1)
      hooks.reduce_grads = [&](Buf g) { topo.replica->all_reduce(g, ReduceOp::Mean); };
    // An overlapped sync progresses between the inner steps' parts.
    if (outer) hooks.poll = [&] { outer->poll(); };
    inner_step.start(step_inputs.data(), step_targets.data(), lr, hooks);
    const TrainStep::Result inner = inner_step.finish();  // a non-finite update was skipped
    double loss = inner.loss;
    const std::string bad_grad =
        inner.finite ? std::string() : first_non_finite(*backend, model, model.grads());
    if (!inner.finite && tc.nan_policy == "stop")
      throw Error("non-finite gradient in " + bad_grad + " at step " + std::to_string(step + 1) +
                  " (training.nan_policy = \"stop\"; \"skip\" drops such steps)");
    if (!inner.finite) {
      ++result.skipped_steps;
      spdlog::warn("step {}: non-finite gradient in {}: update skipped (training.nan_policy)",
                   step + 1, bad_grad);
    }

    const bool last = step + 1 == tc.steps;
    // Inside the replica, every step: its mean loss, and whether any of its ranks was asked to
    // stop. With one replica (DDP included) that is every rank, so the stop is agreed at once.
    std::vector<double> shared{loss, stop_requested() ? 1.0 : 0.0};
    if (topo.replica->size() > 1) topo.replica->all_reduce_host(shared, ReduceOp::Sum);
    loss = shared[0] / topo.replica_size;
    stop_pending = stop_pending || shared[1] > 0;
    bool stopping = !several_replicas && stop_pending && !last;

    bool checkpoint_due = ckpt_every > 0 && ((step + 1) % ckpt_every == 0 || last || stopping);
    std::vector<nlohmann::json> outer_records;
    if (outer) {
      outer->poll();
      // An overlapped sync completes τ steps after its start, or early when the run ends or a
      // checkpoint is due (a checkpoint never holds a sync in flight: resume stays exact).
      const bool complete_now = last || stopping || checkpoint_due;
      if (outer->in_flight() &&
          (step + 1 >= overlap_started_step + outer->overlap_steps() || complete_now)) {
        const double norm = outer->finish(model.params());
        outer_records.push_back(outer_record(norm, overlap_started_step, step + 1));
      }
      // Blocking: plain DiLoCo (τ = 0), the final sync (every fragment), and a due sync
      // that would have to complete at once anyway (no step to overlap with, so no merge).
      // With fragments, at most one fragment is due per step (fragments.hpp).
      const int due = outer->due_fragment(step + 1);
      if (last || stopping) {
        const double norm = outer->sync(model.params());
        outer_records.push_back(outer_record(norm, -1, step + 1));
      } else if (due >= 0 && (outer->overlap_steps() == 0 || complete_now)) {
        const double norm = outer->sync_fragment(model.params(), due);
        outer_records.push_back(outer_record(norm, -1, step + 1));
      } else if (due >= 0) {
        outer->start(model.params(), due);
        overlap_started_step = step + 1;
      }
    }

    // The sync point: one exchange over every rank (see above the loop).
    double replicas_mean_loss = loss;
    if (!outer_records.empty() || (checkpoint_due && several_replicas)) {
      const SyncPoint agreed = agree_at_sync_point(
          world, outer ? hash_params(*backend, outer->global_params()) : 0, stop_pending, loss,
          outer ? outer->syncs_done() : 0, sync_ckpt ? sync_ckpt->take_error() : std::string());
      replicas_mean_loss = agreed.mean_loss;
      result.sync_mean_losses.push_back(agreed.mean_loss);
      if (!outer_records.empty()) {
        outer_records.back()["global_fingerprint"] = fmt::format("{:016x}", agreed.fingerprint);
        outer_records.back()["replicas_mean_loss"] = agreed.mean_loss;
      }
      if (several_replicas && agreed.stop && !last && !stopping) {
        stopping = true;
        // A checkpoint never holds a sync in flight (resume stays exact): complete it now.
        if (outer && outer->in_flight()) {
          const double norm = outer->finish(model.params());
          outer_records.push_back(outer_record(norm, overlap_started_step, step + 1));
        }
        checkpoint_due = ckpt_every > 0;
      }
    }
    model.params_changed();
    // A checkpoint at this outer sync (every at_sync-th, the last and a stop's): the copy to
    // host memory now, the files in the background.
    nlohmann::json checkpoint_record;
    if (sync_ckpt && !outer_records.empty() && !outer->in_flight() &&
        (outer->syncs_done() % config.checkpoint.at_sync == 0 || last || stopping) &&
        last_checkpoint != step + 1) {
      const SyncCheckpointCost cost =
          sync_ckpt->save({step + 1, &model, optimizer.get(), &*outer, &train_stream,
                           result.tokens + tokens_per_step, result.skipped_steps, data_hash});
      last_checkpoint = step + 1;
      checkpoint_record = sync_ckpt_stats.add(cost);
      stop_note_checkpoint(step + 1, cost.stall_seconds + cost.previous_write_seconds);
    }
    const double step_seconds = seconds_since(t_step);

    result.steps_done = step + 1;
    result.tokens += tokens_per_step;
    result.final_train_loss = replicas_mean_loss;
    result.step_losses.push_back(loss);
    if (!std::isfinite(loss)) {
      const std::string what = "loss is " + std::to_string(loss) + " at step " +
                               std::to_string(step + 1) + ": training diverged";
      if (tc.nan_policy == "stop")
        throw Error(what + " (lower optimizer.lr or enable optimizer.grad_clip)");
      spdlog::warn(
          "{} (training.nan_policy = \"skip\": going on; no checkpoint is written "
          "while the loss or parameters are non-finite)",
          what);
    }

    // Validation on rank 0's parameters: with DDP, and right after a DiLoCo sync, they are
    // the global model (choose training.eval_interval as a multiple of outer.interval).
    const bool eval_due =
        (tc.eval_interval > 0 && (step + 1) % tc.eval_interval == 0) || last || stopping;
    if (is_root && eval_due && ((val_stream && eval_batches > 0) || !extra_val.empty())) {
      nlohmann::json record = {{"step", step + 1}};
      std::string line;
      if (val_stream && eval_batches > 0) {
        last_val = evaluate(model, *val_stream, eval_batches, B, T);
        record["val_loss"] = last_val;
        if (val_bytes_per_token > 0)
          record["val_bpb"] = bits_per_byte(last_val, val_bytes_per_token);
        line = fmt::format(" | val loss {:.4f}", last_val);
      }
      if (!extra_val.empty()) {
        nlohmann::json bpbs = nlohmann::json::object();
        for (auto& v : extra_val) {
          if (v.batches <= 0) continue;
          const double l = evaluate(model, *v.stream, v.batches, B, T);
          last_extra_val[v.name] = l;
          if (v.bytes_per_token > 0) bpbs[v.name] = bits_per_byte(l, v.bytes_per_token);
          line += fmt::format(" | {} {:.4f}", v.name, l);
        }
        record["val_losses"] = last_extra_val;
        if (!bpbs.empty()) record["val_bpbs"] = bpbs;
      }
      record["tokens"] = result.tokens;
      metrics->write(record);
      spdlog::info("step {:>{}}/{}{}", step + 1, std::to_string(tc.steps).size(), tc.steps, line);
    }
    if (is_root) {
      nlohmann::json record = {{"step", step + 1},
                               {"loss", loss},
                               {"lr", lr},
                               {"grad_norm", inner.grad_norm},
                               {"tokens", result.tokens},
                               {"step_seconds", step_seconds},
                               {"tok_per_s", tokens_per_step / std::max(step_seconds, 1e-9)},
                               {"elapsed_s", seconds_since(t_loop)},
                               {"comm_sent_bytes", model_traffic(topo).total().sent_bytes},
                               {"skipped_steps", result.skipped_steps}};
      if (!bad_grad.empty()) record["skipped"] = true;
      // One sync per step, except at the end of an overlapped run: the in-flight sync
      // completes ("outer_earlier"), then the final blocking one ("outer").
      if (several_replicas && !outer_records.empty())
        record["replicas_mean_loss"] = replicas_mean_loss;
      if (!outer_records.empty()) record["outer"] = outer_records.back();
      if (outer_records.size() > 1) record["outer_earlier"] = outer_records.front();
      if (!checkpoint_record.is_null()) record["checkpoint"] = checkpoint_record;
      metrics->write(record);
    }
    // With several replicas the line's loss is replica 0's (this rank's); at a sync the mean
    // over the replicas follows.
    const bool sync_line = several_replicas && !outer_records.empty();
    if ((step + 1) % tc.log_interval == 0 || last || sync_line)
      spdlog::info(
          "{}{}",
          progress.line(step + 1, loss, lr, inner.grad_norm, step_seconds, seconds_since(t_loop)),
          sync_line ? fmt::format(" | replicas' mean {:.4f}", replicas_mean_loss) : "");
    stop_note_step_finished(seconds_since(t_step));
    if (trace) trace->end_of_step();
    if (checkpoint_due) checkpoint_now(step + 1, loss);
    if (stopping) {
      spdlog::warn("stop requested: stopped after step {}", step + 1);
      result.stopped_early = true;
      break;
    }
  }

  // The last background checkpoint write must be complete (and good) on every rank.
  if (sync_ckpt) fail_together(world, sync_ckpt->finish(), "checkpoint");
  const CommStats cross_replica = cross_replica_traffic() - cross_replica_at_start;
  const CommCounters control = (host_traffic(topo, world) - control_at_start).total();
  // Communication report: per worker, max over ranks (ring figures are equal on every rank
  // of a group, but replicas of different sizes could differ).
  CommStats traffic = model_traffic(topo);
  CommCounters total = traffic.total();
  std::vector<uint64_t> worst{total.sent_bytes};
  world.all_reduce_host(worst, ReduceOp::Max);
  CommReportInput report_in;
  report_in.method = dc.method;
  report_in.workers = topo.world_size;
  report_in.replicas = topo.num_replicas;
  report_in.tokens = result.tokens;
  report_in.steps = static_cast<uint64_t>(result.steps_done);
  report_in.num_params = model.num_params();
  report_in.outer_syncs = outer ? outer->syncs_done() : 0;
  report_in.model_traffic = traffic;
  report_in.host_traffic = host_traffic(topo, world);
  nlohmann::json comm = comm_report_json(report_in);
  comm["sent_bytes_max_over_ranks"] = worst[0];
  // Pseudo-gradient payloads (rank 0's figures): density, bits per kept element.
  if (outer) comm["compression"] = outer->summary_json();
  // Overlapped outer syncs (Streaming DiLoCo): how much of their communication time was
  // hidden behind inner steps (rank 0's timings).
  if (outer) comm["overlap"] = outer->overlap_json();
  // Fragments (Streaming DiLoCo): how the model was split, and the largest single sync's
  // bytes (the peak bandwidth), next to the total.
  if (outer) comm["fragments"] = outer->fragments_json();
  // A simulated link: say so next to the figures, so nobody takes them for a real network's.
  if (link) {
    comm["link"] = link->to_json();
    if (runtime.world_link)
      comm["link"]["simulated_seconds"] =
          link->simulated_seconds() + runtime.world_link->simulated_seconds();
  }
  // Every collective (model or host) over a communicator spanning more than one replica,
  // between the first and the last step: what crosses the slow links.
  const CommCounters xr = cross_replica.total();
  comm["cross_replica"] = {
      {"calls", xr.calls},
      {"bytes", xr.sent_bytes},
      {"seconds", xr.seconds},
      {"by_kind", cross_replica.to_json()},
      {"note",
       "collectives over communicators that span replicas (the world and the outer-sync "
       "group; none with one replica), first to last step, this rank; bytes = sent"}};

  comm["control"] = {
      {"calls", control.calls},
      {"bytes", control.sent_bytes},
      {"seconds", control.seconds},
      {"note",
       "host collectives (loss averages, stop flags, sync-point exchanges) over every "
       "communicator, first to last step, this rank; seconds include waiting for peers"}};

  result.params_hash = hash_params(*backend, model.params());
  result.finite = std::isfinite(result.final_train_loss) && backend->all_finite(model.params());
  result.final_val_loss = last_val;
  result.wall_seconds = seconds_since(t_start);
  result.summary = {{"name", config.name},
                    {"method", dc.method},
                    {"backend", backend->name()},
                    {"workers", topo.world_size},
                    {"parameters", model.num_params()},
                    {"steps", result.steps_done},
                    {"steps_planned", tc.steps},
                    {"stopped_early", result.stopped_early},
                    {"skipped_steps", result.skipped_steps},
                    {"finite", result.finite},
                    {"tokens", result.tokens},
                    {"final_train_loss", result.final_train_loss},
                    {"final_val_loss", last_val >= 0 ? nlohmann::json(last_val) : nullptr},
                    {"wall_time_s", result.wall_seconds},
                    {"tokens_per_s", result.tokens / std::max(seconds_since(t_loop), 1e-9)},
                    {"comm", comm},
                    {"launch", runtime.launch_json()}};
  if (sync_ckpt) result.summary["checkpoints"] = sync_ckpt_stats.to_json();
  if (!extra_val.empty()) {
    result.summary["final_val_losses"] = last_extra_val;
    nlohmann::json bpbs = nlohmann::json::object();
    for (const auto& v : extra_val)
      if (v.bytes_per_token > 0 && last_extra_val.contains(v.name))
        bpbs[v.name] = bits_per_byte(last_extra_val[v.name].get<double>(), v.bytes_per_token);
    if (!bpbs.empty()) result.summary["final_val_bpbs"] = bpbs;
  }
  if (train_stream.is_mixture()) {
    // The windows every replica together was dealt from each source (restarts included).
    nlohmann::json sources = nlohmann::json::array();
    for (const auto& u : train_stream.source_use())
      sources.push_back({{"path", u.glob},
                         {"share", u.share},
                         {"windows_read", u.windows_read},
                         {"tokens_read", u.windows_read * uint64_t(T)},
                         {"epochs", double(u.windows_read) / double(u.windows)}});
    result.summary["data_mixture"] = sources;
  }
  if (link) result.summary["simulated_link"] = comm["link"]["description"];
  result.summary["tokenizer"] = {{"kind", tokenizer.kind()},
                                 {"source", tokenizer.origin()},
                                 {"vocab_size", tokenizer.vocab_size()}};
  if (val_bytes_per_token > 0 && last_val >= 0) {
    result.summary["val_bytes_per_token"] = val_bytes_per_token;
    result.summary["final_val_bpb"] = bits_per_byte(last_val, val_bytes_per_token);
  }
  if (is_root) {
    write_file_atomic(run_dir + "/summary.json", result.summary.dump(2) + "\n");
    spdlog::info("\n{}", comm_report_table(comm));
    if (outer && outer->compressed() && outer->total_stats().kept > 0) {
      const nlohmann::json& z = comm["compression"];
      spdlog::info(
          "pseudo-gradient payloads: density {:.4f} %, {:.2f} bits per kept element "
          "({:.2f} value + {:.2f} index + {:.2f} headers/tables; {:.2f} with padding)",
          100.0 * z["density"].get<double>(), z["bits_per_kept_element"].get<double>(),
          z["value_bits_per_kept_element"].get<double>(),
          z["index_bits_per_kept_element"].get<double>(),
          z["overhead_bits_per_kept_element"].get<double>(),
          z["wire_bits_per_kept_element"].get<double>());
    }
  }
  // No rank leaves before rank 0 has written summary.json: a launcher may kill the job as
  // soon as one rank exits with a non-zero code (a stop by a signal).
  world.barrier();
  return result;
}

}  // namespace loco
