#include "loco/train/trainer.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <optional>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/core/files.hpp"
#include "loco/core/hash.hpp"
#include "loco/data/stream.hpp"
#include "loco/dist/outer_sync.hpp"
#include "loco/model/llama.hpp"
#include "loco/optim/optimizer.hpp"
#include "loco/optim/schedule.hpp"
#include "loco/train/comm_report.hpp"
#include "loco/train/progress.hpp"
#include "loco/train/stop_signal.hpp"

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

class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path) : out_(path, std::ios::app) {
    if (!out_) throw Error("cannot open " + path + " for writing");
  }
  void write(const nlohmann::json& record) {
    out_ << record.dump() << '\n';
    out_.flush();
  }

 private:
  std::ofstream out_;
};

uint64_t hash_params(Backend& backend, Buf params) {
  std::vector<float> host(params.numel);
  backend.download(host.data(), params);
  return hash_bytes(host.data(), host.size() * sizeof(float));
}

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

// The model-sync collectives (not the small host ones) of this rank's communicators.
CommStats model_traffic(const Topology& topo) {
  CommStats s = topo.replica->stats() + topo.cross->stats();
  CommStats only_model;
  for (CommKind k : {CommKind::AllReduce, CommKind::AllGather, CommKind::Broadcast,
                     CommKind::Barrier})
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

}  // namespace

TrainResult train(const Config& config, const std::string& run_dir, Communicator& world) {
  const auto& tc = config.training;
  const auto& dc = config.distributed;
  const bool is_root = world.rank() == 0;
  const auto t_start = Clock::now();

  Topology topo = make_topology(dc, world);
  auto backend = make_backend(config.backend);
  LlamaModel model(config.model, *backend);
  model.init_weights(config.training.seed);
  auto optimizer = make_inner_optimizer(config.optimizer, model.layout(), *backend);

  // Data: one stream per replica; the replica's ranks split each batch of R·B sequences, so
  // R ranks see exactly what one process with R× the batch would see.
  const int B = tc.micro_batch, T = tc.seq_len, R = topo.replica_size;
  TokenStream train_stream(config.data.train, T, tc.seed, topo.replica_index, topo.num_replicas,
                           /*shuffle=*/true, config.model.vocab_size);
  std::unique_ptr<TokenStream> val_stream;
  if (!config.data.val.empty())
    val_stream = std::make_unique<TokenStream>(config.data.val, T, tc.seed, 0, 1,
                                               /*shuffle=*/false, config.model.vocab_size);
  const int eval_batches =
      val_stream ? static_cast<int>(std::min<size_t>(
                       tc.eval_batches, val_stream->windows_per_worker() / std::max(1, B)))
                 : 0;

  // Start-up consistency: a mismatch stops every rank with the same message.
  // (Paths may differ between nodes; the data is compared by content instead.)
  nlohmann::json shared_config = config_to_json(config);
  shared_config.erase("output");
  shared_config["data"].erase("train");
  shared_config["data"].erase("val");
  require_agreement(world, hash_string(shared_config.dump()), "the resolved config");
  require_agreement(world, train_stream.tokens_hash() ^ train_stream.total_tokens(),
                    "the training data (token content)");
  require_agreement(world, hash_params(*backend, model.params()), "the initial parameters");

  std::optional<OuterSync> outer;
  if (dc.method == "diloco")
    outer.emplace(dc.outer, dc.compression, model.layout(), *backend, *topo.cross,
                  model.params());

  if (!is_root) spdlog::set_level(spdlog::level::warn);
  spdlog::info("loco: {} | {} | backend {} | {} parameters | {} worker(s){} | {}", config.name,
               dc.method, backend->name(), model.num_params(), topo.world_size,
               dc.method == "diloco" ? fmt::format(" as {} replica(s) of {}, H = {}",
                                                   topo.num_replicas, R, dc.outer.interval)
                                     : std::string(),
               train_stream.describe());

  if (outer && outer->compressed()) {
    const auto& z = dc.compression;
    spdlog::info("compression: error feedback {} (beta {}) | {} k={} per {}x{} chunk | {} | "
                 "{} indices | aggregation {} | all-gather",
                 z.error_feedback ? "on" : "off", z.beta, z.selector, z.topk, z.chunk, z.chunk,
                 z.quantizer, z.index_coding, z.aggregation);
  }

  std::optional<MetricsLog> metrics;
  if (is_root) metrics.emplace(run_dir + "/metrics.jsonl");
  const long long tokens_per_step =
      static_cast<long long>(B) * T * tc.grad_accum * topo.world_size;
  std::vector<int32_t> inputs(static_cast<size_t>(R) * B * T), targets(inputs.size());
  const size_t my_offset = static_cast<size_t>(topo.rank_in_replica) * B * T;

  TrainResult result;
  ProgressPrinter progress(tc.steps, tokens_per_step);
  const auto t_loop = Clock::now();
  double last_val = -1.0;
  CommStats traffic_at_last_sync;
  for (int step = 0; step < tc.steps; ++step) {
    const auto t_step = Clock::now();
    backend->zero(model.grads());
    double loss = 0.0;
    for (int micro = 0; micro < tc.grad_accum; ++micro) {
      train_stream.next_batch(R * B, inputs.data(), targets.data());
      loss += model.forward_backward(inputs.data() + my_offset, targets.data() + my_offset, B, T,
                                     1.0f / static_cast<float>(tc.grad_accum));
    }
    loss /= tc.grad_accum;
    if (topo.replica->size() > 1) topo.replica->all_reduce(model.grads(), ReduceOp::Mean);
    const GradNorm gn = global_grad_norm(*backend, model.grads(), config.optimizer.grad_clip);
    const double lr = learning_rate(config.schedule, config.optimizer.lr, step, tc.steps);
    optimizer->step(model.params(), model.grads(), lr, gn.clip_scale);

    const bool last = step + 1 == tc.steps;
    // One small host collective per step: the mean loss and whether any rank was asked to
    // stop, so that every rank stops after the same step.
    std::vector<double> shared{loss, stop_requested() ? 1.0 : 0.0};
    world.all_reduce_host(shared, ReduceOp::Sum);
    loss = shared[0] / topo.world_size;
    const bool stopping = shared[1] > 0 && !last;

    nlohmann::json outer_record;
    if (outer && (outer->due(step + 1) || last || stopping)) {
      const double delta_norm = outer->sync(model.params());
      // θ must be bitwise identical on every rank after a sync.
      require_agreement(world, hash_params(*backend, model.params()),
                        "the parameters after outer sync " + std::to_string(outer->syncs_done()));
      const CommStats now = model_traffic(topo);
      outer_record = {{"outer_step", outer->syncs_done()},
                      {"pseudo_grad_norm", delta_norm},
                      {"compression", outer->last_stats().to_json()},
                      {"comm", (now - traffic_at_last_sync).to_json()},
                      {"comm_cumulative", now.to_json()}};
      traffic_at_last_sync = now;
    }
    model.params_changed();
    const double step_seconds = seconds_since(t_step);

    result.steps_done = step + 1;
    result.tokens += tokens_per_step;
    result.final_train_loss = loss;
    result.step_losses.push_back(loss);
    if (!std::isfinite(loss))
      throw Error("loss is " + std::to_string(loss) + " at step " + std::to_string(step + 1) +
                  ": training diverged (lower optimizer.lr or enable optimizer.grad_clip)");

    // Validation on rank 0's parameters: with DDP, and right after a DiLoCo sync, they are
    // the global model (choose training.eval_interval as a multiple of outer.interval).
    if (is_root && val_stream && eval_batches > 0 &&
        ((tc.eval_interval > 0 && (step + 1) % tc.eval_interval == 0) || last || stopping)) {
      last_val = evaluate(model, *val_stream, eval_batches, B, T);
      metrics->write({{"step", step + 1}, {"val_loss", last_val}, {"tokens", result.tokens}});
      spdlog::info("step {:>{}}/{} | val loss {:.4f}", step + 1,
                   std::to_string(tc.steps).size(), tc.steps, last_val);
    }
    if (is_root) {
      nlohmann::json record = {{"step", step + 1},
                               {"loss", loss},
                               {"lr", lr},
                               {"grad_norm", gn.norm},
                               {"tokens", result.tokens},
                               {"step_seconds", step_seconds},
                               {"tok_per_s", tokens_per_step / std::max(step_seconds, 1e-9)},
                               {"elapsed_s", seconds_since(t_loop)},
                               {"comm_sent_bytes", model_traffic(topo).total().sent_bytes}};
      if (!outer_record.is_null()) record["outer"] = outer_record;
      metrics->write(record);
    }
    if ((step + 1) % tc.log_interval == 0 || last)
      spdlog::info("{}", progress.line(step + 1, loss, lr, gn.norm, step_seconds,
                                       seconds_since(t_loop)));
    if (stopping) {
      spdlog::warn("stop requested: stopped after step {}", step + 1);
      result.stopped_early = true;
      break;
    }
  }

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

  result.params_hash = hash_params(*backend, model.params());
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
                    {"tokens", result.tokens},
                    {"final_train_loss", result.final_train_loss},
                    {"final_val_loss", last_val >= 0 ? nlohmann::json(last_val) : nullptr},
                    {"wall_time_s", result.wall_seconds},
                    {"tokens_per_s", result.tokens / std::max(seconds_since(t_loop), 1e-9)},
                    {"comm", comm}};
  if (is_root) {
    write_file_atomic(run_dir + "/summary.json", result.summary.dump(2) + "\n");
    spdlog::info("\n{}", comm_report_table(comm));
    if (outer && outer->compressed() && outer->total_stats().kept > 0) {
      const nlohmann::json& z = comm["compression"];
      spdlog::info("pseudo-gradient payloads: density {:.4f} %, {:.2f} bits per kept element "
                   "({:.2f} value + {:.2f} index + {:.2f} headers/tables; {:.2f} with padding)",
                   100.0 * z["density"].get<double>(), z["bits_per_kept_element"].get<double>(),
                   z["value_bits_per_kept_element"].get<double>(),
                   z["index_bits_per_kept_element"].get<double>(),
                   z["overhead_bits_per_kept_element"].get<double>(),
                   z["wire_bits_per_kept_element"].get<double>());
    }
  }
  return result;
}

}  // namespace loco
