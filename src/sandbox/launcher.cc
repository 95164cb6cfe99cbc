#include "sandbox/launcher.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "cgroup/cgroup.h"
#include "sandbox/net.h"
#include "sandbox/netns_pool.h"
#include "sandbox/setup_plan.h"
#include "sandbox/spawn.h"
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

struct Pipe {
  UniqueFd read, write;
  static Result<Pipe> make(std::string_view what) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return fail_errno("create pipe for", std::string(what));
    return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
  }
};

// A pipe whose child end is >= 3 (so the child's dup2 onto 0..2 never overwrites a source fd) and
// whose parent end is non-blocking (the invocation polls it).
// The function's host ids own its stdio pipes, as if it had made them itself: a runtime that
// reopens them through /proc/self/fd (Node.js has no dup()) is refused by a root-owned pipe's 0600.
Result<Pipe> stdio_pipe(bool child_reads, uid_t owner, gid_t group) {
  auto p = FNEXEC_TRY(Pipe::make("sandbox stdio"));
  if (::fchown(p.read.get(), owner, group) != 0) return fail_errno("give the function its stdio pipe");
  for (UniqueFd* end : {&p.read, &p.write}) {
    if (end->get() >= 3) continue;
    int moved = ::fcntl(end->get(), F_DUPFD_CLOEXEC, 3);
    if (moved < 0) return fail_errno("move stdio pipe above fd 2");
    end->reset(moved);
  }
  int parent = child_reads ? p.write.get() : p.read.get();
  if (::fcntl(parent, F_SETFL, O_NONBLOCK) != 0) return fail_errno("make stdio pipe non-blocking");
  return p;
}

// The plan block, from offset 0 (written again when a fallback changes the plan).
Result<> write_plan(int fd, const std::string& block) {
  if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) != 0) return fail_errno("write the sandbox plan");
  return fs::write_all(fd, block, "sandbox plan");
}

}  // namespace

Sandbox::Sandbox() = default;
Sandbox::Sandbox(Sandbox&&) noexcept = default;

Sandbox::~Sandbox() {
  if (leave_to_reaper_ && collected_status_) return;
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
  plan.function_nice = spec.function_nice;
  plan.cwd = plan.keep(spec.cwd.empty() ? "/" : spec.cwd);
  for (auto& c : exec_candidates(spec.argv[0], spec.env))
    plan.exec_candidates.push_back(plan.keep(std::move(c)));
  for (const auto& a : spec.argv) plan.argv.push_back(const_cast<char*>(plan.keep(a)));
  plan.argv.push_back(nullptr);
  for (const auto& e : spec.env) plan.envp.push_back(const_cast<char*>(plan.keep(e)));
  plan.envp.push_back(nullptr);
  plan.privileges = spec.privileges;

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

  std::optional<Pipe> child_in, child_out, child_err;
  if (spec.stdio == Stdio::pipes) {
    uid_t owner = spec.privileges.uid;
    gid_t group = spec.privileges.gid;
    if (spec.userns == UserNamespace::automatic) {
      owner += spec.id_range.host_first;
      group += spec.id_range.host_first;
    }
    child_in = FNEXEC_TRY(stdio_pipe(true, owner, group));
    child_out = FNEXEC_TRY(stdio_pipe(false, owner, group));
    child_err = FNEXEC_TRY(stdio_pipe(false, owner, group));
    plan.stdio_fds[0] = child_in->read.get();
    plan.stdio_fds[1] = child_out->write.get();
    plan.stdio_fds[2] = child_err->write.get();
  }

  for (int fd : {plan.userns_fd, plan.control_fd, plan.error_fd, plan.status_fd, plan.stdio_fds[0],
                 plan.stdio_fds[1], plan.stdio_fds[2]})
    if (fd > 2) plan.keep_fds.push_back(fd);
  for (const auto& op : plan.ops)
    if (op.fd > 2) plan.keep_fds.push_back(op.fd);

  int cgroup_fd = spec.cgroup ? spec.cgroup->clone_into_fd() : -1;
  plan.wait_attach = spec.cgroup && cgroup_fd < 0;
  unsigned long namespaces = plan.wait_attach ? kNamespaces & ~CLONE_NEWCGROUP : kNamespaces;
  bool join_netns = spec.network == Network::loopback && spec.netns_fd >= 0;
  if (join_netns) namespaces &= ~CLONE_NEWNET;

  // The init reads its plan from a memfd; the clone child only execs the init.
  int image_fd = FNEXEC_TRY(detail::init_image());
  UniqueFd plan_fd(::memfd_create("fnexec-plan", MFD_CLOEXEC));
  if (!plan_fd) return fail_errno("create memfd for the sandbox plan");
  plan.keep_fds.push_back(plan_fd.get());
  std::sort(plan.keep_fds.begin(), plan.keep_fds.end());
  plan.keep_fds.erase(std::unique(plan.keep_fds.begin(), plan.keep_fds.end()), plan.keep_fds.end());
  FNEXEC_TRY(write_plan(plan_fd.get(), detail::encode_for_init(plan)));
  std::string plan_fd_text = std::to_string(plan_fd.get());
  std::string error_fd_text = std::to_string(plan.error_fd);
  std::vector<int> open_fds = plan.keep_fds;
  open_fds.insert(std::upper_bound(open_fds.begin(), open_fds.end(), image_fd), image_fd);
  detail::Spawn spawn;
  spawn.image_fd = image_fd;
  spawn.open_fds = open_fds.data();
  spawn.n_open = open_fds.size();
  spawn.inherit_fds = plan.keep_fds.data();
  spawn.n_inherit = plan.keep_fds.size();
  spawn.error_fd = plan.error_fd;
  spawn.argv[0] = "fnexec-init";
  spawn.argv[1] = plan_fd_text.c_str();
  spawn.argv[2] = error_fd_text.c_str();

  int pidfd = -1;
  clone_args args{};
  args.flags = namespaces | CLONE_PIDFD | (cgroup_fd >= 0 ? CLONE_INTO_CGROUP : 0);
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  args.cgroup = cgroup_fd >= 0 ? static_cast<uint64_t>(cgroup_fd) : 0;
  // The child inherits this thread's network namespace: switch for the clone only.
  std::optional<ThreadInNetns> in_netns;
  if (join_netns) in_netns.emplace(FNEXEC_TRY(ThreadInNetns::enter(spec.netns_fd)));
  long pid = detail::spawn_clone3(args, spawn);
  bool placed = cgroup_fd >= 0;
  if (pid < 0 && (errno == ENOSYS || errno == E2BIG)) {
    // Kernels before 5.3 (no clone3) or 5.7 (no cgroup field): classic clone, fork-like without a
    // stack; CLONE_PIDFD returns the pidfd through the parent_tid argument.
    plan.wait_attach = spec.cgroup != nullptr;
    if (plan.wait_attach) namespaces &= ~CLONE_NEWCGROUP;
    FNEXEC_TRY(write_plan(plan_fd.get(), detail::encode_for_init(plan)));
    pid = ::syscall(SYS_clone, namespaces | CLONE_PIDFD | SIGCHLD, nullptr, &pidfd, nullptr, nullptr);
    if (pid == 0) detail::spawn_child(&spawn);
    placed = false;
  }
  int clone_errno = errno;
  if (in_netns) FNEXEC_TRY(in_netns->leave());
  errno = clone_errno;
  if (pid < 0) return fail_errno("create sandbox namespaces for", spec.image_name);

  sb.pid_ = static_cast<pid_t>(pid);
  sb.pidfd_.reset(pidfd);
  sb.control_ = std::move(control.write);
  sb.errors_ = std::move(errors.read);
  // collect() reads it while init still holds the write end: a failure, if any, is already there.
  ::fcntl(sb.errors_.get(), F_SETFL, O_NONBLOCK);
  sb.plan_init_ = spec.init;
  sb.status_ = std::move(status.read);
  // The child holds its own copies; closing ours makes EOF mean "every sandbox process is gone".
  errors.write.reset();
  status.write.reset();
  control.read.reset();
  if (child_in) sb.stdio_ = {std::move(child_in->write), std::move(child_out->read), std::move(child_err->read)};
  child_in.reset();
  child_out.reset();
  child_err.reset();

  if (spec.cgroup && !placed) FNEXEC_TRY(spec.cgroup->attach(sb.pid_));
  if (plan.wait_attach) {
    // The child makes its cgroup namespace (and forks the function) only after this byte.
    char attached = 'a';
    if (::send(sb.control_.get(), &attached, 1, MSG_NOSIGNAL) != 1 && errno != EPIPE && errno != ECONNRESET)
      return fail_errno("release sandbox after cgroup attach", std::to_string(sb.pid_));
  }
  if (spec.network == Network::loopback && !join_netns) {
    auto t0 = std::chrono::steady_clock::now();
    // ESRCH: the init already failed its setup and exited, so its namespace is gone; the caller's
    // wait_ready() and collect() report the init's own error instead of this one.
    if (auto up = bring_up_loopback(sb.pidfd_.get()); !up && up.error().err != ESRCH)
      return std::unexpected(up.error());
    spdlog::debug(
        "sandbox pid={} lo_up_us={}", sb.pid_,
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
  }
  return sb;
}

Result<bool> Sandbox::wait_ready() {
  char ready = 0;
  ssize_t n;
  do n = ::recv(control_.get(), &ready, 1, 0);
  while (n < 0 && errno == EINTR);
  if (n == 1 && ready == 'r') return true;
  if (n == 0 || (n < 0 && errno == ECONNRESET)) return false;
  return fail_errno("wait for sandbox to be ready", std::to_string(pid_), n < 0 ? errno : EPROTO);
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
  int pid1_status = info.si_code == CLD_EXITED ? W_EXITCODE(info.si_status, 0) : info.si_status & 0x7f;
  return report(pid1_status);
}

Result<SandboxExit> Sandbox::collect() {
  int status = 0;
  ssize_t n;
  do n = ::read(status_.get(), &status, sizeof status);
  while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof status)) return reap();
  collected_status_ = status;
  return report(0);
}

Result<SandboxExit> Sandbox::report(int pid1_status) {
  SandboxExit out;
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
      case detail::step_stdio:
        e.what = "connect the function's stdin, stdout and stderr";
        break;
      case detail::step_fork:
        e.what = "fork the function from the sandbox init";
        break;
      case detail::step_start_init:
        e.what = "start the sandbox init";
        break;
      case detail::step_priority:
        e.what = "give the function its scheduling priority";
        break;
      default:
        if (failure.step >= 0 && static_cast<size_t>(failure.step) < plan_->ops.size()) {
          e.what = detail::describe(plan_->ops[static_cast<size_t>(failure.step)]);
          e.detail = failure.detail;  // why a target was refused, when the init says
        } else
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
  if (collected_status_) {
    status = *collected_status_;
    n = sizeof status;
  } else {
    do n = ::read(status_.get(), &status, sizeof status);
    while (n < 0 && errno == EINTR);
  }
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
