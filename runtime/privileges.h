// Applying a sandbox's privileges, just before the function's exec: rlimits, bounding set,
// identity, capabilities, no_new_privs, seccomp. Raw system calls only, no C library: this runs in
// the sandbox init (built with -nostdlib) and, for tests, in libfnexec. Prepared by
// src/sandbox/privileges.h (libcap and libseccomp there, in the parent).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "runtime/protocol.h"

struct sock_filter;

namespace fnexec::runtime {

struct PrivilegeView {
  uint32_t uid = 0, gid = 0;
  const uint32_t* groups = nullptr;
  size_t n_groups = 0;
  uint64_t bounding = 0;   // capability bits kept in the bounding set
  uint64_t effective = 0;  // == permitted == inheritable; ambient too when uid != 0
  bool seccomp = false;
  const sock_filter* filter = nullptr;
  size_t n_filter = 0;
  const wire::Rlimit* rlimits = nullptr;
  size_t n_rlimits = 0;
};

// In order: rlimits, bounding set, keepcaps + setgroups/setresgid/setresuid, capset (+ambient),
// no_new_privs, seccomp. Returns 0, or an errno and sets *failed_step to a static string naming the
// step ("seccomp", "setresuid", ...).
int apply_privileges(const PrivilegeView& p, const char** failed_step) noexcept;

// Removes every capability not in keep from the bounding set; needs CAP_SETPCAP. 0 or an errno.
int drop_bounding_capabilities(uint64_t keep) noexcept;

}  // namespace fnexec::runtime
