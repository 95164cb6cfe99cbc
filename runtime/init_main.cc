// fnexec-init: the program a sandbox runs from its first instant. fnexec clones the namespaces and
// execs this at once (from a sealed memfd), passing the fd of its plan (runtime/protocol.h). It
// then runs one linear setup sequence: stdio, mounts and pivot_root, hostname, user namespace,
// cgroup namespace. As PID 1 it starts the function (sharing init's memory until its exec, see
// start_function), which applies its privileges and parks on the control socket until go, then
// execs; PID 1 forwards signals, reaps orphans and reports the function's raw wait status.
//
// Built with -nostdlib -static: a parked sandbox is two small processes (about 12 KiB resident,
// one address space between them on x86_64) instead of two copies of fnexec, and its exec at go
// tears down nothing large.
#include <linux/close_range.h>
#include <linux/fcntl.h>
#include <linux/mman.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <linux/prctl.h>
#include <linux/sched.h>
#include <linux/stat.h>
#include <linux/wait.h>

#include "runtime/privileges.h"
#include "runtime/protocol.h"
#include "runtime/sys.h"

// The compiler may emit calls to these for struct copies and zeroing; there is no C library.
extern "C" {
void* memset(void* d, int c, size_t n) {
  auto* p = static_cast<unsigned char*>(d);
  while (n--) *p++ = static_cast<unsigned char>(c);
  return d;
}
void* memcpy(void* d, const void* s, size_t n) {
  auto* p = static_cast<unsigned char*>(d);
  auto* q = static_cast<const unsigned char*>(s);
  while (n--) *p++ = *q++;
  return d;
}
void* memmove(void* d, const void* s, size_t n) {
  auto* p = static_cast<unsigned char*>(d);
  auto* q = static_cast<const unsigned char*>(s);
  if (p < q) return memcpy(d, s, n);
  while (n--) p[n] = q[n];
  return d;
}
int memcmp(const void* a, const void* b, size_t n) {
  auto* p = static_cast<const unsigned char*>(a);
  auto* q = static_cast<const unsigned char*>(b);
  for (; n--; ++p, ++q)
    if (*p != *q) return *p - *q;
  return 0;
}
}

namespace fnexec::runtime {

namespace {

using namespace wire;

// Signal numbers (the same on x86_64 and aarch64), and a sigaction for the kernel large enough for
// either architecture's layout; it is only ever passed all zeros (SIG_DFL).
constexpr int kSIGHUP = 1, kSIGINT = 2, kSIGQUIT = 3, kSIGKILL = 9, kSIGUSR1 = 10, kSIGUSR2 = 12,
              kSIGPIPE = 13, kSIGTERM = 15, kSIGCHLD = 17, kSIGWINCH = 28;
constexpr int kForwarded[] = {kSIGTERM, kSIGINT, kSIGHUP, kSIGQUIT, kSIGUSR1, kSIGUSR2, kSIGWINCH};
constexpr int kEINTR = 4, kENOENT = 2, kENOTDIR = 20, kEACCES = 13, kEEXIST = 17, kEINVAL = 22;
constexpr long kSigBlock = 0, kSigSetMask = 2;

uint64_t sigbit(int sig) {
  return uint64_t{1} << (sig - 1);
}

struct KernelSigaction {
  unsigned long handler;
  unsigned long flags;
  unsigned long restorer;
  uint64_t mask;
};

constexpr long kMsgNoSignal = 0x4000, kMntDetach = 2, kPrioProcess = 0;

template <class... A>
long retrying(long n, A... args) {
  long r;
  do r = sys::call(n, args...);
  while (r == -kEINTR);
  return r;
}

const Header* plan;  // decoded once, read-only after
char* base;

[[noreturn]] void exit_now(int code) {
  for (;;) sys::call(__NR_exit_group, code);
}

[[noreturn]] void fail(int32_t step, int err, const char* detail = nullptr) {
  ChildFailure f;
  f.step = step;
  f.err = err;
  if (detail)
    for (size_t i = 0; detail[i] && i + 1 < sizeof f.detail; ++i) f.detail[i] = detail[i];
  if (plan) retrying(__NR_write, plan->error_fd, &f, sizeof f);
  exit_now(125);
}

const char* s(Off o) {
  return str(base, o);
}

int mount(const char* source, const char* target, const char* fstype, unsigned long flags, const char* data) {
  return sys::err(sys::call(__NR_mount, source, target, fstype, flags, data));
}

constexpr int kEAGAIN = 11, kEXDEV = 18, kELOOP = 40, kENAMETOOLONG = 36;
constexpr size_t kPathMax = 4096;

// The new root, opened right after pivot_root; -1 before. Every later path resolves below it.
int root_fd = -1;

// Why the current op failed when errno alone would mislead; reported with it.
const char* failure_detail = nullptr;

// Opens path inside the new root by the op's rule. Returns an fd or a negative errno.
long open_in_root(const char* path, Target rule, uint64_t flags, uint64_t mode = 0) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.mode = mode;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | (rule == Target::fixed ? RESOLVE_NO_SYMLINKS : 0);
  long fd;
  // EAGAIN: a rename raced the lookup (only a host process can rename here); bounded, not spun on.
  int tries = 64;
  do fd = sys::call(__NR_openat2, root_fd, path, &how, sizeof how);
  while ((fd == -kEAGAIN || fd == -kEINTR) && --tries > 0);
  if (fd == -kELOOP && rule == Target::fixed) failure_detail = "the image has a symlink on this path";
  return fd;
}

// 1, 2 or 3 when path is /proc, /sys or /dev or below, else 0.
int kernel_tree(const char* path) {
  const char* trees[] = {"/proc", "/sys", "/dev"};
  for (int t = 0; t < 3; ++t) {
    const char* p = path;
    const char* q = trees[t];
    while (*q && *p == *q) ++p, ++q;
    if (!*q && (*p == 0 || *p == '/')) return t + 1;
  }
  return 0;
}

// A user target may resolve into /proc, /sys or /dev only when it is written there: a symlink must
// not put a volume over /proc/sys or a tmpfs over /dev. Reads where fd landed from /proc/self/fd
// (fnexec's own /proc, mounted by a fixed op before any user op).
int check_landing(const Op& op, long fd) {
  if (op.target != Target::user) return 0;
  char link[32] = "/proc/self/fd/";
  char digits[12];
  int n = 0;
  for (long v = fd; n == 0 || v > 0; v /= 10) digits[n++] = static_cast<char>('0' + v % 10);
  size_t at = 14;
  while (n > 0) link[at++] = digits[--n];
  link[at] = 0;
  char where[kPathMax];
  long len = sys::call(__NR_readlinkat, AT_FDCWD, link, where, sizeof where - 1);
  if (len < 0) return sys::err(len);
  where[len] = 0;
  int landed = kernel_tree(where);
  if (landed != 0 && landed != kernel_tree(s(op.path))) {
    failure_detail = "a symlink leads it into /proc, /sys or /dev";
    return kEXDEV;
  }
  return 0;
}

// The directory of path (resolved by the op's rule, in parent_fd) and its last component (in
// name), for ops that create an entry: the entry itself is never followed.
int open_parent(const Op& op, long* parent_fd, const char** name) {
  const char* path = s(op.path);
  size_t len = 0, slash = 0;
  for (; path[len]; ++len)
    if (path[len] == '/') slash = len;
  if (len >= kPathMax) return kENAMETOOLONG;
  *name = path + slash + 1;
  const char* n = *name;
  if (path[0] != '/' || !n[0] || (n[0] == '.' && (!n[1] || (n[1] == '.' && !n[2])))) return kEINVAL;
  char dir[kPathMax];
  memcpy(dir, path, slash == 0 ? 1 : slash);
  dir[slash == 0 ? 1 : slash] = 0;
  long fd = open_in_root(dir, op.target, O_PATH | O_DIRECTORY);
  if (fd < 0) return sys::err(fd);
  if (int e = check_landing(op, fd); e != 0) {
    sys::call(__NR_close, fd);
    return e;
  }
  *parent_fd = fd;
  return 0;
}

// The mount the op targets, resolved; ENOENT is returned as is (some ops skip absent paths).
int open_target(const Op& op, uint64_t flags, long* fd) {
  long r = open_in_root(s(op.path), op.target, O_PATH | flags);
  if (r < 0) return sys::err(r);
  if (int e = check_landing(op, r); e != 0) {
    sys::call(__NR_close, r);
    return e;
  }
  *fd = r;
  return 0;
}

// Mounts a new filesystem on the resolved directory: mount(2) onto "." after fchdir is a mount
// on that fd, and needs no /proc (the first one mounts /proc itself).
int mount_on(long dir_fd, const char* source, const char* fstype, unsigned long flags, const char* data) {
  if (int e = sys::err(sys::call(__NR_fchdir, dir_fd)); e != 0) return e;
  int e = mount(source, ".", fstype, flags, data);
  sys::call(__NR_fchdir, root_fd);
  return e;
}

// A copy of the tree at from_fd, with attrs set recursively, moved onto to_fd.
int bind_on(long from_fd, long to_fd, uint64_t attrs) {
  long tree = sys::call(__NR_open_tree, from_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
  if (tree < 0) return sys::err(tree);
  int e = 0;
  if (attrs) {
    mount_attr attr{};
    attr.attr_set = attrs;
    e = sys::err(sys::call(__NR_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr));
  }
  if (!e)
    e = sys::err(sys::call(__NR_move_mount, tree, "", to_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH));
  sys::call(__NR_close, tree);
  return e;
}

// MS_RDONLY, MS_NOSUID, MS_NODEV and MS_NOEXEC have the values of their MOUNT_ATTR_* twins.
constexpr uint64_t kAttrBits = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;

// An op on a path inside the new root (after pivot_root). Returns 0 or an errno.
int run_op_in_root(const Op& op) {
  long fd = -1;
  const char* name = nullptr;
  int e = 0;
  switch (op.kind) {
    case OpKind::mkdir:
    case OpKind::mknod:
    case OpKind::symlink: {
      if ((e = open_parent(op, &fd, &name)) != 0) return e;
      if (op.kind == OpKind::mkdir) {
        e = sys::err(sys::call(__NR_mkdirat, fd, name, op.mode));
        if (e == 0 && op.flags == kChownNew)
          e = sys::err(sys::call(__NR_fchownat, fd, name, op.uid, op.gid, AT_SYMLINK_NOFOLLOW));
      } else if (op.kind == OpKind::mknod) {
        // A mode without a type is one of fnexec's own character devices; --device names its type.
        unsigned mode = (op.mode & S_IFMT) != 0 ? op.mode : (S_IFCHR | op.mode);
        e = sys::err(sys::call(__NR_mknodat, fd, name, mode, op.dev));
        if (e == 0 && op.flags == kChownNew)
          e = sys::err(sys::call(__NR_fchownat, fd, name, op.uid, op.gid, AT_SYMLINK_NOFOLLOW));
      } else {
        e = sys::err(sys::call(__NR_symlinkat, s(op.source), fd, name));
      }
      sys::call(__NR_close, fd);
      return e == kEEXIST ? 0 : e;
    }
    case OpKind::touch: {
      // Follows a final symlink inside the root and creates what it names when the directory is
      // there; O_NONBLOCK so a FIFO in the image cannot stall the setup.
      fd = open_in_root(s(op.path), op.target, O_RDONLY | O_CREAT | O_NONBLOCK | O_NOCTTY, op.mode);
      if (fd < 0) return sys::err(fd);
      e = check_landing(op, fd);
      sys::call(__NR_close, fd);
      return e;
    }
    case OpKind::mount:
      if ((e = open_target(op, O_DIRECTORY, &fd)) != 0) return e;
      e = mount_on(fd, s(op.source), s(op.fstype), op.flags, s(op.data));
      break;
    case OpKind::bind_ro:
      if ((e = open_target(op, 0, &fd)) != 0) return e == kENOENT ? 0 : e;
      e = bind_on(fd, fd, MOUNT_ATTR_RDONLY | (op.flags & kAttrBits));
      break;
    case OpKind::mask: {
      if ((e = open_target(op, 0, &fd)) != 0) return e == kENOENT ? 0 : e;
      struct statx st;
      e = sys::err(sys::call(__NR_statx, fd, "", AT_EMPTY_PATH, STATX_TYPE, &st));
      if (e == 0 && S_ISDIR(st.stx_mode)) {
        e = mount_on(fd, "tmpfs", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0555");
      } else if (e == 0) {
        long null = open_in_root("/dev/null", Target::fixed, O_PATH);
        if (null < 0) {
          e = sys::err(null);
        } else {
          e = bind_on(null, fd, 0);
          sys::call(__NR_close, null);
        }
      }
      break;
    }
    case OpKind::attach:
      if ((e = open_target(op, 0, &fd)) != 0) return e;
      e = sys::err(sys::call(__NR_move_mount, op.fd, "", fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH));
      break;
    case OpKind::remount_ro: {
      if ((e = open_target(op, O_DIRECTORY, &fd)) != 0) return e;
      mount_attr attr{};
      attr.attr_set = MOUNT_ATTR_RDONLY | (op.flags & kAttrBits);
      e = sys::err(sys::call(__NR_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof attr));
      break;
    }
    case OpKind::chown:
    case OpKind::chdir:
    case OpKind::pivot_root:
      return kEINVAL;  // host-side steps: the plan puts them before pivot_root
  }
  sys::call(__NR_close, fd);
  return e;
}

// Returns 0 or an errno.
int run_op(const Op& op) {
  if (op.target != Target::host) return root_fd < 0 ? kEINVAL : run_op_in_root(op);
  const char* path = s(op.path);
  switch (op.kind) {
    case OpKind::mount:
      return mount(s(op.source), path, s(op.fstype), op.flags, s(op.data));
    case OpKind::mkdir: {
      int e = sys::err(sys::call(__NR_mkdirat, AT_FDCWD, path, op.mode));
      if (e != 0) return e == kEEXIST ? 0 : e;
      if (op.flags == kChownNew) return sys::err(sys::call(__NR_fchownat, AT_FDCWD, path, op.uid, op.gid, 0));
      return 0;
    }
    case OpKind::chown:
      return sys::err(sys::call(__NR_fchownat, AT_FDCWD, path, op.uid, op.gid, 0));
    case OpKind::chdir:
      return sys::err(sys::call(__NR_chdir, path));
    case OpKind::attach:
      return sys::err(sys::call(__NR_move_mount, op.fd, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH));
    case OpKind::pivot_root: {
      // pivot_root(".", ".") stacks the old root on the new one; detaching "." then drops it
      // without needing a directory for it inside the new root.
      if (int e = sys::err(sys::call(__NR_chdir, path)); e != 0) return e;
      if (int e = sys::err(sys::call(__NR_pivot_root, ".", ".")); e != 0) return e;
      if (int e = sys::err(sys::call(__NR_umount2, ".", kMntDetach)); e != 0) return e;
      if (int e = sys::err(sys::call(__NR_chdir, "/")); e != 0) return e;
      long fd = sys::call(__NR_openat, AT_FDCWD, "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) return sys::err(fd);
      root_fd = static_cast<int>(fd);
      return 0;
    }
    case OpKind::bind_ro:
    case OpKind::mask:
    case OpKind::mknod:
    case OpKind::symlink:
    case OpKind::touch:
    case OpKind::remount_ro:
      return kEINVAL;  // inside the rootfs only: the plan puts them after pivot_root
  }
  return kEINVAL;
}

PrivilegeView privileges() {
  PrivilegeView v;
  v.uid = plan->uid;
  v.gid = plan->gid;
  v.groups = reinterpret_cast<const uint32_t*>(s(plan->groups));
  v.n_groups = plan->n_groups;
  v.bounding = plan->bounding;
  v.effective = plan->effective;
  v.seccomp = plan->flags & kSeccomp;
  v.filter = reinterpret_cast<const sock_filter*>(s(plan->filter));
  v.n_filter = plan->n_filter;
  v.rlimits = reinterpret_cast<const wire::Rlimit*>(s(plan->rlimits));
  v.n_rlimits = plan->n_rlimits;
  return v;
}

// Everything before exec that does not need go: privileges, fds, working directory. Done at park
// time so that go is followed by nothing but execve.
void prepare_function() {
  // Resolved inside the root like the plan's targets: the setup left "/" as the working directory.
  long dir = open_in_root(s(plan->cwd), Target::user, O_PATH | O_DIRECTORY);
  if (dir < 0) fail(step_workdir, sys::err(dir));
  if (int e = sys::err(sys::call(__NR_fchdir, dir)); e != 0) fail(step_workdir, e);
  sys::call(__NR_close, dir);
  sys::call(__NR_close, root_fd);
  // Marked close-on-exec instead of closed, so the error pipe still reports a failed exec.
  if (int e = sys::err(sys::call(__NR_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC)); e != 0)
    fail(step_privileges, e, "close_range");
  const char* failed = nullptr;
  if (int e = apply_privileges(privileges(), &failed); e != 0) fail(step_privileges, e, failed);
  sys::call(__NR_umask, 022);
}

// Tells the parent the sandbox is ready, then waits for go; EOF means the parent gave up on it.
void park() {
  char ready = 'r';
  // EPIPE is no failure: a parent that sent go at once (`fnexec run`) may have closed its end
  // already, and the go byte is still there to read.
  retrying(__NR_sendto, plan->control_fd, &ready, 1, kMsgNoSignal, 0, 0);
  char go = 0;
  if (retrying(__NR_read, plan->control_fd, &go, 1) != 1) exit_now(0);  // nothing to report
}

[[noreturn]] void exec_function() {
  auto* argv = reinterpret_cast<char* const*>(base + plan->argv);
  auto* envp = reinterpret_cast<char* const*>(base + plan->envp);
  // Like execvp: ENOENT/ENOTDIR try the next PATH entry, EACCES is kept unless something is found.
  int err = kENOENT;
  for (auto* c = reinterpret_cast<const char* const*>(base + plan->candidates); *c; ++c) {
    int e = sys::err(sys::call(__NR_execve, *c, argv, envp));
    if (e == kEACCES)
      err = kEACCES;
    else if (e != kENOENT && e != kENOTDIR) {
      err = e;
      break;
    }
  }
  fail(step_exec, err);
}

// init's signal mask before it blocked the ones it waits for; the function starts with it.
uint64_t function_sigmask = 0;

[[noreturn]] void function_main() {
  sys::call(__NR_rt_sigprocmask, kSigSetMask, &function_sigmask, 0, 8);
  prepare_function();
  // Dumpability belongs to the memory it shares with PID 1 until exec, and the change of
  // credentials above set it to fs.suid_dumpable: PID 1 must stay not dumpable.
  sys::call(__NR_prctl, PR_SET_DUMPABLE, 0);
  park();
  exec_function();
}

#if defined(__x86_64__)
// The function's process shares PID 1's memory until its execve (CLONE_VM, without CLONE_VFORK:
// a vfork parent waits in uninterruptible sleep, and a parked sandbox would count in the load
// average). No copy of init's page tables is made at the fork nor torn down at the exec: 0.3 ms of
// host CPU per sandbox here (dup_mmap, exit_mmap). Until then the two touch disjoint memory: each
// its own stack, and no global that the other writes.
alignas(16) char function_stack[32 * 1024];

// long fnexec_init_clone_vm(unsigned long flags, void* stack_top, void (*fn)()): clone, and in the
// child, on its own stack, fn(); the child cannot return into init's frames.
extern "C" long fnexec_init_clone_vm(unsigned long, void*, void (*)());
__asm__(
    ".text\n"
    ".type fnexec_init_clone_vm,@function\n"
    "fnexec_init_clone_vm:\n"
    "  mov %rdx, %r9\n"  // r9: kept by syscall
    "  xor %edx, %edx\n"
    "  xor %r10d, %r10d\n"
    "  xor %r8d, %r8d\n"
    "  mov $56, %eax\n"  // __NR_clone
    "  syscall\n"
    "  test %rax, %rax\n"
    "  jnz 1f\n"
    "  xor %ebp, %ebp\n"
    "  call *%r9\n"
    "  hlt\n"
    "1:\n"
    "  ret\n"
    ".size fnexec_init_clone_vm, .-fnexec_init_clone_vm\n");

long start_function() {
  return fnexec_init_clone_vm(CLONE_VM | kSIGCHLD, function_stack + sizeof function_stack, function_main);
}
#else
// Elsewhere a plain fork.
long start_function() {
  long pid = sys::call(__NR_clone, kSIGCHLD, 0, 0, 0, 0);
  if (pid == 0) function_main();
  return pid;
}
#endif

// PID 1 from here on: the function is forked now and parks itself; init keeps neither the control
// socket (so the function's exit reads as EOF there) nor the stdio pipes (so the function's exit is
// EOF on stdout).
[[noreturn]] void run_init() {
  // Blocked before the fork so no signal is lost between fork and sigtimedwait; a blocked signal
  // sent to a pid-namespace init is queued rather than ignored, even without a handler.
  uint64_t waited = sigbit(kSIGCHLD);
  for (int sig : kForwarded) waited |= sigbit(sig);
  sys::call(__NR_rt_sigprocmask, kSigBlock, &waited, &function_sigmask, 8);

  long function = start_function();
  if (function < 0) fail(step_fork, sys::err(function));
  sys::call(__NR_close, plan->control_fd);
  sys::call(__NR_close, root_fd);
  // Pipes or fnexec's own stdio alike: init keeps no copy, so a reader of the function's stdout sees
  // EOF when the function's processes are gone, not when PID 1's namespaces are torn down.
  for (int fd = 0; fd < 3; ++fd) sys::call(__NR_close, fd);

  for (;;) {
    unsigned char info[128];
    long sig = sys::call(__NR_rt_sigtimedwait, &waited, info, 0, 8);
    if (sig < 0) continue;  // EINTR
    if (sig != kSIGCHLD) {
      sys::call(__NR_kill, function, sig);
      continue;
    }
    // One SIGCHLD may stand for several exits: reap until nothing is left to reap.
    for (;;) {
      int status = 0;
      long pid = sys::call(__NR_wait4, -1, &status, WNOHANG, 0);
      if (pid <= 0) break;
      if (pid == function) {
        // Whatever the function left running dies and is reaped before the report, so the status
        // also means its stdout is at EOF and nothing of it runs: the caller may answer at once and
        // leave the namespaces' teardown (PID 1's exit) to happen after. Every process here is in
        // init's user namespace or below it, where init holds CAP_KILL.
        sys::call(__NR_kill, -1, kSIGKILL);
        for (;;) {
          long reaped = sys::call(__NR_wait4, -1, 0, 0, 0);
          if (reaped <= 0 && sys::err(reaped) != kEINTR) break;  // ECHILD: none left
        }
        retrying(__NR_write, plan->status_fd, &status, sizeof status);
        // What is left, the teardown of the namespaces at exit, waits for nobody.
        if (plan->flags & kRenice) sys::call(__NR_setpriority, kPrioProcess, 0, 19);
        exit_now(0);
      }
    }
  }
}

long parse_fd(const char* text) {
  long fd = 0;
  for (const char* p = text; *p; ++p) {
    if (*p < '0' || *p > '9' || fd > 1000000) return -1;
    fd = fd * 10 + (*p - '0');
  }
  return *text ? fd : -1;
}

// argv: fnexec-init PLAN_FD ERROR_FD. The error fd comes on the command line too, so that a plan
// that cannot be read is still reported.
void load_plan(int argc, char** argv) {
  if (argc < 3) exit_now(125);
  long error_fd = parse_fd(argv[2]);
  auto failed = [error_fd](int err) {
    ChildFailure f;
    f.step = step_start_init;
    f.err = err;
    if (error_fd >= 0) retrying(__NR_write, error_fd, &f, sizeof f);
    exit_now(125);
  };
  long fd = parse_fd(argv[1]);
  if (fd < 0) failed(kEINVAL);
  long size = sys::call(__NR_lseek, fd, 0, 2 /* SEEK_END */);
  if (size <= 0) failed(size < 0 ? sys::err(size) : kEINVAL);
  long map = sys::call(__NR_mmap, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (sys::err(map)) failed(sys::err(map));
  sys::call(__NR_close, fd);
  base = reinterpret_cast<char*>(map);
  plan = decode(base, static_cast<uint64_t>(size));
  if (!plan) failed(kEINVAL);
}

}  // namespace

[[noreturn]] void init_main(long* stack) {
  auto argc = static_cast<int>(stack[0]);
  auto** argv = reinterpret_cast<char**>(stack + 1);
  load_plan(argc, argv);
  // /proc/1/cmdline then reads "fnexec-init" and nothing else.
  for (int i = 1; i < argc; ++i)
    for (char* p = argv[i]; *p; ++p) *p = 0;

  // The clone child came from a copy of fnexec's signal mask and handlers: start clean. An ignored
  // signal stays ignored across exec, and a daemon ignores SIGPIPE: the function gets the default
  // back, so `producer | head` inside it ends as it would anywhere else.
  uint64_t none = 0;
  sys::call(__NR_rt_sigprocmask, kSigSetMask, &none, 0, 8);
  KernelSigaction dfl{};
  sys::call(__NR_rt_sigaction, kSIGPIPE, &dfl, 0, 8);
  // A killed fnexec must not leave a running sandbox behind. If it died before this line, the
  // control socket is already at EOF and the wait for go below ends the sandbox.
  if (plan->flags & kDieWithParent)
    if (int e = sys::err(sys::call(__NR_prctl, PR_SET_PDEATHSIG, kSIGKILL)); e != 0) fail(step_parent_death, e);
  // Not dumpable: a function running as root cannot ptrace PID 1 or open its /proc entries.
  sys::call(__NR_prctl, PR_SET_DUMPABLE, 0);
  sys::call(__NR_prctl, PR_SET_NAME, "fnexec-init");

  for (int i = 0; i < 3; ++i) {
    // The launcher made these fds >= 3, so no dup onto 0..2 overwrites a source still to come.
    int from = plan->stdio_fds[i];
    if (from < 0) continue;
    if (long r = sys::call(__NR_dup3, from, i, 0); r != i) fail(step_stdio, r < 0 ? sys::err(r) : kEINVAL);
  }
  for (int fd : plan->stdio_fds)
    if (fd >= 0) sys::call(__NR_close, fd);

  // Modes below are exact (device nodes 0666, /dev/shm 1777); the function gets 022 back.
  sys::call(__NR_umask, 0);
  auto* ops = reinterpret_cast<const Op*>(base + plan->ops);
  for (uint32_t i = 0; i < plan->n_ops; ++i) {
    if (int e = run_op(ops[i]); e != 0) fail(static_cast<int32_t>(i), e, failure_detail);
    // A detached tree is attached once; the mount stays, its fd is of no further use.
    if (ops[i].kind == OpKind::attach) sys::call(__NR_close, ops[i].fd);
  }
  if (int e = sys::err(sys::call(__NR_sethostname, s(plan->hostname), plan->hostname_len)); e != 0)
    fail(step_hostname, e);
  // A pool builds sandboxes at a low priority so that refills yield the CPU to invocations; the
  // function gets the daemon's own priority back. Lowering nice needs CAP_SYS_NICE in the host's
  // user namespace, so this comes before the user namespace is joined.
  if (plan->flags & kRenice)
    if (int e = sys::err(sys::call(__NR_setpriority, kPrioProcess, 0, plan->nice)); e != 0)
      fail(step_priority, e);

  if (plan->userns_fd >= 0) {
    // Joined last: the mounts above needed host root, the processes below run as the mapped root.
    if (int e = sys::err(sys::call(__NR_setns, plan->userns_fd, CLONE_NEWUSER)); e != 0) fail(step_userns, e);
    sys::call(__NR_close, plan->userns_fd);
    int e = sys::err(sys::call(__NR_setresgid, 0, 0, 0));
    if (!e) e = sys::err(sys::call(__NR_setresuid, 0, 0, 0));
    if (!e) e = sys::err(sys::call(__NR_setgroups, 0, 0));
    if (e) fail(step_userns, e);
    // A change of credentials clears the parent-death signal.
    if (plan->flags & kDieWithParent) sys::call(__NR_prctl, PR_SET_PDEATHSIG, kSIGKILL);
  }

  if (plan->flags & kWaitAttach) {
    // cgroup v1: the parent attaches this process to the sandbox's cgroups after clone; a cgroup
    // namespace made before that would be rooted at fnexec's own cgroup.
    char attached = 0;
    if (retrying(__NR_read, plan->control_fd, &attached, 1) != 1) exit_now(0);  // abandoned
    if (int e = sys::err(sys::call(__NR_unshare, CLONE_NEWCGROUP)); e != 0) fail(step_cgroupns, e);
  }

  if (!(plan->flags & kInit)) {
    prepare_function();
    park();
    exec_function();
  }
  if (int e = drop_bounding_capabilities(plan->bounding); e != 0)
    fail(step_init_privileges, e, "drop bounding set");
  run_init();
}

}  // namespace fnexec::runtime

extern "C" [[noreturn]] void fnexec_init_start(long* stack) {
  fnexec::runtime::init_main(stack);
}

// The kernel starts us here with argc, argv and envp on the stack.
#if defined(__x86_64__)
__asm__(
    ".text\n.globl _start\n_start:\n"
    "  xor %ebp, %ebp\n"
    "  mov %rsp, %rdi\n"
    "  and $-16, %rsp\n"
    "  call fnexec_init_start\n"
    "  hlt\n");
#elif defined(__aarch64__)
__asm__(
    ".text\n.globl _start\n_start:\n"
    "  mov x29, #0\n"
    "  mov x30, #0\n"
    "  mov x0, sp\n"
    "  bl fnexec_init_start\n"
    "  brk #0\n");
#endif
