#include "invoke/invocation.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "cgroup/cgroup.h"
#include "invoke/pipe_io.h"
#include "util/unique_fd.h"

namespace fnexec::invoke {

namespace {

using detail::Clock;

constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

// Blocks the forwarded signals and reads them from a signalfd while alive; restores the mask after.
class SignalForwarding {
 public:
  SignalForwarding() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : kForwarded) sigaddset(&set, s);
    ::sigprocmask(SIG_BLOCK, &set, &previous_);
    fd_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  }
  ~SignalForwarding() { ::sigprocmask(SIG_SETMASK, &previous_, nullptr); }
  int fd() const { return fd_.get(); }

 private:
  sigset_t previous_;
  UniqueFd fd_;
};

std::string opt(const std::optional<uint64_t>& v) {
  return v ? std::to_string(*v) : "null";
}

}  // namespace

std::string to_json(const InvocationRecord& r) {
  std::string j = "{";
  j += "\"wall_us\":" + std::to_string(r.wall_us);
  j += ",\"cpu_user_us\":" + opt(r.cpu_user_us);
  j += ",\"cpu_system_us\":" + opt(r.cpu_system_us);
  j += ",\"memory_peak_bytes\":" + opt(r.memory_peak_bytes);
  j += ",\"exit_code\":" + std::to_string(r.exit_code);
  j += ",\"signal\":" + (r.signal ? std::to_string(*r.signal) : std::string("null"));
  j += std::string(",\"oom_killed\":") + (r.oom_killed ? "true" : "false");
  j += std::string(",\"timed_out\":") + (r.timed_out ? "true" : "false");
  j += ",\"cgroup_mode\":\"" + r.cgroup_mode + "\"";
  j += std::string(",\"memory_peak_includes_setup\":") + (r.memory_peak_includes_setup ? "true" : "false");
  if (r.network)
    j += ",\"network\":{\"bytes_out\":" + std::to_string(r.network->bytes_out) +
         ",\"packets_out\":" + std::to_string(r.network->packets_out) +
         ",\"bytes_in\":" + std::to_string(r.network->bytes_in) +
         ",\"packets_in\":" + std::to_string(r.network->packets_in) + "}";
  return j + "}";
}

void record_usage(const cgroup::SandboxCgroup& cgroup, InvocationRecord& rec) {
  if (auto u = cgroup.usage()) {
    rec.cpu_user_us = u->cpu_user_us;
    rec.cpu_system_us = u->cpu_system_us;
    rec.memory_peak_bytes = u->memory_peak_bytes;
    rec.oom_killed = u->oom_kills && *u->oom_kills > 0;
    rec.memory_peak_includes_setup = u->memory_peak_includes_setup;
  }
}

int exit_code_of(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 125;
}

Result<std::chrono::nanoseconds> parse_duration(std::string_view text) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || value < 0 || !std::isfinite(value))
    return fail(ErrorKind::invalid, "parse duration", std::string(text), "expected e.g. 500ms, 2s, 1m");
  std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
  double ns_per = 0;
  if (unit.empty() || unit == "s")
    ns_per = 1e9;
  else if (unit == "ms")
    ns_per = 1e6;
  else if (unit == "us")
    ns_per = 1e3;
  else if (unit == "ns")
    ns_per = 1;
  else if (unit == "m")
    ns_per = 60e9;
  else if (unit == "h")
    ns_per = 3600e9;
  else
    return fail(ErrorKind::invalid, "parse duration", std::string(text),
                "unit must be ns, us, ms, s, m or h");
  return std::chrono::nanoseconds(static_cast<int64_t>(value * ns_per));
}

Result<InvocationRecord> run_invocation(sandbox::Sandbox& sandbox, cgroup::SandboxCgroup* cgroup,
                                        const WaitOptions& options, StdioExchange* stdio) {
  InvocationRecord rec;
  std::optional<SignalForwarding> forwarding;
  if (options.forward_signals) forwarding.emplace();
  sandbox::StdioPipes pipes;
  std::optional<detail::SigpipeBlocked> sigpipe;
  if (stdio) {
    pipes = sandbox.take_stdio();
    if (!pipes.in || !pipes.out || !pipes.err)
      return fail(ErrorKind::invalid, "exchange stdio with sandbox", std::to_string(sandbox.pid()),
                  "it was not launched with Stdio::pipes");
    sigpipe.emplace();
  }

  uint64_t written = 0;
  std::string what = "sandbox " + std::to_string(sandbox.pid());  // named in errors only
  // Non-blocking; closes stdin once the event is written, or when the function closed its end.
  auto write_input = [&]() -> Result<> {
    std::string_view pieces[] = {stdio->input};
    auto state = FNEXEC_TRY(detail::write_some(pipes.in.get(), pieces, &written, what));
    if (state == detail::WriteState::pending) return {};
    if (state == detail::WriteState::closed) sigpipe->discard_pending = true;
    pipes.in.reset();
    return {};
  };
  auto kill_all = [&]() -> Result<> {
    // SIGKILL to PID 1 ends its whole pid namespace; the cgroup catches anything that escaped it.
    FNEXEC_TRY(sandbox.kill());
    if (cgroup) (void)cgroup->kill();
    return {};
  };
  char buf[64 << 10];
  // Reads what is there; closes fd at EOF. stdout beyond the cap kills the sandbox.
  auto drain = [&](UniqueFd& fd, bool is_output) -> Result<> {
    auto state = FNEXEC_TRY(detail::read_available(fd.get(), buf, what, [&](std::string_view chunk) {
      if (!is_output) {
        detail::append_log_tail(stdio->log, chunk, stdio->max_log_bytes);
      } else if (stdio->output.size() + chunk.size() > stdio->max_output_bytes) {
        stdio->output_too_large = true;
        stdio->output.clear();
        return false;
      } else {
        stdio->output.append(chunk);
      }
      return true;
    }));
    if (state == detail::ReadState::again) return {};
    fd.reset();
    if (state == detail::ReadState::stopped) return kill_all();
    return {};
  };

  auto start = Clock::now();
  // Before go: an event that fits the pipe is there when the function first reads.
  if (stdio) FNEXEC_TRY(write_input());
  if (auto r = sandbox.go(); !r) return std::unexpected(r.error());
  std::optional<Clock::time_point> deadline;
  if (options.timeout) deadline = start + *options.timeout;

  // With stdio pipes the invocation ends when init reports the function's status and both pipes
  // are at EOF: PID 1's own exit (its namespaces torn down) is left to whoever destroys the sandbox.
  bool exited = false, reported = false;
  int status_fd = stdio || options.answer_on_status ? sandbox.status_fd() : -1;
  for (;;) {
    if ((exited || reported) && !pipes.out && !pipes.err) break;
    pollfd fds[6] = {{exited ? -1 : sandbox.pidfd(), POLLIN, 0},
                     {forwarding ? forwarding->fd() : -1, POLLIN, 0},
                     {pipes.in ? pipes.in.get() : -1, POLLOUT, 0},
                     {pipes.out ? pipes.out.get() : -1, POLLIN, 0},
                     {pipes.err ? pipes.err.get() : -1, POLLIN, 0},
                     {reported ? -1 : status_fd, POLLIN, 0}};
    timespec ts;
    int n = ::ppoll(fds, 6, detail::timeout_until(rec.timed_out ? std::nullopt : deadline, &ts), nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("wait for sandbox", std::to_string(sandbox.pid()));
    }
    if (n == 0) {
      rec.timed_out = true;
      FNEXEC_TRY(kill_all());
      continue;
    }
    if (fds[0].revents) exited = true;
    if (fds[1].revents) {
      signalfd_siginfo si;
      while (::read(fds[1].fd, &si, sizeof si) == static_cast<ssize_t>(sizeof si))
        (void)sandbox.signal(static_cast<int>(si.ssi_signo));
    }
    if (fds[2].revents) FNEXEC_TRY(write_input());
    if (fds[3].revents) FNEXEC_TRY(drain(pipes.out, true));
    if (fds[4].revents) FNEXEC_TRY(drain(pipes.err, false));
    if (fds[5].revents) reported = true;
  }
  if (stdio) detail::trim_log_tail(stdio->log, stdio->max_log_bytes);

  auto exit = exited ? sandbox.reap() : sandbox.collect();
  rec.wall_us = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count());
  if (!exit) return std::unexpected(exit.error());

  if (cgroup) record_usage(*cgroup, rec);

  if (exit->setup_error && !rec.timed_out) {
    rec.setup_error = exit->setup_error;
    rec.exit_code = exit->setup_exit_code;
    return rec;
  }
  int st = exit->wait_status;
  if (WIFSIGNALED(st)) rec.signal = WTERMSIG(st);
  if (rec.timed_out)
    rec.exit_code = 124;
  else
    rec.exit_code = exit_code_of(st);
  if (rec.oom_killed && !rec.timed_out) rec.exit_code = 137;
  return rec;
}

}  // namespace fnexec::invoke
