#include "loco/train/trainer.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <vector>

#include "loco/backend/backend.hpp"
#include "loco/core/files.hpp"
#include "loco/data/stream.hpp"
#include "loco/model/llama.hpp"
#include "loco/optim/optimizer.hpp"
#include "loco/optim/schedule.hpp"
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

}  // namespace

TrainResult train(const Config& config, const std::string& run_dir) {
  const auto& tc = config.training;
  const auto t_start = Clock::now();
  auto backend = make_backend(config.backend);
  LlamaModel model(config.model, *backend);
  model.init_weights(config.training.seed);
  auto optimizer = make_inner_optimizer(config.optimizer, model.layout(), *backend);

  TokenStream train_stream(config.data.train, tc.seq_len, tc.seed, 0, 1, /*shuffle=*/true,
                           config.model.vocab_size);
  std::unique_ptr<TokenStream> val_stream;
  if (!config.data.val.empty())
    val_stream = std::make_unique<TokenStream>(config.data.val, tc.seq_len, tc.seed, 0, 1,
                                               /*shuffle=*/false, config.model.vocab_size);
  const int eval_batches =
      val_stream ? static_cast<int>(std::min<size_t>(tc.eval_batches,
                                                      val_stream->windows_per_worker() /
                                                          std::max(1, tc.micro_batch)))
                 : 0;

  spdlog::info("loco: {} | backend {} | {} parameters | {}", config.name, backend->name(),
               model.num_params(), train_stream.describe());

  MetricsLog metrics(run_dir + "/metrics.jsonl");
  const int B = tc.micro_batch, T = tc.seq_len;
  const long long tokens_per_step = static_cast<long long>(B) * T * tc.grad_accum;
  std::vector<int32_t> inputs(static_cast<size_t>(B) * T), targets(inputs.size());

  TrainResult result;
  ProgressPrinter progress(tc.steps, tokens_per_step);
  const auto t_loop = Clock::now();
  double last_val = -1.0;
  for (int step = 0; step < tc.steps; ++step) {
    const auto t_step = Clock::now();
    backend->zero(model.grads());
    double loss = 0.0;
    for (int micro = 0; micro < tc.grad_accum; ++micro) {
      train_stream.next_batch(B, inputs.data(), targets.data());
      loss += model.forward_backward(inputs.data(), targets.data(), B, T,
                                     1.0f / static_cast<float>(tc.grad_accum));
    }
    loss /= tc.grad_accum;
    const GradNorm gn = global_grad_norm(*backend, model.grads(), config.optimizer.grad_clip);
    const double lr = learning_rate(config.schedule, config.optimizer.lr, step, tc.steps);
    optimizer->step(model.params(), model.grads(), lr, gn.clip_scale);
    model.params_changed();
    const double step_seconds = seconds_since(t_step);

    result.steps_done = step + 1;
    result.tokens += tokens_per_step;
    result.final_train_loss = loss;
    if (!std::isfinite(loss)) throw Error("loss is " + std::to_string(loss) + " at step " +
                                          std::to_string(step + 1) + ": training diverged");

    const bool last = step + 1 == tc.steps;
    if (val_stream && eval_batches > 0 &&
        ((tc.eval_interval > 0 && (step + 1) % tc.eval_interval == 0) || last)) {
      last_val = evaluate(model, *val_stream, eval_batches, B, T);
      metrics.write({{"step", step + 1}, {"val_loss", last_val}, {"tokens", result.tokens}});
      spdlog::info("step {:>{}}/{} | val loss {:.4f}", step + 1,
                   std::to_string(tc.steps).size(), tc.steps, last_val);
    }
    const double elapsed = seconds_since(t_loop);
    metrics.write({{"step", step + 1},
                   {"loss", loss},
                   {"lr", lr},
                   {"grad_norm", gn.norm},
                   {"tokens", result.tokens},
                   {"step_seconds", step_seconds},
                   {"tok_per_s", tokens_per_step / std::max(step_seconds, 1e-9)},
                   {"elapsed_s", elapsed}});
    if ((step + 1) % std::max(1, tc.log_interval) == 0 || last)
      spdlog::info("{}", progress.line(step + 1, loss, lr, gn.norm, step_seconds, elapsed));
    if (stop_requested() && !last) {
      spdlog::warn("stop requested: stopping after step {}", step + 1);
      result.stopped_early = true;
      break;
    }
  }

  result.final_val_loss = last_val;
  result.wall_seconds = seconds_since(t_start);
  result.summary = {{"name", config.name},
                    {"backend", backend->name()},
                    {"parameters", model.num_params()},
                    {"steps", result.steps_done},
                    {"steps_planned", tc.steps},
                    {"stopped_early", result.stopped_early},
                    {"tokens", result.tokens},
                    {"final_train_loss", result.final_train_loss},
                    {"final_val_loss", last_val >= 0 ? nlohmann::json(last_val) : nullptr},
                    {"wall_time_s", result.wall_seconds},
                    {"tokens_per_s", result.tokens / std::max(seconds_since(t_loop), 1e-9)}};
  write_file_atomic(run_dir + "/summary.json", result.summary.dump(2) + "\n");
  return result;
}

}  // namespace loco
