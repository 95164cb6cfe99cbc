#include "sandbox/seccomp.h"

#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <simdjson.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>

#include "sandbox/capabilities.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/unique_fd.h"

// FNEXEC_TRY yields the value, so it cannot take a Result<void>; this is its statement form.
namespace fnexec::sandbox {

namespace {

namespace dom = simdjson::dom;

struct ContextRelease {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};
using Context = std::unique_ptr<void, ContextRelease>;

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

// Syscalls newer than libseccomp 2.5.4's table, with their x86_64 numbers: the default profile
// and JSON profiles (Docker's lists several) name them like any other.
struct RawSyscall {
  std::string_view name;
  int nr;
};
#if defined(__x86_64__)
constexpr RawSyscall kNewerSyscalls[] = {
    {"cachestat", 451},         {"fchmodat2", 452},         {"map_shadow_stack", 453},
    {"futex_wake", 454},        {"futex_wait", 455},        {"futex_requeue", 456},
    {"statmount", 457},         {"listmount", 458},         {"lsm_get_self_attr", 459},
    {"lsm_set_self_attr", 460}, {"lsm_list_modules", 461},  {"mseal", 462},
    {"setxattrat", 463},        {"getxattrat", 464},        {"listxattrat", 465},
    {"removexattrat", 466},     {"open_tree_attr", 467},    {"file_getattr", 468},
    {"file_setattr", 469}};
#else
constexpr std::span<const RawSyscall> kNewerSyscalls{};
#endif

// libseccomp's table first, then kNewerSyscalls; __NR_SCMP_ERROR for a name neither knows.
int resolve_syscall(std::string_view name) {
  std::string n(name);
  int nr = seccomp_syscall_resolve_name(n.c_str());
  if (nr != __NR_SCMP_ERROR) return nr;
  for (const auto& raw : kNewerSyscalls)
    if (raw.name == name) return raw.nr;
  return __NR_SCMP_ERROR;
}

bool known_to_libseccomp(std::string_view name) {
  std::string n(name);
  return seccomp_syscall_resolve_name(n.c_str()) != __NR_SCMP_ERROR;
}

bool has_foreign_arch(void* ctx) {
  for (uint32_t arch : std::initializer_list<uint32_t>{SCMP_ARCH_X86, SCMP_ARCH_X32, SCMP_ARCH_X86_64,
                                                      SCMP_ARCH_ARM, SCMP_ARCH_AARCH64})
    if (arch != seccomp_arch_native() && seccomp_arch_exist(ctx, arch) == 0) return true;
  return false;
}

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

Result<Context> new_context(uint32_t default_action, std::string_view origin) {
  Context ctx(seccomp_init(default_action));
  if (!ctx)
    return fail(ErrorKind::invalid, "create seccomp filter", std::string(origin), "libseccomp refused it");
  // Other ABIs (i386 via int 0x80, x32) number syscalls differently and would walk around the
  // rules written for the native one; a clear SIGSYS beats a program failing in odd ways.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS); rc < 0)
    return std::unexpected(
        Error{ErrorKind::internal, -rc, "set seccomp bad-arch action", std::string(origin), {}});
  // A binary tree keeps syscalls the kernel's action cache cannot decide (clone, personality) cheap.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2); rc < 0)
    return std::unexpected(
        Error{ErrorKind::internal, -rc, "set seccomp optimisation", std::string(origin), {}});
  return ctx;
}

Result<> add_rule(void* ctx, uint32_t action, int nr, std::span<const scmp_arg_cmp> args,
                  std::string_view name, std::string_view origin) {
  int rc = seccomp_rule_add_array(ctx, action, nr, static_cast<unsigned>(args.size()), args.data());
  if (rc < 0) {
    return std::unexpected(Error{ErrorKind::invalid, -rc, "use seccomp profile", std::string(origin),
                                 "rule for " + std::string(name) + " refused by libseccomp"});
  }
  return {};
}

Result<std::vector<sock_filter>> export_bpf(void* ctx, std::string_view origin) {
  // libseccomp 2.5 exports only to a file descriptor.
  UniqueFd fd(::memfd_create("fnexec-seccomp", MFD_CLOEXEC));
  if (!fd) return fail_errno("create memfd for the seccomp filter", std::string(origin));
  if (int rc = seccomp_export_bpf(ctx, fd.get()); rc < 0)
    return std::unexpected(Error{ErrorKind::internal, -rc, "export seccomp filter", std::string(origin), {}});
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail_errno("stat exported seccomp filter", std::string(origin));
  auto bytes = static_cast<size_t>(st.st_size);
  size_t count = bytes / sizeof(sock_filter);
  if (bytes == 0 || bytes % sizeof(sock_filter) != 0)
    return fail(ErrorKind::internal, "export seccomp filter", std::string(origin),
                "odd size " + std::to_string(bytes));
  if (count > BPF_MAXINSNS) {
    return fail(ErrorKind::invalid, "use seccomp profile", std::string(origin),
                "the filter has " + std::to_string(count) + " instructions, the kernel takes at most " +
                    std::to_string(BPF_MAXINSNS));
  }
  std::vector<sock_filter> filter(count);
  auto* out = reinterpret_cast<char*>(filter.data());
  for (size_t done = 0; done < bytes;) {
    ssize_t n = ::pread(fd.get(), out + done, bytes - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail_errno("read exported seccomp filter", std::string(origin), n == 0 ? EIO : errno);
    done += static_cast<size_t>(n);
  }
  return filter;
}

// ---- OCI / Docker JSON profiles ----

struct Where {
  std::string_view origin;
  std::string path;  // "syscalls[3].args[0].op"
  std::unexpected<Error> bad(std::string detail) const {
    return fail(ErrorKind::invalid, "use seccomp profile", std::string(origin),
                (path.empty() ? "" : path + ": ") + std::move(detail));
  }
  Where at(std::string_view key) const {
    return {origin, path.empty() ? std::string(key) : path + "." + std::string(key)};
  }
  Where index(size_t i) const { return {origin, path + "[" + std::to_string(i) + "]"}; }
};

template <class T>
constexpr std::string_view type_name() {
  if constexpr (std::is_same_v<T, std::string_view>)
    return "a string";
  else if constexpr (std::is_same_v<T, uint64_t>)
    return "a non-negative integer";
  else if constexpr (std::is_same_v<T, dom::array>)
    return "an array";
  else
    return "an object";
}

// An optional member: absent or null → nullopt; present with the wrong type → error.
template <class T>
Result<std::optional<T>> member(dom::object obj, std::string_view key, const Where& where) {
  dom::element e;
  if (obj[key].get(e) != simdjson::SUCCESS || e.is_null()) return std::optional<T>{};
  T value;
  if (e.get(value) != simdjson::SUCCESS) return where.at(key).bad("expected " + std::string(type_name<T>()));
  return std::optional<T>{value};
}

template <class T>
Result<T> required(dom::object obj, std::string_view key, const Where& where) {
  auto v = FNEXEC_TRY(member<T>(obj, key, where));
  if (!v) return where.at(key).bad("missing");
  return *v;
}

Result<std::vector<std::string_view>> strings(dom::array arr, const Where& where) {
  std::vector<std::string_view> out;
  size_t i = 0;
  for (dom::element e : arr) {
    std::string_view s;
    if (e.get(s) != simdjson::SUCCESS) return where.index(i).bad("expected a string");
    out.push_back(s);
    ++i;
  }
  return out;
}

// Calls visit(object, where) for each element of arr, which must all be objects.
template <class Visit>
Result<> for_each_object(dom::array arr, const Where& where, Visit&& visit) {
  size_t i = 0;
  for (dom::element e : arr) {
    Where w = where.index(i++);
    dom::object obj;
    if (e.get(obj) != simdjson::SUCCESS) return w.bad("expected an object");
    if (Result<> r = visit(obj, w); !r) return r;
  }
  return {};
}

// The kernel hands back at most MAX_ERRNO (4095) as an errno.
Result<uint16_t> errno_member(dom::object obj, std::string_view key, uint16_t fallback, const Where& where) {
  auto err = FNEXEC_TRY(member<uint64_t>(obj, key, where));
  if (!err) return fallback;
  if (*err > 4095) return where.at(key).bad(std::to_string(*err) + " is not an errno (at most 4095)");
  return static_cast<uint16_t>(*err);
}

Result<uint32_t> parse_action(std::string_view name, uint16_t data, const Where& where) {
  if (name == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
  if (name == "SCMP_ACT_ERRNO") return SCMP_ACT_ERRNO(data);
  if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL;
  if (name == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
  if (name == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
  if (name == "SCMP_ACT_TRACE") return SCMP_ACT_TRACE(data);
  if (name == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
  if (name == "SCMP_ACT_NOTIFY")
    return where.bad("SCMP_ACT_NOTIFY needs a seccomp agent, which fnexec does not run");
  return where.bad("unknown action '" + std::string(name) +
                   "' (expected SCMP_ACT_ALLOW, ERRNO, KILL, KILL_THREAD, KILL_PROCESS, TRAP, TRACE or LOG)");
}

Result<scmp_compare> parse_op(std::string_view op, const Where& where) {
  if (op == "SCMP_CMP_NE") return SCMP_CMP_NE;
  if (op == "SCMP_CMP_LT") return SCMP_CMP_LT;
  if (op == "SCMP_CMP_LE") return SCMP_CMP_LE;
  if (op == "SCMP_CMP_EQ") return SCMP_CMP_EQ;
  if (op == "SCMP_CMP_GE") return SCMP_CMP_GE;
  if (op == "SCMP_CMP_GT") return SCMP_CMP_GT;
  if (op == "SCMP_CMP_MASKED_EQ") return SCMP_CMP_MASKED_EQ;
  return where.bad("unknown operator '" + std::string(op) +
                   "' (expected SCMP_CMP_NE, LT, LE, EQ, GE, GT or MASKED_EQ)");
}

// "SCMP_ARCH_X86_64" → libseccomp's token for "x86_64".
Result<uint32_t> parse_arch(std::string_view name, const Where& where) {
  std::string lower;
  std::string_view bare = name.starts_with("SCMP_ARCH_") ? name.substr(10) : name;
  for (char c : bare) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  uint32_t token = seccomp_arch_resolve_name(lower.c_str());
  if (token == 0) return where.bad("unknown architecture '" + std::string(name) + "'");
  return token;
}

// Docker writes conditions with Go's architecture names ("amd64"); libseccomp's are accepted too.
bool is_native_arch(std::string_view name) {
#if defined(__x86_64__)
  return name == "amd64" || name == "x86_64" || name == "SCMP_ARCH_X86_64";
#elif defined(__aarch64__)
  return name == "arm64" || name == "aarch64" || name == "SCMP_ARCH_AARCH64";
#else
  return false;
#endif
}

bool kernel_at_least(std::string_view version) {
  int want_major = 0, want_minor = 0, major = 0, minor = 0;
  std::string v(version);
  if (std::sscanf(v.c_str(), "%d.%d", &want_major, &want_minor) < 1) return true;
  utsname u{};
  if (::uname(&u) != 0 || std::sscanf(u.release, "%d.%d", &major, &minor) < 1) return true;
  return major > want_major || (major == want_major && minor >= want_minor);
}

// Docker's includes/excludes: a rule can depend on the capabilities, the architecture and the kernel.
Result<bool> rule_applies(dom::object entry, uint64_t capabilities, const Where& where) {
  auto has_cap = [&](std::string_view name) {
    auto cap = capability_from_name(name, "seccomp profile");
    return cap && (capabilities & (uint64_t{1} << *cap));
  };
  for (bool include : {true, false}) {
    std::string_view key = include ? "includes" : "excludes";
    auto cond = FNEXEC_TRY(member<dom::object>(entry, key, where));
    if (!cond) continue;
    Where w = where.at(key);
    if (auto caps = FNEXEC_TRY(member<dom::array>(*cond, "caps", w))) {
      auto names = FNEXEC_TRY(strings(*caps, w.at("caps")));
      if (!names.empty()) {
        bool all = std::all_of(names.begin(), names.end(), has_cap);
        bool any = std::any_of(names.begin(), names.end(), has_cap);
        if (include ? !all : any) return false;
      }
    }
    if (auto arches = FNEXEC_TRY(member<dom::array>(*cond, "arches", w))) {
      auto names = FNEXEC_TRY(strings(*arches, w.at("arches")));
      if (!names.empty()) {
        bool native = std::any_of(names.begin(), names.end(), is_native_arch);
        if (include != native) return false;
      }
    }
    if (auto min_kernel = FNEXEC_TRY(member<std::string_view>(*cond, "minKernel", w))) {
      if (include != kernel_at_least(*min_kernel)) return false;
    }
  }
  return true;
}

Result<std::vector<scmp_arg_cmp>> parse_args(dom::array args, const Where& where) {
  std::vector<scmp_arg_cmp> out;
  auto parsed = for_each_object(args, where, [&](dom::object arg, const Where& w) -> Result<> {
    uint64_t index = FNEXEC_TRY(required<uint64_t>(arg, "index", w));
    if (index > 5) return w.at("index").bad("a syscall has arguments 0 to 5");
    uint64_t value = FNEXEC_TRY(required<uint64_t>(arg, "value", w));
    uint64_t value_two = FNEXEC_TRY(member<uint64_t>(arg, "valueTwo", w)).value_or(0);
    scmp_compare op = FNEXEC_TRY(parse_op(FNEXEC_TRY(required<std::string_view>(arg, "op", w)), w.at("op")));
    // OCI: for MASKED_EQ, value is the mask and valueTwo the value; libseccomp takes them in that order.
    out.push_back(scmp_arg_cmp{static_cast<unsigned>(index), op, value, value_two});
    return {};
  });
  if (!parsed) return std::unexpected(std::move(parsed.error()));
  return out;
}

Result<> add_profile_entry(void* ctx, dom::object entry, uint32_t default_action, uint16_t default_errno,
                           uint64_t capabilities, const Where& where) {
  std::vector<std::string_view> names;
  if (auto list = FNEXEC_TRY(member<dom::array>(entry, "names", where)))
    names = FNEXEC_TRY(strings(*list, where.at("names")));
  if (auto one = FNEXEC_TRY(member<std::string_view>(entry, "name", where))) names.push_back(*one);
  auto action_name = FNEXEC_TRY(required<std::string_view>(entry, "action", where));
  uint16_t errno_ret = FNEXEC_TRY(errno_member(entry, "errnoRet", default_errno, where));
  uint32_t action = FNEXEC_TRY(parse_action(action_name, errno_ret, where.at("action")));
  std::vector<scmp_arg_cmp> args;
  if (auto list = FNEXEC_TRY(member<dom::array>(entry, "args", where)))
    args = FNEXEC_TRY(parse_args(*list, where.at("args")));
  if (!FNEXEC_TRY(rule_applies(entry, capabilities, where))) return {};
  // libseccomp refuses a rule that repeats the default action; it changes nothing, so runc skips it too.
  if (action == default_action) return {};

  // runc's reading of OCI: comparisons on distinct arguments must all hold (one rule); when an
  // argument repeats, libseccomp cannot AND them, so each comparison becomes its own rule.
  bool repeated = false;
  for (size_t i = 0; i < args.size(); ++i)
    for (size_t j = i + 1; j < args.size(); ++j) repeated |= args[i].arg == args[j].arg;

  for (size_t i = 0; i < names.size(); ++i) {
    std::string_view name = names[i];
    // libseccomp knows every architecture's names (other arches' resolve to pseudo numbers that
    // add no rule), so a name unknown to it and to kNewerSyscalls is a typo or a syscall newer
    // than fnexec: refused, rather than silently leaving the profile weaker or stronger than written.
    int nr = resolve_syscall(name);
    if (nr == __NR_SCMP_ERROR)
      return where.at("names").index(i).bad("unknown syscall '" + std::string(name) + "'");
    if (!known_to_libseccomp(name) && has_foreign_arch(ctx)) {
      // libseccomp 2.5 cannot translate a number it does not know to the other ABIs of a
      // multi-arch filter; the rule is left out and the call gets the default action.
      spdlog::warn("event=seccomp_rule_skipped name={} profile={} reason=\"newer than libseccomp; the "
                   "profile also lists other architectures\"",
                   name, where.origin);
      continue;
    }
    if (!repeated) {
      FNEXEC_TRY(add_rule(ctx, action, nr, args, name, where.origin));
    } else {
      for (const auto& cmp : args)
        FNEXEC_TRY(add_rule(ctx, action, nr, std::span(&cmp, 1), name, where.origin));
    }
  }
  return {};
}

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

Result<std::vector<sock_filter>> build_default_filter() {
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

}  // namespace

Result<std::vector<sock_filter>> default_seccomp_filter() {
  // Built once per process: 0.2-0.5 ms of libseccomp work a daemon would otherwise repeat per sandbox.
  static const Result<std::vector<sock_filter>> built = build_default_filter();
  return built;
}

Result<SeccompProfileSummary> default_seccomp_summary() {
  auto filter = FNEXEC_TRY(default_seccomp_filter());
  SeccompProfileSummary s;
  // clone, socket and personality are allowed only with some arguments.
  s.allowed = std::size(kAllowed) + std::size(kAllowedNewer) + 3;
  s.denied = std::size(kDenied);
  s.instructions = filter.size();
  return s;
}

Result<> check_seccomp_profile_reference(std::string_view ref) {
  if (ref.empty() || ref == "default" || ref == "unconfined" || ref.front() == '{') return {};
  bool plain = ref.size() <= 128 && ref.front() != '.' && std::all_of(ref.begin(), ref.end(), [](char c) {
                 return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
               });
  if (!plain)
    return fail(ErrorKind::invalid, "use seccomp_profile", std::string(ref),
                "expected default, unconfined, a JSON profile ({...}) or the NAME of a profile file "
                "(letters, digits, '.', '_', '-')");
  return {};
}

Result<std::vector<sock_filter>> seccomp_filter_from_profile(std::string_view json, std::string_view origin,
                                                             uint64_t capabilities) {
  Where top{origin, {}};
  dom::parser parser;
  simdjson::padded_string text(json);
  dom::element doc;
  if (auto err = parser.parse(text).get(doc); err != simdjson::SUCCESS)
    return top.bad(std::string("not valid JSON: ") + simdjson::error_message(err));
  dom::object root;
  if (doc.get(root) != simdjson::SUCCESS) return top.bad("expected a JSON object at the top");

  uint16_t default_errno = FNEXEC_TRY(errno_member(root, "defaultErrnoRet", EPERM, top));
  auto default_name = FNEXEC_TRY(required<std::string_view>(root, "defaultAction", top));
  uint32_t default_action = FNEXEC_TRY(parse_action(default_name, default_errno, top.at("defaultAction")));
  Context ctx = FNEXEC_TRY(new_context(default_action, origin));

  auto add_arch = [&](std::string_view name, const Where& w) -> Result<> {
    uint32_t token = FNEXEC_TRY(parse_arch(name, w));
    int rc = seccomp_arch_add(ctx.get(), token);
    if (rc < 0 && rc != -EEXIST)
      return w.bad("architecture '" + std::string(name) + "' refused by libseccomp");
    return {};
  };
  if (auto arches = FNEXEC_TRY(member<dom::array>(root, "architectures", top))) {
    Where w = top.at("architectures");
    auto names = FNEXEC_TRY(strings(*arches, w));
    for (size_t i = 0; i < names.size(); ++i) FNEXEC_TRY(add_arch(names[i], w.index(i)));
  }
  // Docker's archMap: the entry for the native architecture brings its sub-architectures (x86, x32).
  if (auto map = FNEXEC_TRY(member<dom::array>(root, "archMap", top))) {
    FNEXEC_TRY(for_each_object(*map, top.at("archMap"), [&](dom::object entry, const Where& w) -> Result<> {
      auto arch = FNEXEC_TRY(required<std::string_view>(entry, "architecture", w));
      if (FNEXEC_TRY(parse_arch(arch, w.at("architecture"))) != seccomp_arch_native()) return {};
      auto subs = FNEXEC_TRY(member<dom::array>(entry, "subArchitectures", w));
      auto names =
          subs ? FNEXEC_TRY(strings(*subs, w.at("subArchitectures"))) : std::vector<std::string_view>{};
      for (size_t i = 0; i < names.size(); ++i)
        FNEXEC_TRY(add_arch(names[i], w.at("subArchitectures").index(i)));
      return {};
    }));
  }
  if (FNEXEC_TRY(member<dom::array>(root, "flags", top))) {
    // The filter is loaded with prctl(PR_SET_SECCOMP), which takes no SECCOMP_FILTER_FLAG_*.
    spdlog::warn("event=seccomp_flags_ignored profile={} reason=\"fnexec loads filters without flags\"",
                 origin);
  }
  if (auto syscalls = FNEXEC_TRY(member<dom::array>(root, "syscalls", top))) {
    FNEXEC_TRY(for_each_object(*syscalls, top.at("syscalls"), [&](dom::object entry, const Where& w) {
      return add_profile_entry(ctx.get(), entry, default_action, default_errno, capabilities, w);
    }));
  }
  return export_bpf(ctx.get(), origin);
}

Result<std::vector<sock_filter>> seccomp_filter_from_file(const std::string& path, uint64_t capabilities) {
  auto text = fs::read_file(path);
  if (!text) return std::unexpected(std::move(text.error().context("use seccomp profile")));
  return seccomp_filter_from_profile(*text, path, capabilities);
}

}  // namespace fnexec::sandbox
