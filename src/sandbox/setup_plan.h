// The child's setup, precomputed by the parent: every string, array and fd the child needs, so
// the child side of clone runs a linear list of syscalls without allocating (sandbox-internal).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "sandbox/privileges.h"
#include "sandbox/spec.h"
#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::sandbox::detail {

enum class OpKind : uint8_t {
  mount,    // mount(source, path, fstype, flags, data)
  bind_ro,  // bind path onto itself, then remount it read-only (skipped when absent)
  mask,     // directory: read-only empty tmpfs; file: /dev/null bound over it (skipped when absent)
  mkdir,    // EEXIST is fine; chowned to (uid, gid) when flags is kChownNew and it was created
  mknod,    // character device
  symlink,  // source -> path
  touch,    // create an empty file to bind over (EEXIST is fine)
  chown,    // path to (uid, gid)
  chdir,
  attach,      // move_mount the detached tree fd onto path
  pivot_root,  // pivot_root(path, path) + detach the old root (path: the new root, made cwd)
  remount_ro,  // remount the mount at path read-only
};

struct SetupOp {
  OpKind kind;
  const char* path = nullptr;
  const char* source = nullptr;
  const char* fstype = nullptr;
  unsigned long flags = 0;
  const char* data = nullptr;
  unsigned mode = 0;
  dev_t dev = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  int fd = -1;
};

inline constexpr unsigned long kChownNew = 1;

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
};

// What the child writes to the error pipe, once, before it exits.
struct ChildFailure {
  int32_t step = 0;  // op index, or a SpecialStep
  int32_t err = 0;
  char detail[48] = {};  // static step name from apply_privileges, when there is one
};

struct ChildPlan {
  std::deque<std::string> strings;  // owns every const char* below; deque keeps them in place
  const char* keep(std::string s) { return strings.emplace_back(std::move(s)).c_str(); }

  std::vector<SetupOp> ops;
  const char* hostname = nullptr;
  size_t hostname_len = 0;
  int userns_fd = -1;  // join after the mounts: the mounts are made as host root

  int control_fd = -1;         // our end of the control socket: one byte means go, EOF means abandon
  int control_parent_fd = -1;  // the parent's end, closed first so the parent's death reads as EOF
  int error_fd = -1;           // write end, O_CLOEXEC: a successful exec closes it
  int status_fd = -1;          // write end: init reports the function's raw wait status
  bool init = true;
  bool die_with_parent = true;
  // The cgroup namespace is made after go, once the parent has attached the child to its cgroup
  // (cgroup v1, no CLONE_INTO_CGROUP): a namespace made at clone would be rooted at fnexec's cgroup.
  bool unshare_cgroupns_after_go = false;

  const char* cwd = nullptr;
  std::vector<const char*> exec_candidates;  // entrypoint paths to try in order (PATH lookup done here)
  std::vector<char*> argv;                   // nullptr-terminated
  std::vector<char*> envp;                   // nullptr-terminated
  Privileges privileges;

  // This process's argv and environ memory, blanked by the init (its copy of them) before it runs.
  char* own_args = nullptr;
  size_t own_args_len = 0;
  char* own_env = nullptr;
  size_t own_env_len = 0;
};

// Appends the mount sequence (scratch tmpfs, overlay, pivot_root, /proc, /dev, /sys, masks,
// volumes, tmpfs, read-only root, workdir) to plan.ops. Detached mounts the child attaches
// (id-mapped layers, volumes) are opened here and kept in fds until the clone is done.
Result<> plan_rootfs(const SandboxSpec& spec, int userns_fd, ChildPlan& plan, std::vector<UniqueFd>& fds);

// "mount overlay on /x", for the parent's error message about a failed op.
std::string describe(const SetupOp& op);

// Runs the setup and never returns: execs the function, or reports a failure and exits.
[[noreturn]] void child_main(const ChildPlan& plan) noexcept;

}  // namespace fnexec::sandbox::detail
