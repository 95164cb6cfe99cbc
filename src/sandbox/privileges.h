// What a sandboxed process may do: identity, capabilities, no_new_privs, seccomp, rlimits.
// Prepared in the parent (libcap and libseccomp allocate), applied in the child with only
// async-signal-safe syscalls: the child side of a clone never allocates.
#pragma once

#include <linux/filter.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/protocol.h"
#include "util/error.h"

namespace fnexec::sandbox {

enum class SeccompMode { default_profile, unconfined, file, inline_json };

using Rlimit = runtime::wire::Rlimit;  // {RLIMIT_*, soft, hard}

// What the user asked for (CLI flags, function spec).
struct PrivilegeSpec {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> supplementary_gids;
  std::vector<std::string> cap_add;   // "NET_ADMIN", "CAP_NET_ADMIN" or "ALL" (only what fnexec itself holds)
  std::vector<std::string> cap_drop;  // same forms
  SeccompMode seccomp = SeccompMode::default_profile;
  std::string seccomp_file;           // with SeccompMode::file: an OCI/Docker JSON seccomp profile
  std::string seccomp_json;           // with SeccompMode::inline_json: the profile itself
  std::vector<std::string> ulimits;   // "nofile=1024:2048", "nproc=512", "core=0"
};

// Ready to apply: plain data, no pointers into library-owned memory.
struct Privileges {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  uint64_t bounding = 0;     // capability bits kept in the bounding set
  uint64_t effective = 0;    // == permitted == inheritable; ambient too when uid != 0
  bool seccomp_enabled = true;
  std::vector<sock_filter> seccomp_filter;  // exported BPF, loaded with prctl in the child
  std::vector<Rlimit> rlimits;              // NOFILE 1024 (or lower), CORE 0 by default, plus --ulimit;
                                            // NPROC is inherited unless --ulimit sets it (see rlimits.cc)
};

// Parent side: parses names and profiles, builds the seccomp BPF. Errors name the bad flag or file.
Result<Privileges> prepare_privileges(const PrivilegeSpec& spec);

// Child side, just before exec, in this order: rlimits, bounding set, keepcaps + setgroups/setresgid/
// setresuid, capset (+ambient), no_new_privs, seccomp. Async-signal-safe. Returns 0, or an errno
// and sets *failed_step to a static string naming the step ("seccomp", "setresuid", ...).
int apply_privileges(const Privileges& p, const char** failed_step) noexcept;

// Drops every capability not in p.bounding from the bounding set only (for the sandbox's init,
// which must keep running as root inside to reap and signal). Async-signal-safe.
int drop_bounding_set(const Privileges& p, const char** failed_step) noexcept;

}  // namespace fnexec::sandbox
