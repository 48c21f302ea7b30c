// The `loco` command line: one binary, one subcommand per job.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "loco/backend/backend.hpp"
#include "loco/config/config.hpp"
#include "loco/core/error.hpp"
#include "loco/core/files.hpp"
#include "loco/dist/communicator.hpp"
#include "loco/runtime/runtime.hpp"
#include "loco/train/bench.hpp"
#include "loco/train/stop_signal.hpp"
#include "loco/train/trainer.hpp"

#include "io_commands.hpp"

namespace {

struct TrainArgs {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string out_dir;
  std::string resume;
  bool overwrite = false;
};

int run_train(const TrainArgs& args, loco::Communicator& world) {
  // A stop signal from now on ends the run cleanly (see loco/train/stop_signal.hpp).
  loco::install_stop_handlers();
  // Validate everything before touching the filesystem: a bad config writes nothing. Every
  // rank loads the config; the lowest rank that failed reports, and all ranks exit together.
  loco::Config config;
  std::string config_error;
  try {
    if (args.overwrite && !args.resume.empty())
      throw loco::Error(
          "--overwrite and --resume exclude each other (--overwrite deletes the "
          "run directory's checkpoints; --resume continues from one)");
    config = loco::load_config(args.config_path, args.overrides);
    // Depends on the world size, so load_config cannot check it; train() would, but only
    // after the run directory exists.
    const auto& dc = config.distributed;
    if (dc.method == "diloco" && world.size() % dc.replica_size != 0)
      throw loco::Error(args.config_path + ": distributed.replica_size = " +
                        std::to_string(dc.replica_size) + ": must divide the number of ranks (" +
                        std::to_string(world.size()) + ")");
  } catch (const loco::Error& e) {
    config_error = e.what();
  }
  const auto failed = world.all_gather_host(config_error.empty() ? 0 : 1);
  const auto first_failed = std::find(failed.begin(), failed.end(), 1u);
  if (first_failed != failed.end()) {
    if (world.rank() == first_failed - failed.begin())
      std::fprintf(stderr, "error: %s%s\n",
                   world.size() > 1 ? fmt::format("rank {}: ", world.rank()).c_str() : "",
                   config_error.c_str());
    return 2;
  }
  if (!args.out_dir.empty()) config.output.dir = args.out_dir;
  world.set_timeout_s(config.distributed.timeout_s);
  // The composition root: backend on this rank's device, communicators. Its start-up checks
  // fail on every rank alike, before anything is written.
  loco::Runtime runtime;
  try {
    runtime = loco::make_runtime(config, world);
  } catch (const loco::CollectiveError& e) {
    std::fprintf(stderr, "error: %s%s\n",
                 world.size() > 1 ? fmt::format("rank {}: ", world.rank()).c_str() : "", e.what());
    return 2;
  }
  // train() claims the run directory and writes nothing before every check has passed.
  const loco::TrainResult r =
      loco::train(config, config.output.dir, runtime, args.resume,
                  args.overwrite ? loco::ExistingRun::Overwrite : loco::ExistingRun::Refuse);
  if (r.nothing_to_do) return 0;
  spdlog::info("done: {} steps, {} tokens, final train loss {:.4f}{}, {:.1f} s; run directory {}",
               r.steps_done, r.tokens, r.final_train_loss,
               r.final_val_loss >= 0 ? fmt::format(", val loss {:.4f}", r.final_val_loss) : "",
               r.wall_seconds, config.output.dir);
  if (!r.finite) {
    if (world.rank() == 0)
      std::fprintf(stderr,
                   "error: the run ended with a non-finite loss or parameters after %d steps "
                   "(%d update(s) skipped for non-finite gradients); see %s/metrics.jsonl\n",
                   r.steps_done, r.skipped_steps, config.output.dir.c_str());
    return 1;
  }
  // Stopped by a signal: 128 + its number, as shells and schedulers expect (SIGTERM 143).
  return r.stopped_early ? loco::stop_exit_code() : 0;
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_pattern("%v");
  // Every rank of `mpirun -np K loco train …` is one worker; a plain `loco` is a 1-rank world.
  // `loco launch` starts mpirun itself and must not be an MPI process.
  std::optional<loco::MpiRuntime> mpi;
  if (!(argc > 1 && std::string(argv[1]) == "launch")) mpi.emplace(&argc, &argv);
  CLI::App app{
      "loco: low-communication distributed Llama pre-training (DDP, DiLoCo, MuLoCo, "
      "SparseLoCo)\n\nExamples:\n"
      "  loco train configs/tiny.json\n"
      "  loco train configs/tiny.json --set training.steps=100 --out runs/try\n"
      "  loco tokenize book.txt --train data/book-train.bin --val data/book-val.bin "
      "--val-fraction 0.05"};
  app.require_subcommand(1);

  TrainArgs train_args;
  auto* train = app.add_subcommand("train", "Train a model from a JSON config");
  train->add_option("config", train_args.config_path, "Path to the JSON config")
      ->required()
      ->check(CLI::ExistingFile);
  train->add_option("--set", train_args.overrides,
                    "Override a config key by its dotted path, e.g. --set optimizer.lr=3e-4 "
                    "(repeatable; VALUE is parsed as JSON, else taken as a string)")
      ->type_name("KEY=VALUE");
  train->add_option("--out", train_args.out_dir,
                    "Run directory (default: output.dir from the config)");
  train
      ->add_option("--resume", train_args.resume,
                   "Continue from a checkpoint: \"latest\" (the run directory's latest), a "
                   "step directory, a run directory or a checkpoint file; \"auto\": the latest "
                   "checkpoint if there is one (on any node), else from step 0 in the same "
                   "run directory (what `loco launch` uses for restarts)")
      ->type_name("DIR|latest|auto");
  train->add_flag("--overwrite", train_args.overwrite,
                  "Replace the run in the run directory (its config.json, metrics.jsonl, "
                  "summary.json and checkpoints); without it a directory holding a run is "
                  "refused");

  const loco::cli::IoCommand tokenize = loco::cli::add_tokenize_command(app);
  const loco::BenchCommand bench = loco::add_bench_command(app);
  const loco::cli::IoCommand export_hf = loco::cli::add_export_hf_command(app);
  const loco::cli::IoCommand eval = loco::cli::add_eval_command(app);
  const loco::cli::IoCommand launch = loco::cli::add_launch_command(app);

  // An unknown first word is a mistyped subcommand, not a missing one.
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (const CLI::App* sub : app.get_subcommands({})) {
      known = known || sub->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "error: unknown subcommand \"%s\" (subcommands: %s; see loco --help)\n",
                   argv[1], names.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help is a success; every other parse error is a user error (exit code 2).
    return app.exit(e) == 0 ? 0 : 2;
  }
  std::unique_ptr<loco::Communicator> world;
  try {
    if (*tokenize.sub) return tokenize.run();
    if (*bench.sub) return bench.run();
    if (*export_hf.sub) return export_hf.run();
    if (*eval.sub) return eval.run();
    if (*launch.sub) return launch.run();
    world = loco::make_mpi_world(/*timeout_s=*/120.0);
    if (*train) {
      const int code = run_train(train_args, *world);
      // Stopped by SIGTERM/SIGINT: under mpirun that means the launcher is tearing the job
      // down and would not answer MPI_Finalize (the ranks would hang there until its
      // SIGKILL, losing the exit code). Everything is written; leave without finalizing.
      if (loco::stop_signal() == SIGTERM || loco::stop_signal() == SIGINT) {
        std::fflush(stdout);
        std::fflush(stderr);
        std::_Exit(code);
      }
      return code;
    }
  } catch (const std::exception& e) {
    const bool multi_rank = world && world->size() > 1;
    const std::string where = multi_rank ? fmt::format("rank {}: ", world->rank()) : "";
    std::fprintf(stderr, "error: %s%s\n", where.c_str(), e.what());
    std::fflush(stderr);
    // A peer that died or hangs (a collective timed out or failed) is not the user's error:
    // exit 4, which a supervisor (loco launch) restarts.
    const bool lost_peer = dynamic_cast<const loco::CommTimeoutError*>(&e) != nullptr ||
                           dynamic_cast<const loco::CommFailureError*>(&e) != nullptr;
    const int code = lost_peer ? 4 : dynamic_cast<const loco::Error*>(&e) ? 2 : 3;
    // With several ranks a failure on one must not leave the others waiting in a collective.
    if (multi_rank) loco::abort_world(code == 3 ? 2 : code);
    return code;
  }
  return 0;
}
