// SIGINT / SIGTERM ask the trainer to stop after the current step (a second SIGINT kills).
#pragma once

namespace loco {

void install_stop_handlers();
bool stop_requested();
void request_stop();  // for tests and for peers that saw a stop

}  // namespace loco
