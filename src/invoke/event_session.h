// What a pool (and `fnexec run --lifecycle`) drives for a long-lived function process, whatever it
// speaks: fnexec/1 frames on its stdio (FramedSession) or the Lambda Runtime API over HTTP
// (lambda::RuntimeApiSession). The process first runs its init, then answers one event at a time.
#pragma once

#include <poll.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "invoke/invocation.h"
#include "sandbox/launcher.h"
#include "util/error.h"

namespace fnexec::invoke {

struct SessionLimits {
  uint64_t max_output_bytes = UINT64_MAX;  // a result over it fails the event and kills the sandbox
  uint64_t max_log_bytes = 64 << 10;       // stderr kept per event (the tail)
};

// What the caller said about itself, for runtimes that read it (the Lambda Runtime API's
// Lambda-Runtime-Client-Context, -Cognito-Identity and -Trace-Id headers); fnexec/1 ignores it.
// Empty fields were not given (an empty trace id gets a new one).
struct EventContext {
  std::string client_context;    // the client context as one line of JSON (decoded from base64)
  std::string cognito_identity;  // {"cognitoIdentityId":...,"cognitoIdentityPoolId":...}, one line
  std::string trace_id;          // X-Amzn-Trace-Id of the caller
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

class EventSession {
 public:
  virtual ~EventSession() = default;

  // The init, driven by the caller's own poll loop (a pool waits for many at once): poll these
  // (unused ones are -1), then call continue_init() when any is readable. nullopt while the
  // function is not yet ready for its first event.
  static constexpr size_t kPollFds = 10;
  virtual void init_pollfds(std::span<pollfd, kPollFds> fds) const = 0;
  virtual std::optional<InitOutcome> continue_init() = 0;
  // init_timeout passed: kills the sandbox.
  virtual InitOutcome abandon_init(std::chrono::milliseconds init_timeout) = 0;
  // The same, blocking until ready, a failure or init_timeout.
  InitOutcome wait_ready(std::chrono::milliseconds init_timeout);

  // One event, until the reply, a failure or the deadline (then the whole sandbox is killed).
  // Errors are only failures of fnexec's own calls.
  virtual Result<EventOutcome> run_event(std::string_view id, std::string_view payload,
                                         std::chrono::nanoseconds timeout, const EventContext& context) = 0;

  // Parked between events and nothing happened that retires it: no stray output, the function
  // still running. Kills the sandbox when it answers false.
  virtual bool idle_and_alive() = 0;
  // False once init failed or an event retired the process.
  virtual bool usable() const = 0;

 protected:
  // When attach() ran: init time counts from here, and wait_ready's deadline too.
  std::chrono::steady_clock::time_point started_;
};

// The function is gone (its status is there, or PID 1 died: killed): how it ended, into rec.
void record_exit(sandbox::Sandbox& sandbox, InvocationRecord& rec, bool killed);

}  // namespace fnexec::invoke
