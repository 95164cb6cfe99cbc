// A function process that speaks the Lambda Runtime API (protocol lambda, lifecycles fresh and
// reuse): fnexec serves the API's HTTP/1.1 on 127.0.0.1:9001 inside the sandbox's network namespace
// (listen_in_sandbox), one single-threaded poll loop per event, the same loop as fnexec/1's. The
// runtime's first GET .../invocation/next ends its init; each event is the answer to a waiting next,
// and its POST .../response or .../error is the event's result. stdout and stderr are both the log.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "invoke/event_session.h"
#include "lambda/runtime_api.h"
#include "sandbox/launcher.h"
#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::cgroup {
class SandboxCgroup;
}

namespace fnexec::lambda {

// Connections the runtime may hold open at once (clients use one; Python's urllib one per request).
inline constexpr size_t kMaxConnections = 5;
inline constexpr uint32_t kMaxHeaderBytes = 16 << 10;

class RuntimeApiSession final : public invoke::EventSession {
 public:
  // Takes the sandbox's stdio pipes and the listener from listen_in_sandbox(). Call right after
  // sandbox.go(): init time counts from here. Both pointers must outlive the session.
  static Result<std::unique_ptr<RuntimeApiSession>> attach(sandbox::Sandbox* sandbox,
                                                           cgroup::SandboxCgroup* cgroup,
                                                           invoke::SessionLimits limits, UniqueFd listener,
                                                           FunctionFacts facts);
  ~RuntimeApiSession() override;

  // The init's poll set: the listener, stdout, stderr, the init's status, PID 1's pidfd and the
  // open connections. Ready means the runtime's first GET .../invocation/next.
  void init_pollfds(std::span<pollfd, kPollFds> fds) const override;
  std::optional<invoke::InitOutcome> continue_init() override;
  invoke::InitOutcome abandon_init(std::chrono::milliseconds init_timeout) override;

  // id is fnexec's; the runtime sees a fresh UUID as Lambda-Runtime-Aws-Request-Id (it is also in
  // the START/END/REPORT lines of the event's log).
  // context's fields go to the runtime as Lambda-Runtime-* headers on its next.
  Result<invoke::EventOutcome> run_event(std::string_view id, std::string_view payload,
                                         std::chrono::nanoseconds timeout,
                                         const invoke::EventContext& context) override;
  bool idle_and_alive() override;
  bool usable() const override { return usable_; }

  struct Connection;

 private:
  enum class Phase { init, idle, event };
  // What the runtime's requests decided, read by the loops after each pump().
  struct Verdict {
    bool ready = false;                     // init: the first next arrived
    std::optional<std::string> init_error;  // init: POST init/error's body
    std::optional<std::string> protocol;    // what it broke (the sandbox is then retired)
    bool answered = false;                  // event: response or error accepted
    bool too_large = false;                 // event: the response passed max_output_bytes
  };

  RuntimeApiSession() = default;
  void kill_all();
  // Accepts, reads, parses and answers whatever is there without blocking; logs stdout and stderr.
  // ready: the event_pollfds() of a poll that just returned, to touch only the fds it reported.
  void pump(std::span<const pollfd> ready = {});
  void accept_connections();
  void read_connection(Connection& c);
  void parse_requests(Connection& c);
  void handle(Connection& c, unsigned method, std::string_view target, std::string& body,
              std::string_view error_type_header, bool keep_alive);
  void reply(Connection& c, unsigned status, std::string_view body, bool keep_alive);
  void refuse(Connection& c, unsigned status, std::string_view error_type, std::string detail);
  void deliver_event();
  void flush(Connection& c);
  void drop_closed();
  void pump_log(UniqueFd& fd);
  // The function ended: drain its log and record its exit (status or signal) in rec.
  void record_function_end(invoke::InvocationRecord& rec);
  // listener, stdout, stderr, the init's status, PID 1's pidfd, then one per connection.
  static constexpr size_t kFixedPollFds = 5;
  std::vector<pollfd> event_pollfds() const;
  bool function_gone() const;

  sandbox::Sandbox* sandbox_ = nullptr;
  cgroup::SandboxCgroup* cgroup_ = nullptr;
  invoke::SessionLimits limits_;
  FunctionFacts facts_;
  std::string arn_;
  UniqueFd listener_, out_, err_;
  std::vector<std::unique_ptr<Connection>> connections_;
  Phase phase_ = Phase::init;
  Verdict verdict_;
  // The event in flight: its request id, its payload and deadline until a next takes it.
  std::string request_id_;
  std::string_view payload_;
  const invoke::EventContext* context_ = nullptr;
  int64_t deadline_ms_ = 0;
  bool delivered_ = false;
  std::string output_;                     // the accepted response body
  std::optional<std::string> error_body_;  // the accepted error body
  std::string log_;                        // the init's log, then the log since the last event
  std::optional<uint64_t> init_us_;        // reported in the first event's REPORT line
  bool usable_ = false, function_ended_ = false;
};

}  // namespace fnexec::lambda
