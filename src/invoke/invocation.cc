#include "invoke/invocation.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <cmath>

#include "cgroup/cgroup.h"
#include "util/unique_fd.h"

namespace fnexec::invoke {

namespace {

using Clock = std::chrono::steady_clock;

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
  return j + "}";
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
                                        const WaitOptions& options) {
  InvocationRecord rec;
  std::optional<SignalForwarding> forwarding;
  if (options.forward_signals) forwarding.emplace();

  auto start = Clock::now();
  if (auto r = sandbox.go(); !r) return std::unexpected(r.error());
  std::optional<Clock::time_point> deadline;
  if (options.timeout) deadline = start + *options.timeout;

  for (;;) {
    pollfd fds[2] = {{sandbox.pidfd(), POLLIN, 0}, {forwarding ? forwarding->fd() : -1, POLLIN, 0}};
    timespec ts{}, *tsp = nullptr;
    if (deadline && !rec.timed_out) {
      auto left = std::max(std::chrono::nanoseconds(0), *deadline - Clock::now());
      ts.tv_sec = static_cast<time_t>(left.count() / 1'000'000'000);
      ts.tv_nsec = static_cast<long>(left.count() % 1'000'000'000);
      tsp = &ts;
    }
    int n = ::ppoll(fds, 2, tsp, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("wait for sandbox", std::to_string(sandbox.pid()));
    }
    if (fds[0].revents) break;
    if (n == 0) {
      // SIGKILL to PID 1 ends its whole pid namespace; the cgroup catches anything that escaped it.
      rec.timed_out = true;
      if (auto r = sandbox.kill(); !r) return std::unexpected(r.error());
      if (cgroup) (void)cgroup->kill();
      continue;
    }
    if (fds[1].revents) {
      signalfd_siginfo si;
      while (::read(fds[1].fd, &si, sizeof si) == static_cast<ssize_t>(sizeof si))
        (void)sandbox.signal(static_cast<int>(si.ssi_signo));
    }
  }

  auto exit = sandbox.reap();
  rec.wall_us = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count());
  if (!exit) return std::unexpected(exit.error());

  if (cgroup) {
    if (auto u = cgroup->usage()) {
      rec.cpu_user_us = u->cpu_user_us;
      rec.cpu_system_us = u->cpu_system_us;
      rec.memory_peak_bytes = u->memory_peak_bytes;
      rec.oom_killed = u->oom_kills && *u->oom_kills > 0;
    }
  }

  if (exit->setup_error && !rec.timed_out) {
    rec.setup_error = exit->setup_error;
    rec.exit_code = exit->setup_exit_code;
    return rec;
  }
  int st = exit->wait_status;
  if (WIFSIGNALED(st)) rec.signal = WTERMSIG(st);
  if (rec.timed_out)
    rec.exit_code = 124;
  else if (WIFEXITED(st))
    rec.exit_code = WEXITSTATUS(st);
  else if (WIFSIGNALED(st))
    rec.exit_code = 128 + WTERMSIG(st);
  else
    rec.exit_code = 125;
  if (rec.oom_killed && !rec.timed_out) rec.exit_code = 137;
  return rec;
}

}  // namespace fnexec::invoke
