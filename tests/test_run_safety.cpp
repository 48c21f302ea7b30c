// The pieces that keep a run's files safe and its failures loud: the run directory (lock,
// refusal, overwrite), metrics.jsonl (checked writes, trimming on resume), what a resume may
// change, the memory plan, the stop decision, and same_file.
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "loco/config/config.hpp"
#include "loco/core/error.hpp"
#include "loco/core/files.hpp"
#include "loco/io/file_io.hpp"
#include "loco/model/param_layout.hpp"
#include "loco/train/memory_plan.hpp"
#include "loco/train/metrics_log.hpp"
#include "loco/train/resume_checks.hpp"
#include "loco/train/run_dir.hpp"
#include "loco/train/startup_checks.hpp"
#include "loco/train/stop_signal.hpp"
#include "support/catch.hpp"
#include "support/temp_files.hpp"

using namespace loco;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using loco::testing::slurp;
using loco::testing::spit;
using loco::testing::TempDir;

}  // namespace

// ------------------------------------------------------------------ run directory

TEST_CASE("run directory: a fresh start into a directory holding a run is refused", "[run_dir]") {
  TempDir t;
  const std::string dir = t / "run", root = t / "run/checkpoints";
  {
    RunDirectory d(dir, root, /*resuming=*/false, ExistingRun::Refuse);  // creates it
    d.begin(Config{});
  }
  CHECK(fs::exists(t / "run/config.json"));
  CHECK(previous_run_files(dir, root) == std::vector<std::string>{"config.json"});
  REQUIRE_THROWS_WITH(
      RunDirectory(dir, root, false, ExistingRun::Refuse),
      LOCO_CONTAINS("run directory " + dir + " already holds a run (config.json)") &&
          LOCO_CONTAINS("--resume latest") && LOCO_CONTAINS("--overwrite"));
  // Resuming, or asking for an overwrite, is allowed.
  CHECK_NOTHROW(RunDirectory(dir, root, true, ExistingRun::Refuse));
  CHECK_NOTHROW(RunDirectory(dir, root, false, ExistingRun::Overwrite));
  // A checkpoint alone counts as a run too.
  const std::string other = t / "other";
  fs::create_directories(other + "/checkpoints/step-000010");
  CHECK(previous_run_files(other, other + "/checkpoints") ==
        std::vector<std::string>{"checkpoints/step-000010"});
  CHECK_THROWS(RunDirectory(other, other + "/checkpoints", false, ExistingRun::Refuse));
  // Files that are not a run's do not count.
  const std::string notes = t / "notes";
  fs::create_directories(notes);
  spit(notes + "/README", "mine");
  CHECK_NOTHROW(RunDirectory(notes, notes + "/checkpoints", false, ExistingRun::Refuse));
}

TEST_CASE("run directory: a second claim while the first holds it is refused", "[run_dir]") {
  TempDir t;
  const std::string dir = t / "run";
  RunDirectory first(dir, dir + "/checkpoints", false, ExistingRun::Refuse);
  REQUIRE_THROWS_WITH(
      RunDirectory(dir, dir + "/checkpoints", false, ExistingRun::Overwrite),
      LOCO_CONTAINS("is in use by another loco run (pid " + std::to_string(::getpid())));
}

TEST_CASE("run directory: a refused start leaves no directory behind; overwrite clears the run",
          "[run_dir]") {
  TempDir t;
  const std::string fresh = t / "fresh";
  { RunDirectory d(fresh, fresh + "/checkpoints", false, ExistingRun::Refuse); }
  CHECK_FALSE(fs::exists(fresh));  // created, never begun: removed again

  const std::string dir = t / "run", root = dir + "/checkpoints";
  fs::create_directories(root + "/step-000002");
  spit(root + "/step-000002/rank-0.bin", "x");
  spit(root + "/latest", "step-000002\n");
  spit(dir + "/metrics.jsonl", "{\"step\": 1}\n");
  spit(dir + "/summary.json", "{}");
  spit(dir + "/mine.txt", "kept");
  {
    RunDirectory d(dir, root, false, ExistingRun::Overwrite);
    // Nothing changes before begin() (the start-up checks run in between).
    CHECK(fs::exists(dir + "/metrics.jsonl"));
    CHECK(fs::exists(root + "/step-000002"));
    Config c;
    c.name = "new";
    d.begin(c);
  }
  CHECK_FALSE(fs::exists(dir + "/metrics.jsonl"));
  CHECK_FALSE(fs::exists(dir + "/summary.json"));
  CHECK_FALSE(fs::exists(root + "/step-000002"));
  CHECK_FALSE(fs::exists(root + "/latest"));
  CHECK(slurp(dir + "/mine.txt") == "kept");
  CHECK(json::parse(slurp(dir + "/config.json"))["name"] == "new");
}

// ------------------------------------------------------------------ metrics.jsonl

TEST_CASE("metrics log: a failed write names the file and leaves complete lines only",
          "[metrics]") {
  TempDir t;
  const std::string path = t / "metrics.jsonl";
  set_write_fault_for_testing(100);
  {
    MetricsLog log(path);
    log.write({{"step", 1}, {"loss", 2.5}});
    log.write({{"step", 2}, {"loss", 2.25}});
    REQUIRE_THROWS_WITH(
        [&] {
          for (int s = 3; s < 100; ++s) log.write({{"step", s}, {"loss", 2.0}});
        }(),
        LOCO_CONTAINS("cannot write " + path + ": injected write failure"));
    // After an error the log refuses further writes instead of appending after a gap.
    CHECK_THROWS_WITH(log.write({{"step", 99}}), LOCO_CONTAINS("closed after an error"));
  }
  set_write_fault_for_testing(std::nullopt);
  const std::string text = slurp(path);
  REQUIRE(!text.empty());
  CHECK(text.back() == '\n');
  CHECK(text.size() <= 100);
  size_t lines = 0;
  for (size_t p = 0; p < text.size(); p = text.find('\n', p) + 1, ++lines)
    CHECK_NOTHROW(json::parse(text.substr(p, text.find('\n', p) - p)));
  CHECK(lines >= 2);
}

TEST_CASE("metrics log: trimming on resume keeps the records up to the checkpoint step",
          "[metrics]") {
  TempDir t;
  const std::string path = t / "metrics.jsonl";
  CHECK(trim_metrics_after(path, 4).dropped == 0);  // no file: nothing to do
  spit(path,
       "{\"step\":1,\"loss\":3}\n{\"step\":2,\"loss\":2}\n{\"step\":2,\"val_loss\":2.1}\n"
       "{\"step\":2,\"resume\":{}}\n{\"step\":3,\"loss\":1.5}\n{\"note\":\"no step\"}\n"
       "{\"step\":4,\"lo");
  const MetricsTrim r = trim_metrics_after(path, 2);
  CHECK(r.kept == 5);
  CHECK(r.dropped == 2);  // step 3 and the torn line
  CHECK(slurp(path) ==
        "{\"step\":1,\"loss\":3}\n{\"step\":2,\"loss\":2}\n{\"step\":2,\"val_loss\":2.1}\n"
        "{\"step\":2,\"resume\":{}}\n{\"note\":\"no step\"}\n");
  // Nothing past the step: the file is left as it is.
  const std::string before = slurp(path);
  CHECK(trim_metrics_after(path, 10).dropped == 0);
  CHECK(slurp(path) == before);
}

// ------------------------------------------------------------------ what a resume may change

TEST_CASE("resume: a change of training data or seq_len is named", "[resume]") {
  Config c;
  c.data.train = "/data/a.bin";
  c.training.seq_len = 128;
  json meta = {{"config", config_to_json(c)}, {kDataHashKey, uint64_t{42}}};
  CHECK(training_data_change(meta, c, 42).empty());
  // Same content elsewhere: not a change.
  Config moved = c;
  moved.data.train = "/elsewhere/a.bin";
  CHECK(training_data_change(meta, moved, 42).empty());
  CHECK(training_data_change(meta, moved, 43) ==
        "data.train: /data/a.bin -> /elsewhere/a.bin (other content)");
  Config shorter = c;
  shorter.training.seq_len = 64;
  CHECK(training_data_change(meta, shorter, 42) == "training.seq_len: 128 -> 64");
  // Without a hash (older checkpoints) the path decides.
  meta.erase(kDataHashKey);
  CHECK(training_data_change(meta, moved, 42) == "data.train: /data/a.bin -> /elsewhere/a.bin");
}

TEST_CASE("startup checks: json_differences names the differing keys with both values",
          "[startup]") {
  const json a = {{"training", {{"steps", 8}, {"seed", 1}}}, {"name", "x"}, {"only_a", 1}};
  const json b = {{"training", {{"steps", 6}, {"seed", 1}}}, {"name", "x"}, {"only_b", true}};
  const auto d = json_differences(a, b);
  REQUIRE(d.size() == 3);
  CHECK(d[0].key == "only_a");
  CHECK(d[0].there == "(missing)");
  CHECK(d[1].key == "training.steps");
  CHECK(d[1].here == "8");
  CHECK(d[1].there == "6");
  CHECK(d[2].key == "only_b");
  CHECK(d[2].here == "(missing)");
  CHECK(json_differences(a, a).empty());
}

// ------------------------------------------------------------------ memory plan

TEST_CASE("memory plan: parameters match the layout, and huge sizes are refused by key",
          "[memory]") {
  ModelConfig m;
  const MemoryPlan p = plan_model_memory(m, 8, 128, 4);
  CHECK(p.parameters == llama_param_layout(m).total);
  CHECK_FALSE(p.overflow);
  // Activations grow linearly with the tokens.
  CHECK(plan_model_memory(m, 16, 128, 4).activations == 2 * p.activations);
  CHECK_NOTHROW(check_memory_plan("this run", p, m, 8, 128, "training.micro_batch",
                                  "training.seq_len", true, uint64_t{1} << 40));
  // More tokens per pass than the kernels' int indices.
  REQUIRE_THROWS_WITH(
      check_memory_plan("this run", plan_model_memory(m, 100000000, 128, 4), m, 100000000, 128,
                        "training.micro_batch", "training.seq_len", true, uint64_t{1} << 40),
      LOCO_CONTAINS("training.micro_batch = 100000000 × training.seq_len = 128 = 12800000000 "
                    "tokens per forward pass"));
  // More than the machine: the message gives the sizes and the keys.
  REQUIRE_THROWS_WITH(
      check_memory_plan("this run", p, m, 8, 128, "training.micro_batch", "training.seq_len", true,
                        1 << 20),
      LOCO_CONTAINS("this run needs about") && LOCO_CONTAINS("more than the 1.00 MiB") &&
          LOCO_CONTAINS("model.d_model = 128") && LOCO_CONTAINS("lower training.micro_batch"));
  // With the model in device memory only the host token buffers count.
  CHECK_NOTHROW(check_memory_plan("this run", p, m, 8, 128, "training.micro_batch",
                                  "training.seq_len", false, 1 << 20));
  // A product beyond 64 bits saturates and is reported as such, never wraps.
  ModelConfig wide = m;
  wide.d_model = wide.d_ff = wide.vocab_size = std::numeric_limits<int>::max() - 1;
  wide.n_heads = wide.n_kv_heads = 1;
  const MemoryPlan w = plan_model_memory(wide, 1 << 30, 1, 4);
  CHECK(w.overflow);
  CHECK_THROWS_WITH(
      check_memory_plan("this run", w, wide, 1 << 30, 1, "b", "t", true, uint64_t{1} << 40),
      LOCO_CONTAINS("does not fit in 64 bits"));
  CHECK(format_bytes(1536) == "1.50 KiB");
}

// ------------------------------------------------------------------ stop decision

TEST_CASE("stop decision: exit at once only when finishing does not fit the grace period",
          "[stop]") {
  StopSituation s;
  s.in_loop = true;
  s.step = 41;
  s.step_estimate = 2.0;
  s.step_elapsed = 0.5;
  s.checkpoint_estimate = 1.0;
  s.last_checkpoint_step = 40;
  // No launcher deadline: always finish the step (and checkpoint).
  CHECK_FALSE(decide_stop(s, SIGTERM).exit_now);
  // mpirun's default: 1 s; the rest of the step (1.5 s) and a checkpoint (1 s) do not fit.
  s.grace = {1.0, "Open MPI's odls_base_sigkill_timeout"};
  StopDecision d = decide_stop(s, SIGTERM);
  CHECK(d.exit_now);
  CHECK_THAT(d.message, LOCO_CONTAINS("stop requested (SIGTERM)") &&
                            LOCO_CONTAINS("exiting now (code 143)") &&
                            LOCO_CONTAINS("the last one is step 40") && LOCO_CONTAINS("SIGUSR1"));
  // A grace period long enough: finish.
  s.grace.seconds = 60;
  d = decide_stop(s, SIGTERM);
  CHECK_FALSE(d.exit_now);
  CHECK_THAT(d.message, LOCO_CONTAINS("finishing step 42 and writing a checkpoint"));
  // Too short, and no checkpoint yet: try anyway (nothing to lose).
  s.grace.seconds = 1;
  s.last_checkpoint_step = -1;
  d = decide_stop(s, SIGINT);
  CHECK_FALSE(d.exit_now);
  CHECK_THAT(d.message, LOCO_CONTAINS("no checkpoint yet"));
  // Checkpoints off: nothing to save, so leave at once.
  s.checkpoints_enabled = false;
  CHECK(decide_stop(s, SIGTERM).exit_now);
  // SIGUSR1 is never followed by a kill: always graceful.
  CHECK_FALSE(decide_stop(s, SIGUSR1).exit_now);
  // Before the loop there is nothing to save.
  s.in_loop = false;
  CHECK(decide_stop(s, SIGTERM).exit_now);
}

TEST_CASE("stop grace: from LOCO_STOP_GRACE_S or Open MPI's sigkill timeout", "[stop]") {
  struct Env {
    const char* name;
    std::string old;
    bool had;
    Env(const char* n, const char* value) : name(n), had(std::getenv(n) != nullptr) {
      if (had) old = std::getenv(n);
      if (value)
        ::setenv(n, value, 1);
      else
        ::unsetenv(n);
    }
    ~Env() {
      if (had)
        ::setenv(name, old.c_str(), 1);
      else
        ::unsetenv(name);
    }
  };
  {
    Env a("LOCO_STOP_GRACE_S", nullptr), b("OMPI_COMM_WORLD_SIZE", nullptr);
    CHECK(std::isinf(stop_grace().seconds));
  }
  {
    Env a("LOCO_STOP_GRACE_S", nullptr), b("OMPI_COMM_WORLD_SIZE", "2"),
        c("OMPI_MCA_odls_base_sigkill_timeout", nullptr);
    CHECK(stop_grace().seconds == 1.0);
    Env d("OMPI_MCA_odls_base_sigkill_timeout", "30");
    CHECK(stop_grace().seconds == 30.0);
  }
  {
    Env a("LOCO_STOP_GRACE_S", "2.5");
    CHECK(stop_grace().seconds == 2.5);
    CHECK(stop_grace().source == "LOCO_STOP_GRACE_S");
  }
  {
    Env a("LOCO_STOP_GRACE_S", "soon");
    CHECK_THROWS_WITH(stop_grace(), LOCO_CONTAINS("LOCO_STOP_GRACE_S=soon: expected a number"));
  }
}

// ------------------------------------------------------------------ same_file

TEST_CASE("same_file: through symbolic and hard links and .. components", "[files]") {
  TempDir t;
  spit(t / "a", "x");
  fs::create_symlink(t / "a", t / "sym");
  fs::create_hard_link(t / "a", t / "hard");
  fs::create_directories(t / "d");
  CHECK(same_file(t / "a", t / "sym"));
  CHECK(same_file(t / "a", t / "hard"));
  CHECK(same_file(t / "a", t / "d/../a"));
  CHECK_FALSE(same_file(t / "a", t / "b"));
  // Neither exists yet: the same path once normalised.
  CHECK(same_file(t / "new", t / "d/../new"));
  CHECK_FALSE(same_file(t / "new", t / "new2"));
}
