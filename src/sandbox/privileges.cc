#include "sandbox/privileges.h"

#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox/capabilities.h"
#include "sandbox/rlimits.h"
#include "sandbox/seccomp.h"
#include "runtime/privileges.h"

namespace fnexec::sandbox {

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
    case SeccompMode::inline_json:
      p.seccomp_filter =
          FNEXEC_TRY(seccomp_filter_from_profile(spec.seccomp_json, "seccomp_profile (inline)", p.bounding));
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

namespace {

runtime::PrivilegeView view_of(const Privileges& p) {
  runtime::PrivilegeView v;
  v.uid = p.uid;
  v.gid = p.gid;
  v.groups = p.groups.data();
  v.n_groups = p.groups.size();
  v.bounding = p.bounding;
  v.effective = p.effective;
  v.seccomp = p.seccomp_enabled;
  v.filter = p.seccomp_filter.data();
  v.n_filter = p.seccomp_filter.size();
  v.rlimits = p.rlimits.data();
  v.n_rlimits = p.rlimits.size();
  return v;
}

}  // namespace

int apply_privileges(const Privileges& p, const char** failed_step) noexcept {
  return runtime::apply_privileges(view_of(p), failed_step);
}

int drop_bounding_set(const Privileges& p, const char** failed_step) noexcept {
  if (int err = runtime::drop_bounding_capabilities(p.bounding); err != 0) {
    if (failed_step != nullptr) *failed_step = "drop bounding set";
    return err;
  }
  return 0;
}

}  // namespace fnexec::sandbox
