#include "sandbox/privileges.h"

#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox/capabilities.h"
#include "sandbox/rlimits.h"
#include "sandbox/seccomp.h"

namespace fnexec::sandbox {

uint64_t default_capabilities() {
  uint64_t set = 0;
  for (int cap : {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_NET_BIND_SERVICE,
                  CAP_SETFCAP, CAP_SETGID, CAP_SETPCAP, CAP_SETUID}) {
    set |= uint64_t{1} << cap;
  }
  return set;
}

Result<Privileges> prepare_privileges(const PrivilegeSpec& spec) {
  Privileges p;
  p.uid = spec.uid;
  p.gid = spec.gid;
  p.groups = spec.supplementary_gids;
  auto caps = FNEXEC_TRY(
      capability_sets(default_capabilities(), spec.cap_add, spec.cap_drop, spec.uid, held_capabilities()));
  p.bounding = caps.bounding;
  p.effective = caps.effective;
  switch (spec.seccomp) {
    case SeccompMode::default_profile:
      p.seccomp_filter = FNEXEC_TRY(default_seccomp_filter());
      break;
    case SeccompMode::file:
      if (spec.seccomp_file.empty())
        return fail(ErrorKind::invalid, "use --seccomp", {},
                    "expected default, unconfined or a profile file");
      p.seccomp_filter = FNEXEC_TRY(seccomp_filter_from_file(spec.seccomp_file, p.bounding));
      break;
    case SeccompMode::unconfined:
      p.seccomp_enabled = false;
      break;
  }
  // Raising a hard rlimit needs CAP_SYS_RESOURCE in the launcher (root here may lack it).
  bool may_raise = held_capabilities() & (uint64_t{1} << CAP_SYS_RESOURCE);
  p.rlimits = FNEXEC_TRY(sandbox_rlimits(spec.ulimits, may_raise));
  return p;
}

int apply_privileges(const Privileges& p, const char** failed_step) noexcept {
  static const char* unused_step;
  if (failed_step == nullptr) failed_step = &unused_step;
  auto failed = [&](const char* step) {
    *failed_step = step;
    return errno;
  };
  if (int err = apply_rlimits(p.rlimits.data(), p.rlimits.size()); err != 0) {
    *failed_step = "setrlimit";
    return err;
  }
  // Dropping from the bounding set needs CAP_SETPCAP, so it comes while still fully privileged.
  if (int err = drop_bounding_capabilities(p.bounding); err != 0) {
    *failed_step = "drop bounding set";
    return err;
  }
  // Without keepcaps, leaving uid 0 would clear the permitted set before capset can pick from it.
  if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) return failed("set keepcaps");
  // Raw syscalls change only this thread's credentials, with none of glibc's all-threads signalling.
  if (::syscall(SYS_setgroups, p.groups.size(), p.groups.data()) != 0) return failed("setgroups");
  if (::syscall(SYS_setresgid, p.gid, p.gid, p.gid) != 0) return failed("setresgid");
  if (::syscall(SYS_setresuid, p.uid, p.uid, p.uid) != 0) return failed("setresuid");
  if (int err = set_capabilities(p.effective, p.uid != 0, failed_step); err != 0) return err;
  // Required by an unprivileged seccomp filter load, and stops setuid binaries regaining privileges.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return failed("set no_new_privs");
  // Last, so no earlier step runs under the filter.
  if (p.seccomp_enabled) {
    if (int err = load_seccomp_filter(p.seccomp_filter.data(), p.seccomp_filter.size()); err != 0) {
      *failed_step = "seccomp";
      return err;
    }
  }
  return 0;
}

int drop_bounding_set(const Privileges& p, const char** failed_step) noexcept {
  if (int err = drop_bounding_capabilities(p.bounding); err != 0) {
    if (failed_step != nullptr) *failed_step = "drop bounding set";
    return err;
  }
  return 0;
}

}  // namespace fnexec::sandbox
