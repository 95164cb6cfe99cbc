// What fnexec hands its sandbox init, and what the init hands back.
//
// fnexec clones the sandbox's namespaces and execs the init at once (runtime/init_main.cc, a
// static binary without a C library, embedded in fnexec and run from a sealed memfd). The init
// finds its whole setup in a plan: one flat block in a memfd, built by the parent
// (src/sandbox/init_plan.cc). Strings and arrays are offsets from the start of the block; decode()
// turns the arrays the init passes to execve into pointers in place. Failures come back on the
// error pipe as one ChildFailure.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace fnexec::runtime::wire {

inline constexpr uint32_t kMagic = 0x69786e66;  // "fnxi"
inline constexpr uint32_t kVersion = 2;

using Off = uint64_t;  // from the start of the block; 0 is a null pointer

enum class OpKind : uint8_t {
  mount,    // mount(source, path, fstype, flags, data); after pivot_root onto the resolved directory
  bind_ro,  // bind path onto itself read-only, flags' MS_NOSUID/NODEV/NOEXEC too (skipped when absent)
  mask,     // directory: read-only empty tmpfs; file: /dev/null bound over it (skipped when absent)
  mkdir,    // EEXIST is fine; chowned to (uid, gid) when flags is kChownNew and it was created
  mknod,    // device node (character unless mode says); chowned like mkdir with kChownNew
  symlink,  // source -> path
  touch,    // create an empty file to bind over (EEXIST is fine)
  chown,    // path to (uid, gid)
  chdir,
  attach,      // move_mount the detached tree fd onto path
  pivot_root,  // pivot_root(path, path) + detach the old root (path: the new root, made cwd)
  remount_ro,  // remount the mount at path read-only
};

// How the init finds Op::path. After pivot_root every path is resolved inside the new root
// (openat2 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) and the op acts on the resolved fd, so an
// image's symlink can neither leave the root nor go through /proc/self/fd to a host tree's fd.
enum class Target : uint8_t {
  host,   // before pivot_root: a host path fnexec chose (its scratch tmpfs), used as given
  fixed,  // fnexec's own place in the rootfs (/proc, /dev, /sys and below): no symlink on the way
  user,   // a path the user or the image chose (volume, tmpfs, workdir, --device): symlinks resolve
          // inside the root, but never into /proc, /sys or /dev unless the path is written there
};

inline constexpr uint64_t kChownNew = 1;

struct Op {
  OpKind kind;
  Target target = Target::host;
  uint8_t pad[2] = {};
  uint32_t mode = 0;
  Off path = 0, source = 0, fstype = 0, data = 0;
  uint64_t flags = 0;
  uint64_t dev = 0;
  uint32_t uid = 0, gid = 0;
  int32_t fd = -1;
  uint32_t pad2 = 0;
};

struct Rlimit {
  int resource;  // RLIMIT_*
  uint64_t soft;
  uint64_t hard;
};

// Header::flags
inline constexpr uint32_t kInit = 1;           // fork the function and stay PID 1; else exec it directly
inline constexpr uint32_t kWaitAttach = 2;     // wait for 'a' on the control socket, then make the
                                               // cgroup namespace (cgroup v1)
inline constexpr uint32_t kDieWithParent = 4;  // PR_SET_PDEATHSIG SIGKILL
inline constexpr uint32_t kSeccomp = 8;        // load the filter before exec
inline constexpr uint32_t kRenice = 16;        // set up at the launcher's (low) priority, then take
                                               // Header::nice for the function; exit at nice 19

struct Header {
  uint32_t magic = kMagic, version = kVersion;
  uint64_t size = 0;  // of the whole block
  uint32_t flags = 0;
  int32_t control_fd = -1, error_fd = -1, status_fd = -1, userns_fd = -1;
  int32_t stdio_fds[3] = {-1, -1, -1};  // dup'ed onto 0, 1, 2 when set
  uint32_t n_ops = 0;
  Off ops = 0;  // Op[n_ops]
  Off hostname = 0;
  uint64_t hostname_len = 0;
  Off cwd = 0;
  Off candidates = 0;  // Off[], 0-terminated: entrypoint paths to try in order
  Off argv = 0;        // Off[], 0-terminated; decode() makes it a char*[]
  Off envp = 0;        // Off[], 0-terminated; decode() makes it a char*[]
  uint32_t uid = 0, gid = 0;
  uint32_t n_groups = 0, n_filter = 0, n_rlimits = 0, pad = 0;
  Off groups = 0;   // uint32_t[n_groups]
  Off filter = 0;   // struct sock_filter[n_filter] (8 bytes each)
  Off rlimits = 0;  // Rlimit[n_rlimits]
  uint64_t bounding = 0, effective = 0;
  int32_t nice = 0;  // with kRenice
  uint32_t pad2 = 0;
};

static_assert(sizeof(void*) == sizeof(Off), "the init's arrays are decoded in place: 64-bit only");

// Validates the block and turns the 0-terminated offset arrays into pointer arrays, in place.
// nullptr when the block is not a plan of this version or an offset points outside it.
inline Header* decode(char* base, uint64_t size) noexcept {
  if (size < sizeof(Header)) return nullptr;
  auto* h = reinterpret_cast<Header*>(base);
  if (h->magic != kMagic || h->version != kVersion || h->size != size) return nullptr;
  Off* arrays[] = {&h->candidates, &h->argv, &h->envp};
  for (Off* slot : arrays) {
    if (*slot == 0 || *slot % sizeof(Off) != 0 || *slot >= size) return nullptr;
    auto* arr = reinterpret_cast<Off*>(base + *slot);
    for (;; ++arr) {
      if (reinterpret_cast<char*>(arr + 1) > base + size) return nullptr;
      if (*arr == 0) break;
      if (*arr >= size) return nullptr;
      *arr = reinterpret_cast<Off>(base + *arr);
    }
  }
  return h;
}

inline const char* str(const char* base, Off o) noexcept {
  return o ? base + o : nullptr;
}

// Steps outside the op list (negative so they never collide with an op index).
enum SpecialStep : int32_t {
  step_hostname = -1,
  step_userns = -2,
  step_wait_go = -3,
  step_workdir = -4,
  step_privileges = -5,
  step_exec = -6,
  step_fork = -7,
  step_init_privileges = -8,
  step_parent_death = -9,
  step_cgroupns = -10,
  step_stdio = -11,
  step_start_init = -12,  // exec of the init itself, or a plan it could not read
  step_priority = -13,
};

// What the init (or the clone child before it) writes to the error pipe, once, before it exits.
struct ChildFailure {
  int32_t step = 0;  // op index, or a SpecialStep
  int32_t err = 0;
  // A static step name from apply_privileges, or why a target was refused; empty when errno says it.
  char detail[48] = {};
};

}  // namespace fnexec::runtime::wire
