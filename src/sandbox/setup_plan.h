// The sandbox's setup, precomputed by the parent: every string, array and fd the sandbox init
// needs (sandbox-internal). encode_for_init() flattens it for the init.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "runtime/protocol.h"
#include "sandbox/privileges.h"
#include "sandbox/spec.h"
#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::sandbox::detail {

using runtime::wire::OpKind;
using runtime::wire::Target;
using runtime::wire::kChownNew;

struct SetupOp {
  OpKind kind;
  Target target = Target::host;
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

// Steps outside the op list, and what the init writes to the error pipe: runtime/protocol.h.
using enum runtime::wire::SpecialStep;
using runtime::wire::ChildFailure;

struct ChildPlan {
  std::deque<std::string> strings;  // owns every const char* below; deque keeps them in place
  const char* keep(std::string s) { return strings.emplace_back(std::move(s)).c_str(); }

  std::vector<SetupOp> ops;
  const char* hostname = nullptr;
  size_t hostname_len = 0;
  int userns_fd = -1;  // join after the mounts: the mounts are made as host root

  // Our end of the control socket. Parent to child: 'a' once attached to the cgroup (when
  // wait_attach), then one byte for go; EOF means abandon. Child to parent: 'r' once parked.
  int control_fd = -1;
  int control_parent_fd = -1;  // the parent's end, closed first so the parent's death reads as EOF
  int error_fd = -1;           // write end: the function's successful exec closes it
  int status_fd = -1;          // write end: init reports the function's raw wait status
  int stdio_fds[3] = {-1, -1, -1};
  // dup'ed onto 0, 1, 2 when set (Stdio::pipes)
  // Every fd above 2 the init uses, ascending; the clone child closes all others before it execs
  // the init: a sibling sandbox's pipes and sockets must not stay open in a parked sandbox.
  std::vector<int> keep_fds;
  bool init = true;
  bool die_with_parent = true;
  std::optional<int> function_nice;
  // The cgroup namespace is made once the parent has attached the child to its cgroup (cgroup v1,
  // no CLONE_INTO_CGROUP): a namespace made at clone would be rooted at fnexec's cgroup.
  bool wait_attach = false;

  const char* cwd = nullptr;
  std::vector<const char*> exec_candidates;  // entrypoint paths to try in order (PATH lookup done here)
  std::vector<char*> argv;                   // nullptr-terminated
  std::vector<char*> envp;                   // nullptr-terminated
  Privileges privileges;
};

// Appends the mount sequence (scratch tmpfs, overlay, pivot_root, /proc, /dev, /sys, masks,
// volumes, tmpfs, read-only root, workdir) to plan.ops. Detached mounts the child attaches
// (id-mapped layers, volumes) are opened here and kept in fds until the clone is done.
Result<> plan_rootfs(const SandboxSpec& spec, int userns_fd, ChildPlan& plan, std::vector<UniqueFd>& fds);

// "mount overlay on /x", for the parent's error message about a failed op.
std::string describe(const SetupOp& op);

// The plan in the form the sandbox init reads (runtime/protocol.h): one flat block.
std::string encode_for_init(const ChildPlan& plan);

}  // namespace fnexec::sandbox::detail
