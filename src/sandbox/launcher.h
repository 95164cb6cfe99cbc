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

// The parent's ends of the function's stdio with Stdio::pipes, non-blocking: the event goes into
// in, the result comes out of out and the log out of err.
struct StdioPipes {
  UniqueFd in, out, err;
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

  // Readable once the sandbox is parked at go or its setup failed; wait_ready() then returns at once.
  int control_fd() const { return control_.get(); }
  // Waits until the sandbox is parked: true; false when its setup failed (reap() says why).
  Result<bool> wait_ready();
  // With Stdio::pipes: the parent's ends (empty ones after the first call).
  StdioPipes take_stdio() { return std::move(stdio_); }

  // Lets the parked sandbox run the function.
  Result<> go();
  Result<> signal(int sig);
  // SIGKILL to PID 1 kills the whole pid namespace.
  Result<> kill();
  // Waits for PID 1 (immediate once pidfd() is readable), reaps it and reports.
  Result<SandboxExit> reap();
  // With init: readable once init reported the function's end, before PID 1 exits and its
  // namespaces are torn down; -1 without init.
  int status_fd() const { return plan_init_ ? status_.get() : -1; }
  // After status_fd() became readable: the report without waiting for PID 1 (the destructor reaps
  // it later). Falls back to reap() when init died without reporting.
  Result<SandboxExit> collect();
  // For a process about to exit (`fnexec run`): once collect() has the report, the destructor
  // neither kills nor waits for PID 1, which is only tearing its namespaces down; whoever adopts it
  // when we exit (our parent's reaper) reaps it. Before a report the destructor kills and reaps as ever.
  void leave_to_reaper_once_reported() { leave_to_reaper_ = true; }

 private:
  Sandbox();
  std::unique_ptr<detail::ChildPlan> plan_;  // kept to name a failed step
  std::string image_name_;
  std::string entrypoint_;
  Result<SandboxExit> report(int pid1_status);
  bool plan_init_ = false;
  std::optional<int> collected_status_;
  pid_t pid_ = -1;
  UniqueFd pidfd_, control_, errors_, status_;
  StdioPipes stdio_;
  bool reaped_ = false;
  bool leave_to_reaper_ = false;
};

}  // namespace fnexec::sandbox
