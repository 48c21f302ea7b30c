// One inner training step, as the trainer and `loco bench` run it: zero the gradients →
// forward + backward over the micro-batches → (the replica all-reduce, a hook) → global
// gradient norm and clip → optimizer update. Three ways to run the same arithmetic
// (LOCO_STEP = host | device | graph; default device):
//
//  - host:   the host reads every micro-batch's loss, the gradient norm and whether it is
//            finite before it calls the update (the sequence loco ran before this class):
//            a synchronisation per micro-batch and one for the norm.
//  - device: the same work enqueued with no host synchronisation inside the step. The loss,
//            Σ g², the clip scale and the non-finite flag stay in backend memory
//            (loco/ops/step_stats.hpp); the AdamW update reads its scalars there (the clip
//            scale, this step's lr and bias corrections) and skips itself when the gradient
//            is not finite. The host reads the statistics once, in finish().
//  - graph:  device, captured once as a graph (Backend::capture: CUDA graphs) and replayed
//            every step; the first step runs eagerly (it allocates the activations, grows the
//            scratch memory and plans the GEMMs, none of which a capture may do). With a
//            gradient all-reduce between backward and update the step is two graphs. A
//            backend without graphs (the CPU) runs device.
//
// device and graph need AdamW (its update is the one that reads device scalars); other
// optimizers run host. All three give the same parameters bit for bit (the same kernels in
// the same order; tests/test_train_step.cpp on the CPU, tests/gpu/gpu_test_step.cpp on
// CUDA and in the emulator). Only the loss may differ in its last bits between host and
// device on CUDA, where the device sums the per-token losses in another order.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "loco/backend/backend.hpp"
#include "loco/backend/owned_buf.hpp"

namespace loco {

class LlamaModel;
class InnerOptimizer;
class AdamW;

class TrainStep {
 public:
  enum class Mode { Host, Device, Graph };
  // LOCO_STEP: "host", "device" or "graph"; unset or empty: device. loco::Error otherwise.
  static Mode mode_from_env();
  static const char* mode_name(Mode m);

  struct Options {
    int B = 1, T = 1;
    int micro_batches = 1;   // training.grad_accum
    double grad_clip = 0.0;  // optimizer.grad_clip; <= 0: no clipping
    Mode mode = Mode::Device;
  };
  TrainStep(LlamaModel& model, InnerOptimizer& optimizer, Options options);
  ~TrainStep();
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;

  // What runs: the requested mode, or host for an optimizer other than AdamW, or device
  // while no graph has been captured (first step, or a backend without graphs).
  Mode mode() const { return mode_; }
  bool graph_captured() const { return graph_a_ != nullptr; }

  struct Hooks {
    std::function<void(Buf)> reduce_grads;  // after the last backward (the replica all-reduce)
    std::function<void()> poll;             // between micro-batches; once after a graph launch
  };
  // Starts one step on micro_batches × B × T tokens in `inputs` and `targets`, micro-batch
  // after micro-batch, with learning rate `lr`. Returns once the work is enqueued (host mode:
  // once it is done).
  void start(const int32_t* inputs, const int32_t* targets, double lr, const Hooks& hooks = {});

  struct Result {
    double loss = 0.0;       // mean over the micro-batches of each one's mean token loss
    double grad_norm = 0.0;  // ‖g‖ before clipping
    float clip_scale = 1.0f;
    bool finite = true;  // false: ‖g‖ is not finite and the update was skipped
  };
  // Waits for the step and reads its statistics (the one synchronisation of a device step).
  // A skipped update does not count as an optimizer step (the counter is rolled back).
  Result finish();

 private:
  void record_forward_backward(const std::function<void()>& poll);
  void record_update();
  void run_host(const int32_t* inputs, const int32_t* targets, double lr, const Hooks& hooks);
  bool capture_graphs(bool split);

  LlamaModel& model_;
  InnerOptimizer& optimizer_;
  AdamW* adamw_ = nullptr;
  Backend& backend_;
  Options options_;
  Mode mode_;
  OwnedBuf stats_, inputs_, targets_;  // backend memory (device and graph modes)
  bool warmed_up_ = false;
  bool split_ = false;  // the captured graphs have a reduction between them
  uint64_t captured_generation_ = 0;
  std::unique_ptr<Backend::Graph> graph_a_, graph_b_;
  Result host_result_;
  bool pending_ = false;
};

}  // namespace loco
