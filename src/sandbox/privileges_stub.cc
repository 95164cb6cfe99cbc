// TEMPORARY stand-in for privileges.cc (branch `privileges`) so the launcher builds and runs before
// that branch is merged; delete this file when it is. Only the identity switch is done here.
#include <grp.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>

#include "sandbox/privileges.h"

namespace fnexec::sandbox {

uint64_t default_capabilities() { return 0; }

Result<Privileges> prepare_privileges(const PrivilegeSpec& spec) {
  Privileges p;
  p.uid = spec.uid;
  p.gid = spec.gid;
  p.groups = spec.supplementary_gids;
  p.seccomp_enabled = false;
  return p;
}

int apply_privileges(const Privileges& p, const char** failed_step) noexcept {
  if (setgroups(p.groups.size(), p.groups.data()) != 0) {
    *failed_step = "setgroups";
    return errno;
  }
  if (setresgid(p.gid, p.gid, p.gid) != 0) {
    *failed_step = "setresgid";
    return errno;
  }
  if (setresuid(p.uid, p.uid, p.uid) != 0) {
    *failed_step = "setresuid";
    return errno;
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    *failed_step = "no_new_privs";
    return errno;
  }
  return 0;
}

int drop_bounding_set(const Privileges&, const char**) noexcept { return 0; }

}  // namespace fnexec::sandbox
