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

// An error every rank of a job raises together, with the same message (start-up checks that
// first share every rank's facts): the ranks can exit on their own, nobody is left waiting in
// a collective, so no MPI_Abort is needed.
class CollectiveError : public Error {
 public:
  using Error::Error;
};

// Internal invariant checks (programming errors, not user input).
#define LOCO_CHECK(cond, msg)                                                             \
  do {                                                                                    \
    if (!(cond))                                                                          \
      throw ::loco::Error(std::string("internal check failed: ") + #cond + " (" + (msg) + \
                          ") at " + __FILE__ + ":" + std::to_string(__LINE__));           \
  } while (0)

}  // namespace loco
