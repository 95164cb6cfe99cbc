#include "sandbox/seccomp_default.h"

#include <sched.h>

#include <iterator>

#include "sandbox/seccomp_build.h"

namespace fnexec::sandbox {

namespace {

using namespace seccomp_build;

// fnexec's default is an allowlist, as Docker's and Podman's are: a syscall the kernel adds after
// this list was written answers ENOSYS (so libc falls back to an older call) instead of reaching new
// kernel code unreviewed. What to allow was derived from the x86_64 syscall table with Docker's
// default profile as the reference for what containers need; the capability set still refuses the
// privileged ones that stay allowed (chroot, mknod, setuid...). Every allowed syscall without an
// argument filter is decided by the kernel's seccomp action cache without running the BPF program.
// clang-format off
constexpr std::string_view kAllowed[] = {
    // Files and directories.
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
    "open", "openat", "openat2", "creat", "close", "close_range", "lseek", "dup", "dup2", "dup3", "fcntl",
    "ioctl", "flock", "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "truncate", "ftruncate",
    "fallocate", "fadvise64", "readahead", "sendfile", "splice", "tee", "vmsplice", "copy_file_range",
    "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat",
    "faccessat2", "getdents", "getdents64", "getcwd", "chdir", "fchdir", "chroot", "mkdir", "mkdirat",
    "rmdir", "mknod", "mknodat", "rename", "renameat", "renameat2", "link", "linkat", "symlink",
    "symlinkat", "unlink", "unlinkat", "readlink", "readlinkat", "chmod", "fchmod", "fchmodat", "chown",
    "fchown", "fchownat", "lchown", "umask", "utime", "utimes", "utimensat", "futimesat",
    "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr", "listxattr",
    "llistxattr", "flistxattr", "removexattr", "lremovexattr", "fremovexattr",
    "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_mark",
    "memfd_create", "memfd_secret", "pipe", "pipe2",
    // Memory.
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "mlock", "mlock2",
    "munlock", "mlockall", "munlockall", "remap_file_pages", "get_mempolicy", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "membarrier",
    // Processes, threads, signals, identity (the capability set decides who may change ids).
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "kill", "tkill",
    "tgkill", "pidfd_open", "pidfd_send_signal", "process_mrelease", "getpid", "getppid", "gettid",
    "getpgid", "setpgid", "getpgrp", "getsid", "setsid", "getuid", "geteuid", "getgid", "getegid",
    "getresuid", "getresgid", "getgroups", "setuid", "setgid", "setreuid", "setregid", "setresuid",
    "setresgid", "setfsuid", "setfsgid", "setgroups", "capget", "capset", "prctl", "arch_prctl",
    "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "futex", "futex_waitv",
    "set_thread_area", "get_thread_area", "seccomp", "landlock_create_ruleset", "landlock_add_rule",
    "landlock_restrict_self", "restart_syscall",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack", "signalfd", "signalfd4",
    "pause",
    // Scheduling and limits.
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam", "sched_setparam",
    "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "sched_getattr", "sched_setattr", "getpriority", "setpriority",
    "ioprio_get", "ioprio_set", "getrlimit", "setrlimit", "prlimit64", "getrusage", "times", "sysinfo",
    "uname", "getcpu", "getrandom",
    // Time (reading it; setting the clock is denied below).
    "time", "gettimeofday", "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "alarm",
    "getitimer", "setitimer", "timer_create", "timer_delete", "timer_gettime", "timer_settime",
    "timer_getoverrun", "timerfd_create", "timerfd_gettime", "timerfd_settime",
    // Waiting for events, asynchronous I/O.
    "select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
    "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "io_setup", "io_destroy", "io_submit",
    "io_cancel", "io_getevents", "io_pgetevents",
    // Sockets (socket itself is filtered by family below).
    "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername",
    "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "setsockopt",
    "getsockopt",
    // System V and POSIX IPC (private to the sandbox's IPC namespace).
    "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl", "shmget", "shmat",
    "shmdt", "shmctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify",
    "mq_getsetattr",
};

// clang-format off
constexpr std::string_view kAllowedNewer[] = {
    "cachestat", "fchmodat2", "map_shadow_stack", "futex_wake", "futex_wait", "futex_requeue", "mseal",
    "setxattrat", "getxattrat", "listxattrat", "removexattrat"};
// clang-format on

// Known and refused with EPERM (a clear "not allowed" rather than ENOSYS's "not there"): what
// escapes the sandbox's view or reaches large kernel surfaces even without a capability.
constexpr std::string_view kDenied[] = {
    // Mounts and namespaces: the sandbox's view of the system is fixed before exec.
    "mount", "umount2", "pivot_root", "unshare", "setns", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "open_tree_attr", "mount_setattr", "sethostname", "setdomainname",
    // Kernel code and the machine: modules, kexec, reboot, swap, accounting, quotas, I/O ports.
    "init_module", "finit_module", "delete_module", "create_module", "get_kernel_syms", "query_module",
    "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    "nfsservctl", "syslog", "lookup_dcookie", "uselib", "iopl", "ioperm", "_sysctl", "vhangup",
    // The clocks are host-wide.
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    // Reaching into other processes: ptrace is denied outright, even of the sandbox's own children.
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    // Large kernel attack surface reachable without any capability.
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "fanotify_init",
    // File handles bypass the permission checks of the path walk.
    "open_by_handle_at", "name_to_handle_at",
    // NUMA placement reaches other tenants' memory (Docker allows these only with CAP_SYS_NICE).
    "mbind", "set_mempolicy", "set_mempolicy_home_node", "migrate_pages", "move_pages",
};
// clang-format on

// AF_VSOCK reaches the hypervisor's host side, outside the sandbox's network namespace.
constexpr uint64_t kSocketFamilyVsock = 40;

constexpr uint64_t kNamespaceFlags[] = {CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,   CLONE_NEWUSER,
                                        CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP};

Result<> add_named_rules(void* ctx, uint32_t action, std::span<const std::string_view> names,
                        std::string_view origin) {
  for (std::string_view name : names) {
    int nr = resolve_syscall(name);
    if (nr == __NR_SCMP_ERROR)
      return fail(ErrorKind::internal, "build default seccomp filter", std::string(name), "unknown syscall");
    FNEXEC_TRY(add_rule(ctx, action, nr, {}, name, origin));
  }
  return {};
}

}  // namespace

Result<std::vector<sock_filter>> build_default_seccomp_filter() {
  constexpr std::string_view origin = "(default profile)";
  // ENOSYS for everything not listed: glibc and language runtimes treat it as "older kernel" and
  // fall back, where EPERM would read as a refusal and fail the program.
  Context ctx = FNEXEC_TRY(new_context(SCMP_ACT_ERRNO(ENOSYS), origin));
  const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
  FNEXEC_TRY(add_named_rules(ctx.get(), SCMP_ACT_ALLOW, kAllowed, origin));
#if defined(__x86_64__)
  FNEXEC_TRY(add_named_rules(ctx.get(), SCMP_ACT_ALLOW, kAllowedNewer, origin));
#endif
  FNEXEC_TRY(add_named_rules(ctx.get(), eperm, kDenied, origin));

  // New namespaces would let the function build its own mounts and users: clone without any
  // namespace flag is allowed, with one EPERM. clone3 passes its flags in memory a filter cannot
  // read, so it stays ENOSYS and glibc falls back to clone (as Docker does).
  uint64_t all_namespaces = 0;
  for (uint64_t flag : kNamespaceFlags) {
    all_namespaces |= flag;
    scmp_arg_cmp cmp = SCMP_A0_64(SCMP_CMP_MASKED_EQ, flag, flag);
    FNEXEC_TRY(add_rule(ctx.get(), eperm, SCMP_SYS(clone), std::span(&cmp, 1), "clone", origin));
  }
  scmp_arg_cmp no_namespace = SCMP_A0_64(SCMP_CMP_MASKED_EQ, all_namespaces, 0);
  FNEXEC_TRY(
      add_rule(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(clone), std::span(&no_namespace, 1), "clone", origin));

  // socket: every family but AF_VSOCK, which answers as a kernel without it would.
  scmp_arg_cmp not_vsock = SCMP_A0_32(SCMP_CMP_NE, kSocketFamilyVsock);
  FNEXEC_TRY(add_rule(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(socket), std::span(&not_vsock, 1), "socket", origin));
  scmp_arg_cmp vsock = SCMP_A0_32(SCMP_CMP_EQ, kSocketFamilyVsock);
  FNEXEC_TRY(add_rule(ctx.get(), SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), std::span(&vsock, 1),
                      "socket", origin));

  // personality: only PER_LINUX (0) and the 0xffffffff query are allowed. libseccomp cannot AND two
  // tests of one argument, so "x != 0 and x != ~0" (EPERM) is written as "some bit i set and bit
  // i+1 (mod 32) clear": every 32-bit value other than all-zeros and all-ones has such a 1→0 step.
  for (uint64_t allowed : {uint64_t{0}, uint64_t{0xffffffff}}) {
    scmp_arg_cmp cmp = SCMP_A0_32(SCMP_CMP_EQ, allowed);
    FNEXEC_TRY(
        add_rule(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(personality), std::span(&cmp, 1), "personality", origin));
  }
  for (unsigned i = 0; i < 32; ++i) {
    uint32_t set = 1u << i, clear = 1u << ((i + 1) % 32);
    scmp_arg_cmp cmp = SCMP_A0_32(SCMP_CMP_MASKED_EQ, set | clear, set);
    FNEXEC_TRY(
        add_rule(ctx.get(), eperm, SCMP_SYS(personality), std::span(&cmp, 1), "personality", origin));
  }
  return export_bpf(ctx.get(), origin);
}

SeccompDefaultCounts seccomp_default_counts() {
  // clone, socket and personality are allowed only with some arguments.
  return {std::size(kAllowed) + std::size(kAllowedNewer) + 3, std::size(kDenied)};
}

}  // namespace fnexec::sandbox
