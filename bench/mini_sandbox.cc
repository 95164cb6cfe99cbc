// The kernel work of a default `fnexec run IMG -- PROGRAM` with no user-space work around it: the
// floor of bench/run-start.sh part 2 ("what the kernel alone costs"). Not a sandbox to use.
//
//   fnexec-bench-mini-sandbox LAYER SCRATCH PROGRAM [ARGS...]      (root)
//
// The same namespaces (mount, pid, net, ipc, uts, cgroup), lo up, fnexec's mount plan
// (src/sandbox/rootfs.cc: a tmpfs scratch with the overlay's upper and work dirs, the overlay of
// LAYER, pivot_root and a detach of the old root, /proc, a tmpfs /dev with six device nodes, devpts,
// /dev/shm, mqueue, sysfs, the masked and read-only paths), the hostname, the bounding set, ids and
// capabilities, no_new_privs and fnexec's own default seccomp filter, then exec; PID 1 reports the
// function's status and exits, and this process answers on the status as `fnexec run` does.
// Differences: one static process does it all (fnexec execs its init from a memfd and hands it a
// plan; the function parks on a socket until go); targets are plain paths, not openat2 lookups
// inside the root; lo is brought up by an ioctl in the sandbox, not netlink from the parent; the
// function is a vfork of PID 1 (fnexec: CLONE_VM without VFORK).
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/mount.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <initializer_list>

#include "sandbox/seccomp_default_bpf.h"

namespace {

[[noreturn]] void die(const char* what, const char* on = "") {
  dprintf(2, "mini-sandbox: %s %s: %s\n", what, on, strerror(errno));
  _exit(125);
}

void check(long r, const char* what, const char* on = "") {
  if (r < 0) die(what, on);
}

void mkdir_ok(const char* path, mode_t mode) {
  if (mkdir(path, mode) != 0 && errno != EEXIST) die("mkdir", path);
}

long open_tree_clone(const char* path) {
  return syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
}

// A copy of from's tree, with attrs set, moved onto to: fnexec's bind_on.
void bind_on(const char* from, const char* to, uint64_t attrs) {
  long tree = open_tree_clone(from);
  check(tree, "open_tree", from);
  if (attrs) {
    mount_attr attr{};
    attr.attr_set = attrs;
    check(syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr),
          "mount_setattr", to);
  }
  check(syscall(SYS_move_mount, tree, "", AT_FDCWD, to, MOVE_MOUNT_F_EMPTY_PATH), "move_mount", to);
  close(static_cast<int>(tree));
}

void mounts(const char* layer, const char* scratch) {
  char upper[4096], work[4096], root[4096], opts[4 * 4096];
  snprintf(upper, sizeof upper, "%s/upper", scratch);
  snprintf(work, sizeof work, "%s/work", scratch);
  snprintf(root, sizeof root, "%s/root", scratch);
  snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", layer, upper, work);
  check(mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr), "make / private");
  check(mount("fnexec", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"), "mount tmpfs", scratch);
  mkdir_ok(upper, 0755);
  mkdir_ok(work, 0700);
  mkdir_ok(root, 0755);
  check(mount("overlay", root, "overlay", MS_NODEV, opts), "mount overlay", root);
  check(chdir(root), "chdir", root);
  check(syscall(SYS_pivot_root, ".", "."), "pivot_root");
  check(umount2(".", MNT_DETACH), "detach the old root");
  check(chdir("/"), "chdir /");

  mkdir_ok("/proc", 0555);
  check(mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr), "mount /proc");
  mkdir_ok("/dev", 0755);
  check(mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"), "mount /dev");
  const struct {
    const char* path;
    unsigned major, minor;
  } devices[] = {{"/dev/null", 1, 3},   {"/dev/zero", 1, 5},    {"/dev/full", 1, 7},
                 {"/dev/random", 1, 8}, {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0}};
  for (const auto& d : devices)
    check(mknod(d.path, S_IFCHR | 0666, makedev(d.major, d.minor)), "mknod", d.path);
  mkdir_ok("/dev/pts", 0755);
  check(mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        "mount /dev/pts");
  check(symlink("pts/ptmx", "/dev/ptmx"), "symlink /dev/ptmx");
  mkdir_ok("/dev/shm", 01777);
  check(mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k"),
        "mount /dev/shm");
  mkdir_ok("/dev/mqueue", 0755);
  check(mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr),
        "mount /dev/mqueue");
  const char* links[][2] = {{"/proc/self/fd", "/dev/fd"},
                            {"/proc/self/fd/0", "/dev/stdin"},
                            {"/proc/self/fd/1", "/dev/stdout"},
                            {"/proc/self/fd/2", "/dev/stderr"}};
  for (auto& l : links) check(symlink(l[0], l[1]), "symlink", l[1]);
  mkdir_ok("/sys", 0555);
  check(mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, nullptr), "mount /sys");

  // fnexec's (crun's) masked and read-only paths; absent ones are skipped, as there.
  for (const char* p : {"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                        "/sys/firmware", "/sys/fs/selinux", "/sys/dev/block"}) {
    struct stat st;
    if (lstat(p, &st) != 0) continue;
    if (S_ISDIR(st.st_mode))
      check(mount("tmpfs", p, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0555"),
            "mask", p);
    else
      bind_on("/dev/null", p, 0);
  }
  for (const char* p : {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}) {
    if (access(p, F_OK) != 0) continue;
    bind_on(p, p, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
  }
}

uint64_t default_capabilities() {
  uint64_t set = 0;
  for (int cap : {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_NET_BIND_SERVICE,
                  CAP_SETFCAP, CAP_SETGID, CAP_SETPCAP, CAP_SETUID})
    set |= uint64_t{1} << cap;
  return set;
}

void drop_bounding(uint64_t keep) {
  for (int cap = 0; cap < 64; ++cap) {
    if (keep & (uint64_t{1} << cap)) continue;
    int present = prctl(PR_CAPBSET_READ, cap);
    if (present < 0) return;  // past cap_last_cap
    if (present == 1) check(prctl(PR_CAPBSET_DROP, cap), "drop bounding capability");
  }
}

// The function's side, in the vfork child: raw system calls only (it shares PID 1's memory).
[[noreturn]] void exec_function(char** argv) {
  static const char* envp[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                               "HOSTNAME=fnexec", "HOME=/root", nullptr};
  uint64_t caps = default_capabilities();
  drop_bounding(caps);
  syscall(SYS_prctl, PR_SET_KEEPCAPS, 1, 0, 0, 0);
  syscall(SYS_setgroups, 0, nullptr);
  syscall(SYS_setresgid, 0, 0, 0);
  syscall(SYS_setresuid, 0, 0, 0);
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; ++i)
    data[i].effective = data[i].permitted = data[i].inheritable = static_cast<uint32_t>(caps >> (32 * i));
  syscall(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  if (syscall(SYS_capset, &header, data) != 0) _exit(125);
  if (syscall(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(125);
  const auto& filter = fnexec::sandbox::generated::kDefaultSeccompFilter;
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]),
                  const_cast<sock_filter*>(filter)};
  if (syscall(SYS_prctl, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) _exit(125);
  syscall(SYS_execve, argv[0], argv, envp);
  _exit(127);
}

[[noreturn]] void pid1(char** argv, int status_fd) {
  check(prctl(PR_SET_PDEATHSIG, SIGKILL), "set the parent-death signal");
  mounts(argv[1], argv[2]);
  check(sethostname("fnexec", 6), "sethostname");
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  check(s, "socket");
  ifreq ifr{};
  strcpy(ifr.ifr_name, "lo");
  ifr.ifr_flags = IFF_UP;
  check(ioctl(s, SIOCSIFFLAGS, &ifr), "bring up lo");
  close(s);
  drop_bounding(default_capabilities());
  pid_t function = vfork();
  if (function == 0) exec_function(argv + 3);
  check(function, "vfork");
  for (int fd = 0; fd < 3; ++fd) close(fd);  // stdout's EOF is the function's exit, as in fnexec
  int status = 0;
  while (waitpid(function, &status, 0) < 0)
    if (errno != EINTR) die("wait for the function");
  kill(-1, SIGKILL);
  while (wait(nullptr) > 0 || errno == EINTR) {
  }
  if (write(status_fd, &status, sizeof status) != sizeof status) _exit(125);
  _exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s LAYER SCRATCH PROGRAM [ARGS...]\n", argv[0]);
    return 2;
  }
  int status_pipe[2];
  check(pipe2(status_pipe, O_CLOEXEC), "pipe");
  long pid = syscall(
      SYS_clone,
      CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | SIGCHLD,
      nullptr, nullptr, nullptr, nullptr);
  check(pid, "clone");
  if (pid == 0) {
    close(status_pipe[0]);
    pid1(argv, status_pipe[1]);
  }
  close(status_pipe[1]);
  int status = 0;
  ssize_t n;
  do n = read(status_pipe[0], &status, sizeof status);
  while (n < 0 && errno == EINTR);
  if (n != sizeof status) {
    // PID 1 failed (it said why on stderr): reap it for its code.
    int pid1_status = 0;
    waitpid(static_cast<pid_t>(pid), &pid1_status, 0);
    return WIFEXITED(pid1_status) && WEXITSTATUS(pid1_status) ? WEXITSTATUS(pid1_status) : 125;
  }
  // Answered on the status, as `fnexec run` without a cgroup: PID 1's namespace teardown is left
  // to our parent's reaper.
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
