#include "sandbox/launcher.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "cgroup/cgroup.h"
#include "sandbox/net.h"
#include "sandbox/setup_plan.h"
#include "sandbox/userns.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/syscalls.h"

namespace fnexec::sandbox {

namespace {

using detail::ChildPlan;

constexpr unsigned long kNamespaces =
    CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

std::string env_value(const std::vector<std::string>& env, std::string_view key) {
  for (const auto& kv : env) {
    if (kv.size() > key.size() && kv.compare(0, key.size(), key) == 0 && kv[key.size()] == '=')
      return kv.substr(key.size() + 1);
  }
  return {};
}

// PATH lookup done in the parent from the function's final environment, as crun does: the child
// only tries the candidates in order.
std::vector<std::string> exec_candidates(const std::string& entry, const std::vector<std::string>& env) {
  if (entry.find('/') != std::string::npos) return {entry};
  std::string path = env_value(env, "PATH");
  if (path.empty()) path = kDefaultPath;
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t colon = path.find(':', start);
    std::string dir = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (dir.empty()) dir = ".";
    out.push_back(dir + "/" + entry);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return out;
}

// Where the kernel shows our argv and environ from (/proc/PID/cmdline, environ): the sandbox's init
// is a copy of this process and blanks both, so no host path or secret shows through /proc/1.
struct ArgEnvArea {
  char* args = nullptr;
  size_t args_len = 0;
  char* env = nullptr;
  size_t env_len = 0;
};

const ArgEnvArea& own_arg_env_area() {
  static const ArgEnvArea area = [] {
    ArgEnvArea a;
    auto stat = fs::read_file("/proc/self/stat");
    if (!stat) return a;
    auto close = stat->rfind(')');
    if (close == std::string::npos) return a;
    // Fields 48..51 (arg_start, arg_end, env_start, env_end); the text after ')' starts at field 3.
    std::istringstream in(stat->substr(close + 2));
    std::string field;
    unsigned long long v[4] = {};
    for (int i = 3; i <= 51 && (in >> field); ++i) {
      if (i >= 48) v[i - 48] = std::stoull(field);
    }
    if (v[1] > v[0] && v[3] > v[2]) {
      a.args = reinterpret_cast<char*>(v[0]);
      a.args_len = v[1] - v[0];
      a.env = reinterpret_cast<char*>(v[2]);
      a.env_len = v[3] - v[2];
    }
    return a;
  }();
  return area;
}

struct Pipe {
  UniqueFd read, write;
  static Result<Pipe> make(std::string_view what) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return fail_errno("create pipe for", std::string(what));
    return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
  }
};

}  // namespace

Sandbox::Sandbox() = default;
Sandbox::Sandbox(Sandbox&&) noexcept = default;

Sandbox::~Sandbox() {
  if (pidfd_ && !reaped_) {
    (void)kill();
    siginfo_t info;
    while (::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED) < 0 && errno == EINTR) {
    }
  }
}

Result<Sandbox> Sandbox::launch(const SandboxSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty())
    return fail(ErrorKind::invalid, "run image", spec.image_name, "no entrypoint or command given");

  Sandbox sb;
  sb.image_name_ = spec.image_name;
  sb.entrypoint_ = spec.argv[0];
  sb.plan_ = std::make_unique<ChildPlan>();
  ChildPlan& plan = *sb.plan_;

  std::error_code ec;
  std::filesystem::create_directories(spec.mount_dir, ec);
  if (ec) return fail(ErrorKind::internal, "create directory", spec.mount_dir.string(), ec.message());

  UniqueFd userns;
  if (spec.userns == UserNamespace::automatic) userns = FNEXEC_TRY(make_user_namespace(spec.id_range));
  std::vector<UniqueFd> detached;
  FNEXEC_TRY(detail::plan_rootfs(spec, userns.get(), plan, detached));

  plan.hostname = plan.keep(spec.hostname);
  plan.hostname_len = spec.hostname.size();
  plan.userns_fd = userns.get();
  plan.init = spec.init;
  plan.die_with_parent = spec.die_with_parent;
  plan.cwd = plan.keep(spec.cwd.empty() ? "/" : spec.cwd);
  for (auto& c : exec_candidates(spec.argv[0], spec.env))
    plan.exec_candidates.push_back(plan.keep(std::move(c)));
  for (const auto& a : spec.argv) plan.argv.push_back(const_cast<char*>(plan.keep(a)));
  plan.argv.push_back(nullptr);
  for (const auto& e : spec.env) plan.envp.push_back(const_cast<char*>(plan.keep(e)));
  plan.envp.push_back(nullptr);
  plan.privileges = spec.privileges;
  if (plan.init) {
    const auto& area = own_arg_env_area();
    plan.own_args = area.args;
    plan.own_args_len = area.args_len;
    plan.own_env = area.env;
    plan.own_env_len = area.env_len;
  }

  // A socket rather than a pipe: go() sends with MSG_NOSIGNAL, so a child that already failed its
  // setup gives EPIPE (and its error is reported by reap) instead of killing us with SIGPIPE.
  int control_fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, control_fds) != 0)
    return fail_errno("create control socket for sandbox");
  Pipe control{UniqueFd(control_fds[0]), UniqueFd(control_fds[1])};
  auto errors = FNEXEC_TRY(Pipe::make("sandbox errors"));
  auto status = FNEXEC_TRY(Pipe::make("sandbox status"));
  plan.control_fd = control.read.get();
  plan.control_parent_fd = control.write.get();
  plan.error_fd = errors.write.get();
  plan.status_fd = status.write.get();

  int cgroup_fd = spec.cgroup ? spec.cgroup->clone_into_fd() : -1;
  plan.unshare_cgroupns_after_go = spec.cgroup && cgroup_fd < 0;
  unsigned long namespaces = plan.unshare_cgroupns_after_go ? kNamespaces & ~CLONE_NEWCGROUP : kNamespaces;
  int pidfd = -1;
  clone_args args{};
  args.flags = namespaces | CLONE_PIDFD | (cgroup_fd >= 0 ? CLONE_INTO_CGROUP : 0);
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  args.cgroup = cgroup_fd >= 0 ? static_cast<uint64_t>(cgroup_fd) : 0;
  long pid = sys::clone3(&args, sizeof args);
  bool placed = cgroup_fd >= 0;
  if (pid < 0 && (errno == ENOSYS || errno == E2BIG)) {
    // Kernels before 5.3 (no clone3) or 5.7 (no cgroup field): classic clone, fork-like without a
    // stack; CLONE_PIDFD returns the pidfd through the parent_tid argument.
    pid = ::syscall(SYS_clone, namespaces | CLONE_PIDFD | SIGCHLD, nullptr, &pidfd, nullptr, nullptr);
    placed = false;
  }
  if (pid < 0) return fail_errno("create sandbox namespaces for", spec.image_name);
  if (pid == 0) detail::child_main(plan);

  sb.pid_ = static_cast<pid_t>(pid);
  sb.pidfd_.reset(pidfd);
  sb.control_ = std::move(control.write);
  sb.errors_ = std::move(errors.read);
  sb.status_ = std::move(status.read);
  // The child holds its own copies; closing ours makes EOF mean "every sandbox process is gone".
  errors.write.reset();
  status.write.reset();
  control.read.reset();

  if (spec.cgroup && !placed) FNEXEC_TRY(spec.cgroup->attach(sb.pid_));
  if (spec.network == Network::loopback) {
    auto t0 = std::chrono::steady_clock::now();
    FNEXEC_TRY(bring_up_loopback(sb.pidfd_.get()));
    spdlog::debug(
        "sandbox pid={} lo_up_us={}", sb.pid_,
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
  }
  return sb;
}

Result<> Sandbox::go() {
  char g = 'g';
  // EPIPE: the child already failed its setup and exited; reap() reports why.
  if (::send(control_.get(), &g, 1, MSG_NOSIGNAL) != 1 && errno != EPIPE && errno != ECONNRESET)
    return fail_errno("start function in sandbox", std::to_string(pid_));
  control_.reset();
  return {};
}

Result<> Sandbox::signal(int sig) {
  if (sys::pidfd_send_signal(pidfd_.get(), sig, nullptr, 0) != 0 && errno != ESRCH)
    return fail_errno("signal sandbox", std::to_string(pid_));
  return {};
}

Result<> Sandbox::kill() {
  return signal(SIGKILL);
}

Result<SandboxExit> Sandbox::reap() {
  siginfo_t info{};
  while (::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED) != 0) {
    if (errno != EINTR) return fail_errno("wait for sandbox", std::to_string(pid_));
  }
  reaped_ = true;
  control_.reset();

  SandboxExit out;
  int pid1_status = info.si_code == CLD_EXITED ? W_EXITCODE(info.si_status, 0) : info.si_status & 0x7f;

  detail::ChildFailure failure;
  ssize_t n;
  do n = ::read(errors_.get(), &failure, sizeof failure);
  while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof failure)) {
    failure.detail[sizeof failure.detail - 1] = 0;
    Error e{ErrorKind::internal, failure.err, {}, {}, {}};
    out.setup_exit_code = 125;
    switch (failure.step) {
      case detail::step_exec:
        if (failure.err == ENOENT || failure.err == ENOTDIR) {
          out.setup_exit_code = 127;
          e = Error{ErrorKind::not_found,
                    0,
                    "start function",
                    {},
                    "entrypoint " + entrypoint_ + " not found in image " + image_name_};
        } else {
          out.setup_exit_code = 126;
          e.what = "execute entrypoint";
          e.on = entrypoint_ + " in image " + image_name_;
        }
        break;
      case detail::step_hostname:
        e.what = "set hostname of sandbox";
        break;
      case detail::step_userns:
        e.what = "join the sandbox user namespace";
        break;
      case detail::step_workdir:
        e.what = "change to working directory";
        e.on = plan_->cwd;
        break;
      case detail::step_privileges:
      case detail::step_init_privileges:
        e.what = "apply privileges";
        e.on = failure.detail[0] ? failure.detail : "";
        break;
      case detail::step_parent_death:
        e.what = "tie the sandbox to fnexec's lifetime";
        break;
      case detail::step_cgroupns:
        e.what = "create the sandbox's cgroup namespace";
        break;
      case detail::step_fork:
        e.what = "fork the function from the sandbox init";
        break;
      default:
        if (failure.step >= 0 && static_cast<size_t>(failure.step) < plan_->ops.size())
          e.what = detail::describe(plan_->ops[static_cast<size_t>(failure.step)]);
        else
          e.what = "set up sandbox";
    }
    if (!image_name_.empty() && failure.step >= 0) e.context("set up sandbox for " + image_name_);
    out.setup_error = std::move(e);
    return out;
  }

  if (!plan_->init) {
    out.wait_status = pid1_status;
    return out;
  }
  int status = 0;
  do n = ::read(status_.get(), &status, sizeof status);
  while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof status)) {
    out.wait_status = status;
  } else {
    // init died before the function did: killed from outside (timeout) or crashed.
    out.killed = true;
    out.wait_status = pid1_status;
  }
  return out;
}

}  // namespace fnexec::sandbox
