// Errors that reach the user: one message that names what is wrong and where.
#pragma once
#include <stdexcept>
#include <string>

namespace loco {

// Every user-facing failure is a loco::Error; the CLI prints what() and exits non-zero.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Internal invariant checks (programming errors, not user input).
#define LOCO_CHECK(cond, msg)                                                              \
  do {                                                                                     \
    if (!(cond))                                                                           \
      throw ::loco::Error(std::string("internal check failed: ") + #cond + " (" + (msg) + \
                          ") at " + __FILE__ + ":" + std::to_string(__LINE__));            \
  } while (0)

}  // namespace loco
