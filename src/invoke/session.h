// A framed session (lifecycles fresh and reuse): a function process started in a sandbox with
// Stdio::pipes, already sent go, speaking fnexec/1 (src/invoke/frames.h) on its stdin and stdout.
// It first runs its init and says READY; then it answers one EVENT at a time. Each event is
// accounted from the cgroup's counters at its own start, so the init is never billed to an event.
#pragma once

#include <poll.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "invoke/frames.h"
#include "invoke/invocation.h"
#include "sandbox/launcher.h"
#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::cgroup {
class SandboxCgroup;
}

namespace fnexec::invoke {

struct SessionLimits {
  uint64_t max_output_bytes = UINT64_MAX;  // a result over it fails the event and kills the sandbox
  uint64_t max_log_bytes = 64 << 10;       // stderr kept per event (the tail)
};

// How the init ended. Not ready: the sandbox is killed and must not be used again.
struct InitOutcome {
  bool ready = false;
  uint64_t init_us = 0;                   // from attach (just after go) to READY or the failure
  std::optional<std::string> error_body;  // the INIT_ERROR json
  std::string detail;  // why it failed: "INIT_ERROR", "exited with status 1 before READY", ...
  std::string log;     // the init's stderr tail (kept only when it failed)
};

// How one event ended.
struct EventOutcome {
  InvocationRecord record;  // wall/cpu/memory of this event only; exit_code 0 for OK, else see session.cc
  std::string output;       // the OK payload, exact
  bool output_too_large = false;
  // stderr read while this event was handled: what the function wrote before its reply, plus what
  // it wrote after the previous reply (between events nobody reads it).
  std::string log;
  std::optional<std::string> error_body;  // the ERROR json
  // "" (OK), "Function.Error" (ERROR frame; the process lives on), "Runtime.ExitError",
  // "Runtime.ProtocolError", "Runtime.OutputTooLarge", "Runtime.Timeout".
  std::string error_type;
  // "" when the process can take another event; else "timeout", "protocol", "exit" or
  // "output_too_large" (the sandbox was killed or its function is gone).
  std::string retired;
  std::string detail;  // for a protocol error: what was malformed
};

class FramedSession {
 public:
  // Takes the sandbox's stdio pipes. Call right after sandbox.go(): init time counts from here.
  // Both pointers must outlive the session.
  static Result<FramedSession> attach(sandbox::Sandbox* sandbox, cgroup::SandboxCgroup* cgroup,
                                      SessionLimits limits);
  FramedSession(FramedSession&&) noexcept;
  FramedSession& operator=(FramedSession&&) noexcept;
  ~FramedSession();

  // The init, driven by the caller's own poll loop (a pool waits for many at once): poll these
  // (stdout, stderr, the init's status and PID 1's pidfd; unused ones are -1), then call
  // continue_init() when any is readable. nullopt while READY is still to come.
  static constexpr int kPollFds = 4;
  void init_pollfds(pollfd fds[kPollFds]) const;
  std::optional<InitOutcome> continue_init();
  // init_timeout passed: kills the sandbox.
  InitOutcome abandon_init(std::chrono::milliseconds init_timeout);
  // The same, blocking until READY, a failure or init_timeout.
  InitOutcome wait_ready(std::chrono::milliseconds init_timeout);

  // One event: resets the cgroup's counters, writes the EVENT frame while reading stdout and
  // stderr (neither side can block the other), until the reply, a failure or the deadline (then
  // the whole sandbox is killed). Errors are only failures of fnexec's own calls.
  Result<EventOutcome> run_event(std::string_view id, std::string_view payload, std::chrono::nanoseconds timeout);

  // Parked between events and nothing happened: no stray output, the function still running.
  bool idle_and_alive();
  // False once init failed or an event retired the process.
  bool usable() const { return usable_; }

 private:
  FramedSession() = default;
  void kill_all();
  Result<bool> pump_stdout(char* buf, size_t size);  // true: stdout at EOF
  void pump_stderr(char* buf, size_t size, std::string& log);
  void fill_exit(InvocationRecord& rec, bool killed);

  sandbox::Sandbox* sandbox_ = nullptr;
  cgroup::SandboxCgroup* cgroup_ = nullptr;
  SessionLimits limits_;
  UniqueFd in_, out_, err_;
  std::optional<frames::ReplyParser> parser_;
  std::string init_log_;
  std::chrono::steady_clock::time_point started_;
  bool usable_ = false, function_ended_ = false;
};

}  // namespace fnexec::invoke
