// escape_probe: tries operations a sandboxed function must not be able to do and prints one line
// per operation, `NAME RESULT`. Denied: the errno name of the refusal (EPERM, EACCES, EROFS; ENOSYS when
// the kernel or a filter has no such syscall), MASKED (a /proc file masked with /dev/null), ABSENT (the
// /proc file does not exist on this kernel), SIGSYS (killed by seccomp). Not denied: OK, WRITABLE,
// READABLE, or another errno name (e.g. ENOENT where a path check came after the permission check).
// Usage: escape_probe all | NAME...   Exit: 0 when every operation was denied, 1 otherwise, 2 on usage.
//
// Each attempt runs in a forked child, so one that succeeds cannot disturb the next, and each is
// written to be harmless if it does succeed: permission checks come before argument checks in these
// syscalls, so e.g. reboot with a bad magic number gives EPERM when denied and EINVAL when allowed.
// It never writes to /proc/sysrq-trigger and never reads /proc/kcore beyond one byte.
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace {

// Exit codes of a probe child beyond errno values.
constexpr int kOk = 0;
constexpr int kMasked = 250;
constexpr int kWritable = 251;
constexpr int kReadable = 252;
constexpr int kAbsent = 253;

int result(long rc) {
  return rc < 0 ? errno : kOk;
}

bool is_dev_null(int fd) {
  struct stat st {};
  return fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3);
}

int probe_mount() {
  return result(mount("/nonexistent-fnexec-probe", "/", nullptr, MS_BIND, nullptr));
}

// MNT_EXPIRE on the root mount is EINVAL once the permission check passed: nothing is unmounted.
int probe_umount() {
  return result(umount2("/", MNT_EXPIRE));
}

int probe_unshare() {
  return result(unshare(CLONE_NEWUSER));
}

int probe_clone_newuser() {
  long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, 0);
  if (pid < 0) return errno;
  if (pid == 0) _exit(0);
  int status = 0;
  waitpid(static_cast<pid_t>(pid), &status, 0);
  return kOk;
}

int probe_setns() {
  // A pidfd needs no /proc; setns into our own namespace changes nothing when allowed.
  int fd = static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0));
  if (fd < 0) fd = open("/proc/self/ns/uts", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  return result(setns(fd, CLONE_NEWUTS));
}

int probe_pivot_root() {
  return result(syscall(SYS_pivot_root, "/nonexistent-fnexec-probe-new", "/nonexistent-fnexec-probe-old"));
}

int probe_chroot() {
  return result(chroot("/"));
}

int probe_sysrq() {
  int fd = open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? kAbsent : errno;
  return is_dev_null(fd) ? kMasked : kWritable;
}

int probe_kcore() {
  int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? kAbsent : errno;
  if (is_dev_null(fd)) return kMasked;
  char byte;
  ssize_t n = read(fd, &byte, 1);
  if (n < 0) return errno;
  return n == 0 ? kMasked : kReadable;
}

// Seize does not stop the tracee, and the tracer's exit detaches it.
int probe_ptrace_pid1() {
  return result(ptrace(PTRACE_SEIZE, 1, nullptr, nullptr));
}

int probe_module() {
  // Both check CAP_SYS_MODULE before looking at the (invalid) image or fd.
  if (syscall(SYS_init_module, nullptr, 0, "") == 0) return kOk;
  if (errno != EPERM) return errno;
  return result(syscall(SYS_finit_module, -1, "", 0));
}

int probe_bpf() {
  union bpf_attr attr {};
  attr.map_type = BPF_MAP_TYPE_ARRAY;
  attr.key_size = 4;
  attr.value_size = 4;
  attr.max_entries = 1;
  return result(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
}

int probe_keyctl() {
  return result(syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
}

int probe_raw_socket() {
  return result(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
}

// Sets the clock to what it read a moment before: if it were allowed, the clock would not jump.
int probe_clock() {
  struct timespec now {};
  clock_gettime(CLOCK_REALTIME, &now);
  return result(clock_settime(CLOCK_REALTIME, &now));
}

// A bad magic number is EINVAL, but only after the CAP_SYS_BOOT check.
int probe_reboot() {
  return result(syscall(SYS_reboot, 0, 0, 0, nullptr));
}

// An unknown kexec architecture is EINVAL, after the CAP_SYS_BOOT check; nothing is loaded or unloaded.
int probe_kexec() {
  return result(syscall(SYS_kexec_load, 0, 0, nullptr, 0x00ff0000UL));
}

int probe_open_by_handle() {
  struct {
    unsigned int handle_bytes;
    int handle_type;
    unsigned char f_handle[8];
  } handle{8, 1, {}};
  return result(syscall(SYS_open_by_handle_at, AT_FDCWD, &handle, O_RDONLY));
}

int probe_userfaultfd() {
  return result(syscall(SYS_userfaultfd, O_CLOEXEC));
}

int probe_perf_event() {
  struct perf_event_attr attr {};
  attr.type = PERF_TYPE_SOFTWARE;
  attr.size = sizeof attr;
  attr.config = PERF_COUNT_SW_TASK_CLOCK;
  attr.exclude_kernel = 1;
  attr.exclude_hv = 1;
  return result(syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
}

struct Probe {
  const char* name;
  int (*run)();
};

constexpr Probe kProbes[] = {
    {"mount", probe_mount},
    {"umount", probe_umount},
    {"unshare", probe_unshare},
    {"clone_newuser", probe_clone_newuser},
    {"setns", probe_setns},
    {"pivot_root", probe_pivot_root},
    {"chroot", probe_chroot},
    {"sysrq", probe_sysrq},
    {"kcore", probe_kcore},
    {"ptrace_pid1", probe_ptrace_pid1},
    {"module", probe_module},
    {"bpf", probe_bpf},
    {"keyctl", probe_keyctl},
    {"raw_socket", probe_raw_socket},
    {"clock", probe_clock},
    {"reboot", probe_reboot},
    {"kexec", probe_kexec},
    {"open_by_handle", probe_open_by_handle},
    {"userfaultfd", probe_userfaultfd},
    {"perf_event", probe_perf_event},
};

// Runs one probe in a child; prints its line; returns true when the operation was denied.
bool run_probe(const Probe& probe) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    printf("%s fork-failed-%s\n", probe.name, strerrorname_np(errno));
    return false;
  }
  if (pid == 0) _exit(probe.run());
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    printf("%s %s\n", probe.name, sig == SIGSYS ? "SIGSYS" : sigabbrev_np(sig));
    return sig == SIGSYS;
  }
  int code = WEXITSTATUS(status);
  const char* text = code == kOk         ? "OK"
                     : code == kMasked   ? "MASKED"
                     : code == kWritable ? "WRITABLE"
                     : code == kReadable ? "READABLE"
                     : code == kAbsent   ? "ABSENT"
                                         : strerrorname_np(code);
  printf("%s %s\n", probe.name, text ? text : "UNKNOWN");
  return code == EPERM || code == EACCES || code == EROFS || code == ENOSYS || code == kMasked ||
         code == kAbsent;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s all | NAME...\nnames:", argv[0]);
    for (const auto& p : kProbes) fprintf(stderr, " %s", p.name);
    fprintf(stderr, "\n");
    return 2;
  }
  bool all_denied = true;
  for (int i = 1; i < argc; ++i) {
    bool all = strcmp(argv[i], "all") == 0, found = false;
    for (const auto& p : kProbes) {
      if (!all && strcmp(argv[i], p.name) != 0) continue;
      found = true;
      all_denied &= run_probe(p);
    }
    if (!found) {
      fprintf(stderr, "escape_probe: unknown operation '%s' (run without arguments for the list)\n", argv[i]);
      return 2;
    }
  }
  fflush(stdout);
  return all_denied ? 0 : 1;
}
