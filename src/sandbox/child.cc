// The child side of the sandbox clone: one linear setup sequence over a precomputed plan.
// Async-signal-safe only: no allocation, no locks, no logging, no exceptions.
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/init.h"
#include "sandbox/setup_plan.h"
#include "util/syscalls.h"

namespace fnexec::sandbox::detail {

namespace {

[[noreturn]] void fail(const ChildPlan& plan, int32_t step, int err, const char* detail = nullptr) noexcept {
  ChildFailure f;
  f.step = step;
  f.err = err;
  if (detail) {
    for (size_t i = 0; detail[i] && i + 1 < sizeof f.detail; ++i) f.detail[i] = detail[i];
  }
  ssize_t w;
  do w = write(plan.error_fd, &f, sizeof f);
  while (w < 0 && errno == EINTR);
  _exit(125);
}

// Returns 0 or an errno.
int run_op(const SetupOp& op) noexcept {
  struct stat st;
  switch (op.kind) {
    case OpKind::mount:
      return mount(op.source, op.path, op.fstype, op.flags, op.data) == 0 ? 0 : errno;
    case OpKind::bind_ro:
      if (mount(op.path, op.path, nullptr, MS_BIND | MS_REC, nullptr) != 0)
        return errno == ENOENT ? 0 : errno;
      return mount(nullptr, op.path, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | op.flags, nullptr) == 0
                 ? 0
                 : errno;
    case OpKind::mask:
      if (stat(op.path, &st) != 0) return errno == ENOENT ? 0 : errno;
      if (S_ISDIR(st.st_mode))
        return mount("tmpfs", op.path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                     "size=0,mode=0555") == 0
                   ? 0
                   : errno;
      return mount("/dev/null", op.path, nullptr, MS_BIND, nullptr) == 0 ? 0 : errno;
    case OpKind::mkdir:
      if (mkdir(op.path, op.mode) != 0) return errno == EEXIST ? 0 : errno;
      if (op.flags == kChownNew && chown(op.path, op.uid, op.gid) != 0) return errno;
      return 0;
    case OpKind::mknod:
      return mknod(op.path, S_IFCHR | op.mode, op.dev) == 0 || errno == EEXIST ? 0 : errno;
    case OpKind::symlink:
      return symlink(op.source, op.path) == 0 || errno == EEXIST ? 0 : errno;
    case OpKind::touch: {
      int fd = open(op.path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, op.mode);
      if (fd < 0) return errno == EEXIST ? 0 : errno;
      close(fd);
      return 0;
    }
    case OpKind::chown:
      return chown(op.path, op.uid, op.gid) == 0 ? 0 : errno;
    case OpKind::chdir:
      return chdir(op.path) == 0 ? 0 : errno;
    case OpKind::attach:
      return sys::move_mount(op.fd, "", AT_FDCWD, op.path, MOVE_MOUNT_F_EMPTY_PATH) == 0 ? 0 : errno;
    case OpKind::pivot_root:
      // pivot_root(".", ".") stacks the old root on the new one; detaching "." then drops it
      // without needing a directory for it inside the new root.
      if (chdir(op.path) != 0) return errno;
      if (sys::pivot_root(".", ".") != 0) return errno;
      if (umount2(".", MNT_DETACH) != 0) return errno;
      return chdir("/") == 0 ? 0 : errno;
    case OpKind::remount_ro:
      return mount(nullptr, op.path, nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | op.flags, nullptr) == 0
                 ? 0
                 : errno;
  }
  return EINVAL;
}

void start_function(const void* arg) noexcept {
  const auto& plan = *static_cast<const ChildPlan*>(arg);
  if (chdir(plan.cwd) != 0) fail(plan, step_workdir, errno);
  // Marked close-on-exec instead of closed, so the error pipe still reports a failed exec.
  if (sys::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) fail(plan, step_privileges, errno, "close_range");
  const char* failed = nullptr;
  if (int err = apply_privileges(plan.privileges, &failed); err != 0)
    fail(plan, step_privileges, err, failed);
  umask(022);

  // Like execvp: ENOENT/ENOTDIR try the next PATH entry, EACCES is kept unless something is found.
  int err = ENOENT;
  for (const char* candidate : plan.exec_candidates) {
    execve(candidate, plan.argv.data(), plan.envp.data());
    if (errno == EACCES)
      err = EACCES;
    else if (errno != ENOENT && errno != ENOTDIR) {
      err = errno;
      break;
    }
  }
  fail(plan, step_exec, err);
}

}  // namespace

void child_main(const ChildPlan& plan) noexcept {
  close(plan.control_parent_fd);
  // The parent may block signals it waits for; the sandbox starts from a clean mask.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  // A killed fnexec must not leave a running sandbox behind. If it died before this line, the
  // control pipe is already at EOF and the wait for go below ends the child.
  if (plan.die_with_parent && prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
    fail(plan, step_parent_death, errno);
  // Modes below are exact (device nodes 0666, /dev/shm 1777); the function gets 022 back.
  umask(0);
  for (size_t i = 0; i < plan.ops.size(); ++i) {
    if (int err = run_op(plan.ops[i]); err != 0) fail(plan, static_cast<int32_t>(i), err);
  }
  if (sethostname(plan.hostname, plan.hostname_len) != 0) fail(plan, step_hostname, errno);

  if (plan.userns_fd >= 0) {
    // Joined last: the mounts above needed host root, the processes below run as the mapped root.
    if (setns(plan.userns_fd, CLONE_NEWUSER) != 0) fail(plan, step_userns, errno);
    if (setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0 || setgroups(0, nullptr) != 0)
      fail(plan, step_userns, errno);
  }

  char go = 0;
  ssize_t r;
  do r = read(plan.control_fd, &go, 1);
  while (r < 0 && errno == EINTR);
  if (r != 1) _exit(0);  // the parent gave up on this sandbox: nothing to report
  close(plan.control_fd);
  if (plan.unshare_cgroupns_after_go && unshare(CLONE_NEWCGROUP) != 0) fail(plan, step_cgroupns, errno);

  if (!plan.init) start_function(&plan);

  // The init is a copy of fnexec: hide fnexec's command line and environment from /proc/1, and make
  // it non-dumpable so a function running as root cannot ptrace or read it either.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  prctl(PR_SET_NAME, "fnexec-init", 0, 0, 0);
  if (plan.own_env) memset(plan.own_env, 0, plan.own_env_len);
  if (plan.own_args) {
    memset(plan.own_args, 0, plan.own_args_len);
    constexpr char kName[] = "fnexec-init";
    if (plan.own_args_len > sizeof kName) memcpy(plan.own_args, kName, sizeof kName);
  }

  const char* failed = nullptr;
  if (int err = drop_bounding_set(plan.privileges, &failed); err != 0)
    fail(plan, step_init_privileges, err, failed);
  runtime::run_init(start_function, &plan, plan.status_fd);
  fail(plan, step_fork, errno);
}

}  // namespace fnexec::sandbox::detail
