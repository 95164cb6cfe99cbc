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

#include "invoke/event_session.h"
#include "invoke/frames.h"
#include "sandbox/launcher.h"
#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::cgroup {
class SandboxCgroup;
}

namespace fnexec::invoke {

class FramedSession final : public EventSession {
 public:
  // Takes the sandbox's stdio pipes. Call right after sandbox.go(): init time counts from here.
  // Both pointers must outlive the session.
  static Result<FramedSession> attach(sandbox::Sandbox* sandbox, cgroup::SandboxCgroup* cgroup,
                                      SessionLimits limits);
  FramedSession(FramedSession&&) noexcept;
  FramedSession& operator=(FramedSession&&) noexcept;
  ~FramedSession();

  // The init's poll set: stdout, stderr, the init's status and PID 1's pidfd. Ready means READY.
  void init_pollfds(std::span<pollfd, kPollFds> fds) const override;
  std::optional<InitOutcome> continue_init() override;
  InitOutcome abandon_init(std::chrono::milliseconds init_timeout) override;

  // One event: resets the cgroup's counters, writes the EVENT frame while reading stdout and
  // stderr (neither side can block the other), until the reply, a failure or the deadline (then
  // the whole sandbox is killed). Errors are only failures of fnexec's own calls.
  Result<EventOutcome> run_event(std::string_view id, std::string_view payload, std::chrono::nanoseconds timeout,
                                 const EventContext& context) override;

  bool idle_and_alive() override;
  bool usable() const override { return usable_; }

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
  bool usable_ = false, function_ended_ = false;
};

}  // namespace fnexec::invoke
