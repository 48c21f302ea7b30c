// One inner training step (loco/train/train_step.hpp).
#include "loco/train/train_step.hpp"

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "loco/core/error.hpp"
#include "loco/model/llama.hpp"
#include "loco/ops/step_stats.hpp"
#include "loco/optim/optimizer.hpp"

namespace loco {

TrainStep::Mode TrainStep::mode_from_env() {
  const char* v = std::getenv("LOCO_STEP");
  const std::string s = v != nullptr ? v : "";
  if (s.empty() || s == "device") return Mode::Device;
  if (s == "host") return Mode::Host;
  if (s == "graph") return Mode::Graph;
  throw Error("LOCO_STEP = \"" + s + "\": unknown (allowed: \"host\", \"device\", \"graph\")");
}

const char* TrainStep::mode_name(Mode m) {
  switch (m) {
    case Mode::Host:
      return "host";
    case Mode::Device:
      return "device";
    case Mode::Graph:
      return "graph";
  }
  return "?";
}

TrainStep::TrainStep(LlamaModel& model, InnerOptimizer& optimizer, Options options)
    : model_(model),
      optimizer_(optimizer),
      adamw_(dynamic_cast<AdamW*>(&optimizer)),
      backend_(model.backend()),
      options_(options),
      mode_(options.mode) {
  LOCO_CHECK(options_.B > 0 && options_.T > 0 && options_.micro_batches > 0,
             "TrainStep needs B, T and micro_batches > 0");
  if (adamw_ == nullptr) mode_ = Mode::Host;
  if (mode_ == Mode::Host) return;
  const size_t tokens = size_t(options_.B) * size_t(options_.T) * size_t(options_.micro_batches);
  stats_ = OwnedBuf(backend_, ops::kStepStatsWords, DType::I32);
  inputs_ = OwnedBuf(backend_, tokens, DType::I32);
  targets_ = OwnedBuf(backend_, tokens, DType::I32);
}

TrainStep::~TrainStep() {
  graph_a_.reset();  // the graphs use the buffers: they go first
  graph_b_.reset();
}

// Zero the statistics and gradients, then forward + backward of every micro-batch on the
// staged tokens, each adding its mean loss to the statistics. `poll` (eager runs only) after
// each micro-batch.
void TrainStep::record_forward_backward(const std::function<void()>& poll) {
  backend_.zero(stats_);
  backend_.zero(model_.grads());
  const size_t n = size_t(options_.B) * size_t(options_.T);
  const float scale = 1.0f / static_cast<float>(options_.micro_batches);
  for (int m = 0; m < options_.micro_batches; ++m) {
    model_.forward_backward_device(inputs_.slice(size_t(m) * n, n),
                                   targets_.slice(size_t(m) * n, n), options_.B, options_.T, scale,
                                   stats_);
    if (poll) poll();
  }
}

// Σ g², clip scale, non-finite flag; then the update that reads them.
void TrainStep::record_update() {
  backend_.clip_grad_norm(stats_, model_.grads(), options_.grad_clip);
  adamw_->update_device(model_.params(), model_.grads(), stats_);
}

bool TrainStep::capture_graphs(bool split) {
  graph_a_.reset();
  graph_b_.reset();
  if (split) {
    graph_a_ = backend_.capture([this] { record_forward_backward({}); });
    if (graph_a_) graph_b_ = backend_.capture([this] { record_update(); });
    if (!graph_b_) graph_a_.reset();
  } else {
    graph_a_ = backend_.capture([this] {
      record_forward_backward({});
      record_update();
    });
  }
  split_ = split;
  captured_generation_ = model_.activations_generation();
  return graph_a_ != nullptr;
}

void TrainStep::start(const int32_t* inputs, const int32_t* targets, double lr,
                      const Hooks& hooks) {
  LOCO_CHECK(!pending_, "TrainStep::start: the previous step was not finished");
  pending_ = true;
  if (mode_ == Mode::Host) return run_host(inputs, targets, lr, hooks);
  // Host data first (synchronous copies, before anything of this step is enqueued).
  backend_.upload(inputs_, inputs);
  backend_.upload(targets_, targets);
  adamw_->begin_device_step(lr);
  const bool split = static_cast<bool>(hooks.reduce_grads);
  bool graph = mode_ == Mode::Graph && warmed_up_;
  if (graph &&
      (!graph_a_ || split != split_ || captured_generation_ != model_.activations_generation()))
    graph = capture_graphs(split);
  if (graph) {
    // A graph whose scratch memory was reallocated since the capture cannot run: capture again.
    if (!graph_a_->launch()) {
      graph = capture_graphs(split) && graph_a_->launch();
      LOCO_CHECK(graph, "a freshly captured step graph runs");
    }
    if (hooks.poll) hooks.poll();
    if (split) {
      hooks.reduce_grads(model_.grads());
      if (!graph_b_->launch()) {  // the reduction moved the scratch memory: this once eagerly
        record_update();
        graph_a_.reset();
        graph_b_.reset();
      }
    }
    return;
  }
  if (mode_ == Mode::Graph && warmed_up_) mode_ = Mode::Device;  // this backend has no graphs
  // Eagerly: device mode, a backend without graphs, or the first step of graph mode (which
  // allocates and plans what the capture of the next step then finds in place).
  warmed_up_ = true;
  record_forward_backward(hooks.poll);
  if (split) hooks.reduce_grads(model_.grads());
  record_update();
}

void TrainStep::run_host(const int32_t* inputs, const int32_t* targets, double lr,
                         const Hooks& hooks) {
  backend_.zero(model_.grads());
  const size_t n = size_t(options_.B) * size_t(options_.T);
  double loss = 0.0;
  for (int m = 0; m < options_.micro_batches; ++m) {
    loss += model_.forward_backward(inputs + size_t(m) * n, targets + size_t(m) * n, options_.B,
                                    options_.T, 1.0f / static_cast<float>(options_.micro_batches));
    if (hooks.poll) hooks.poll();
  }
  if (hooks.reduce_grads) hooks.reduce_grads(model_.grads());
  const GradNorm gn = global_grad_norm(backend_, model_.grads(), options_.grad_clip);
  host_result_ =
      Result{loss / options_.micro_batches, gn.norm, gn.clip_scale, std::isfinite(gn.norm)};
  if (host_result_.finite) optimizer_.step(model_.params(), model_.grads(), lr, gn.clip_scale);
}

TrainStep::Result TrainStep::finish() {
  LOCO_CHECK(pending_, "TrainStep::finish without a started step");
  pending_ = false;
  if (mode_ == Mode::Host) return host_result_;
  int32_t words[ops::kStepStatsWords];
  backend_.download(words, stats_);  // waits for the step
  const ops::StepStats st = ops::read_step_stats(words);
  Result r;
  r.loss = st.loss_sum / options_.micro_batches;
  r.grad_norm = std::sqrt(st.grad_sum_squares);
  r.clip_scale = st.clip_scale;
  r.finite = !st.non_finite;
  if (!r.finite) optimizer_.set_steps_taken(optimizer_.steps_taken() - 1);  // it was skipped
  return r;
}

}  // namespace loco
