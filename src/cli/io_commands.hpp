// `loco export-hf`, `loco eval` and `loco tokenize`: each registers its subcommand on the app;
// after parsing, main() calls run() for the one chosen. Both run in one process (no MPI
// collectives).
#pragma once
#include <functional>

namespace CLI {
class App;
}

namespace loco::cli {

struct IoCommand {
  CLI::App* sub = nullptr;
  std::function<int()> run;
};

IoCommand add_export_hf_command(CLI::App& app);
IoCommand add_eval_command(CLI::App& app);
IoCommand add_tokenize_command(CLI::App& app);
// `loco launch` (the elastic supervisor): no MPI in its own process; it starts mpirun.
IoCommand add_launch_command(CLI::App& app);

}  // namespace loco::cli
