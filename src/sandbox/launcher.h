// Builds a sandbox from a SandboxSpec: clone3 into fresh namespaces, run the setup sequence in the
// child, park it on the control fd until go(), then report how it ended.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>

#include "sandbox/spec.h"
#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::sandbox {

namespace detail {
struct ChildPlan;
}

// How the sandbox ended. Exactly one of setup_error or wait_status is meaningful.
struct SandboxExit {
  // The function's raw wait status (from init, or from PID 1 itself with --no-init).
  int wait_status = 0;
  // Set when setup or exec failed; exit_code is then 125, 126 (cannot exec) or 127 (not found).
  std::optional<Error> setup_error;
  int setup_exit_code = 0;
  // PID 1 was killed before it reported (timeout, external kill).
  bool killed = false;
};

class Sandbox {
 public:
  // Clones the sandbox and starts its setup; it then waits for go(). The spec must outlive nothing:
  // everything the child needs is copied into its plan before clone.
  static Result<Sandbox> launch(const SandboxSpec& spec);

  Sandbox(Sandbox&&) noexcept;
  Sandbox& operator=(Sandbox&&) = delete;
  ~Sandbox();  // kills and reaps the sandbox if it is still there

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }  // readable when PID 1 has exited

  // Lets the parked sandbox run the function.
  Result<> go();
  Result<> signal(int sig);
  // SIGKILL to PID 1 kills the whole pid namespace.
  Result<> kill();
  // Waits for PID 1 (immediate once pidfd() is readable), reaps it and reports.
  Result<SandboxExit> reap();

 private:
  Sandbox();
  std::unique_ptr<detail::ChildPlan> plan_;  // kept to name a failed step
  std::string image_name_;
  std::string entrypoint_;
  pid_t pid_ = -1;
  UniqueFd pidfd_, control_, errors_, status_;
  bool reaped_ = false;
};

}  // namespace fnexec::sandbox
