// One ppoll loop per event on stdin (the EVENT frame, written as far as the pipe takes it), stdout
// (frames), stderr (the event's log), the init's status fd (the function ended) and PID 1's pidfd.
#include "invoke/session.h"

#include <sys/wait.h>

#include "cgroup/cgroup.h"
#include "invoke/pipe_io.h"

namespace fnexec::invoke {

namespace {

using detail::Clock;

uint64_t micros_since(Clock::time_point t) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count());
}

int64_t realtime_ms_after(std::chrono::nanoseconds timeout) {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1'000'000 +
         std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
}

}  // namespace

void record_exit(sandbox::Sandbox& sandbox, InvocationRecord& rec, bool killed) {
  auto exit = killed ? sandbox.reap() : sandbox.collect();
  if (!exit) {
    rec.exit_code = 125;
    return;
  }
  if (exit->setup_error) {
    rec.setup_error = exit->setup_error;
    rec.exit_code = exit->setup_exit_code;
    return;
  }
  int st = exit->wait_status;
  if (WIFSIGNALED(st)) rec.signal = WTERMSIG(st);
  rec.exit_code = exit_code_of(st);
}

FramedSession::FramedSession(FramedSession&&) noexcept = default;
FramedSession& FramedSession::operator=(FramedSession&&) noexcept = default;
FramedSession::~FramedSession() = default;

Result<FramedSession> FramedSession::attach(sandbox::Sandbox* sandbox, cgroup::SandboxCgroup* cgroup,
                                            SessionLimits limits) {
  FramedSession s;
  s.started_ = Clock::now();
  auto pipes = sandbox->take_stdio();
  if (!pipes.in || !pipes.out || !pipes.err)
    return fail(ErrorKind::invalid, "talk fnexec/1 to sandbox", std::to_string(sandbox->pid()),
                "it was not launched with Stdio::pipes");
  s.sandbox_ = sandbox;
  s.cgroup_ = cgroup;
  s.limits_ = limits;
  s.in_ = std::move(pipes.in);
  s.out_ = std::move(pipes.out);
  s.err_ = std::move(pipes.err);
  s.parser_.emplace(limits.max_output_bytes);
  s.usable_ = true;
  return s;
}

void FramedSession::kill_all() {
  usable_ = false;
  // SIGKILL to PID 1 ends its whole pid namespace; the cgroup catches anything that escaped it.
  (void)sandbox_->kill();
  if (cgroup_) (void)cgroup_->kill();
}

void FramedSession::init_pollfds(std::span<pollfd, kPollFds> fds) const {
  for (auto& p : fds) p = {-1, 0, 0};
  fds[0] = {out_ ? out_.get() : -1, POLLIN, 0};
  fds[1] = {err_ ? err_.get() : -1, POLLIN, 0};
  fds[2] = {function_ended_ ? -1 : sandbox_->status_fd(), POLLIN, 0};
  fds[3] = {sandbox_->pidfd(), POLLIN, 0};
}

void FramedSession::pump_stderr(char* buf, size_t size, std::string& log) {
  if (!err_) return;
  auto state = detail::read_available(err_.get(), {buf, size}, "sandbox stderr", [&](std::string_view chunk) {
    detail::append_log_tail(log, chunk, limits_.max_log_bytes);
    return true;
  });
  if (!state || *state == detail::ReadState::eof) err_.reset();
}

Result<bool> FramedSession::pump_stdout(char* buf, size_t size) {
  if (!out_) return true;
  auto state = FNEXEC_TRY(detail::read_available(out_.get(), {buf, size}, "sandbox stdout", [&](std::string_view chunk) {
    parser_->feed(chunk);
    return true;
  }));
  if (state != detail::ReadState::eof) return false;
  out_.reset();
  return true;
}

void FramedSession::fill_exit(InvocationRecord& rec, bool killed) {
  usable_ = false;
  function_ended_ = true;
  record_exit(*sandbox_, rec, killed);
}

std::optional<InitOutcome> FramedSession::continue_init() {
  char buf[16 << 10];
  pump_stderr(buf, sizeof buf, init_log_);
  InitOutcome out;
  auto failed = [&](std::string detail) {
    kill_all();
    out.init_us = micros_since(started_);
    out.detail = std::move(detail);
    detail::trim_log_tail(init_log_, limits_.max_log_bytes);
    out.log = std::move(init_log_);
    return out;
  };
  auto eof = pump_stdout(buf, sizeof buf);
  if (!eof) return failed(eof.error().message());
  auto frame = parser_->next();
  if (!frame) return failed(frame.error().message());
  if (*frame) {
    if ((*frame)->kind == frames::ReplyKind::init_error) {
      out.error_body = std::move((*frame)->body);
      return failed("its init failed (INIT_ERROR)");
    }
    if ((*frame)->kind != frames::ReplyKind::ready)
      return failed("it sent " + std::string(frames::to_string((*frame)->kind)) + " before READY");
    out.ready = true;
    out.init_us = micros_since(started_);
    init_log_.clear();
    init_log_.shrink_to_fit();
    return out;
  }
  pollfd fds[kPollFds];
  init_pollfds(fds);
  ::poll(fds + 2, 2, 0);
  if (fds[2].revents || fds[3].revents) {
    InvocationRecord rec;
    // What it wrote before it exited is already in the pipes.
    pump_stderr(buf, sizeof buf, init_log_);
    fill_exit(rec, fds[2].revents == 0);
    if (rec.setup_error) return failed(rec.setup_error->message());
    return failed(rec.signal ? "it was killed by signal " + std::to_string(*rec.signal) + " before READY"
                             : "it exited with status " + std::to_string(rec.exit_code) + " before READY");
  }
  return std::nullopt;
}

InitOutcome FramedSession::abandon_init(std::chrono::milliseconds init_timeout) {
  kill_all();
  InitOutcome out;
  out.init_us = micros_since(started_);
  out.detail = "no READY within init_timeout (" + std::to_string(init_timeout.count()) + " ms)";
  detail::trim_log_tail(init_log_, limits_.max_log_bytes);
  out.log = std::move(init_log_);
  return out;
}

bool FramedSession::idle_and_alive() {
  if (!usable_) return false;
  // Anything on stdout between events (or its EOF), or an ended function, retires the process.
  pollfd fds[3] = {{out_ ? out_.get() : -1, POLLIN, 0},
                   {sandbox_->status_fd(), POLLIN, 0},
                   {sandbox_->pidfd(), POLLIN, 0}};
  if (::poll(fds, 3, 0) != 0 || parser_->buffered() > 0 || !out_) {
    kill_all();
    return false;
  }
  return true;
}

Result<EventOutcome> FramedSession::run_event(std::string_view id, std::string_view payload,
                                              std::chrono::nanoseconds timeout, const EventContext&) {
  if (!usable_)
    return fail(ErrorKind::invalid, "send event to sandbox", std::to_string(sandbox_->pid()),
                "its function process was retired");
  EventOutcome out;
  InvocationRecord& rec = out.record;
  // Counters and the memory peak start here: the init and earlier events are never billed.
  if (cgroup_) FNEXEC_TRY(cgroup_->baseline());
  std::string header;
  frames::append_event_header(header, id, realtime_ms_after(timeout), payload.size());
  const std::string_view pieces[] = {header, payload, "\n"};
  uint64_t written = 0;
  bool writing = true;
  detail::SigpipeBlocked sigpipe;
  std::string what = "sandbox " + std::to_string(sandbox_->pid());
  char buf[64 << 10];

  auto start = Clock::now();
  std::optional<Clock::time_point> deadline = start + timeout;
  auto retire = [&](std::string error_type, std::string retired) {
    out.error_type = std::move(error_type);
    out.retired = std::move(retired);
    if (rec.exit_code == 0) rec.exit_code = 1;
  };
  // Reads stdout and takes complete frames; true once the event is answered or failed.
  auto take_frames = [&]() -> Result<bool> {
    FNEXEC_TRY(pump_stdout(buf, sizeof buf));
    auto frame = parser_->next();
    if (!frame) {
      kill_all();
      if (parser_->output_too_large()) {
        out.output_too_large = true;
        retire("Runtime.OutputTooLarge", "output_too_large");
      } else {
        out.detail = frame.error().message();
        retire("Runtime.ProtocolError", "protocol");
      }
      return true;
    }
    if (!*frame) return false;
    if (auto ok = frames::check_reply_id(**frame, id); !ok) {
      kill_all();
      out.detail = ok.error().message();
      retire("Runtime.ProtocolError", "protocol");
      return true;
    }
    if ((*frame)->kind == frames::ReplyKind::ok) {
      out.output = std::move((*frame)->body);
    } else {
      out.error_body = std::move((*frame)->body);
      out.error_type = "Function.Error";
      rec.exit_code = 1;
    }
    // A reply with more bytes behind it: the next event would read them as its answer.
    if (parser_->buffered() > 0) {
      kill_all();
      out.detail = "it wrote more after the reply to event " + std::string(id);
      out.retired = "protocol";
    }
    return true;
  };

  for (bool done = false; !done;) {
    if (writing) {
      auto state = FNEXEC_TRY(detail::write_some(in_.get(), pieces, &written, what));
      if (state == detail::WriteState::closed) sigpipe.discard_pending = true;
      writing = state == detail::WriteState::pending;
    }
    pollfd fds[5] = {{out_ ? out_.get() : -1, POLLIN, 0},
                     {err_ ? err_.get() : -1, POLLIN, 0},
                     {function_ended_ ? -1 : sandbox_->status_fd(), POLLIN, 0},
                     {sandbox_->pidfd(), POLLIN, 0},
                     {writing ? in_.get() : -1, POLLOUT, 0}};
    timespec ts;
    int n = ::ppoll(fds, 5, detail::timeout_until(deadline, &ts), nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("wait for", what);
    }
    if (n == 0) {
      kill_all();
      rec.timed_out = true;
      rec.exit_code = 124;
      retire("Runtime.Timeout", "timeout");
      break;
    }
    if (fds[1].revents) pump_stderr(buf, sizeof buf, out.log);
    if (fds[0].revents) done = FNEXEC_TRY(take_frames());
    if (!done && (fds[2].revents || fds[3].revents)) {
      // The function ended mid-event; a reply it wrote before that is already in the pipe.
      done = FNEXEC_TRY(take_frames());
      if (!done) {
        fill_exit(rec, fds[2].revents == 0);
        retire("Runtime.ExitError", "exit");
        done = true;
      }
    }
  }
  // What it logged before it answered is in the pipe by now.
  pump_stderr(buf, sizeof buf, out.log);
  detail::trim_log_tail(out.log, limits_.max_log_bytes);
  rec.wall_us = micros_since(start);
  if (cgroup_) record_usage(*cgroup_, rec);
  if (rec.oom_killed && !rec.timed_out) rec.exit_code = 137;
  return out;
}

}  // namespace fnexec::invoke

namespace fnexec::invoke {

InitOutcome EventSession::wait_ready(std::chrono::milliseconds init_timeout) {
  auto deadline = started_ + init_timeout;
  for (;;) {
    if (auto done = continue_init()) return std::move(*done);
    pollfd fds[kPollFds];
    init_pollfds(fds);
    timespec ts;
    int n = ::ppoll(fds, kPollFds, detail::timeout_until(deadline, &ts), nullptr);
    if (n == 0) return abandon_init(init_timeout);
  }
}

}  // namespace fnexec::invoke
