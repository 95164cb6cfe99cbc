#include "runtime/privileges.h"

#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/prctl.h>
#include <linux/seccomp.h>

#include "runtime/sys.h"

namespace fnexec::runtime {

namespace {

constexpr uint64_t bit(int cap) {
  return uint64_t{1} << cap;
}

int prctl(long option, long a = 0, long b = 0, long c = 0, long d = 0) noexcept {
  return sys::err(sys::call(__NR_prctl, option, a, b, c, d));
}

int set_capabilities(uint64_t caps, bool ambient, const char** failed_step) noexcept {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; ++i) {
    auto word = static_cast<uint32_t>(caps >> (32 * i));
    data[i].effective = data[i].permitted = data[i].inheritable = word;
  }
  // Ambient capabilities inherited from the launcher would survive exec: start from none.
  if (int e = prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL); e != 0 && e != 22 /* EINVAL */) {
    *failed_step = "clear ambient capabilities";
    return e;
  }
  if (int e = sys::err(sys::call(__NR_capset, &header, data)); e != 0) {
    *failed_step = "capset";
    return e;
  }
  if (!ambient) return 0;
  for (int cap = 0; cap < 64; ++cap) {
    if (!(caps & bit(cap))) continue;
    if (int e = prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap); e != 0) {
      *failed_step = "raise ambient capability";
      return e;
    }
  }
  return 0;
}

}  // namespace

int drop_bounding_capabilities(uint64_t keep) noexcept {
  for (int cap = 0; cap < 64; ++cap) {
    if (keep & bit(cap)) continue;
    // Reading first skips a credential copy (about 2 us each, measured) for every capability already
    // gone, as when the sandbox's init dropped them before forking the function. EINVAL past
    // cap_last_cap: the end of what this kernel has.
    long present = sys::call(__NR_prctl, PR_CAPBSET_READ, cap);
    if (present < 0) return sys::err(present) == 22 /* EINVAL */ ? 0 : sys::err(present);
    if (present == 1)
      if (int e = prctl(PR_CAPBSET_DROP, cap); e != 0) return e;
  }
  return 0;
}

int apply_privileges(const PrivilegeView& p, const char** failed_step) noexcept {
  static const char* unused_step;
  if (failed_step == nullptr) failed_step = &unused_step;
  auto failed = [&](const char* step, int e) {
    *failed_step = step;
    return e;
  };
  for (size_t i = 0; i < p.n_rlimits; ++i) {
    uint64_t value[2] = {p.rlimits[i].soft, p.rlimits[i].hard};
    if (int e = sys::err(sys::call(__NR_prlimit64, 0, p.rlimits[i].resource, value, 0)); e != 0)
      return failed("setrlimit", e);
  }
  // Dropping from the bounding set needs CAP_SETPCAP, so it comes while still fully privileged.
  if (int e = drop_bounding_capabilities(p.bounding); e != 0) return failed("drop bounding set", e);
  // Without keepcaps, leaving uid 0 would clear the permitted set before capset can pick from it.
  if (int e = prctl(PR_SET_KEEPCAPS, 1); e != 0) return failed("set keepcaps", e);
  // Raw syscalls change only this thread's credentials, with none of glibc's all-threads signalling.
  if (int e = sys::err(sys::call(__NR_setgroups, p.n_groups, p.groups)); e != 0) return failed("setgroups", e);
  if (int e = sys::err(sys::call(__NR_setresgid, p.gid, p.gid, p.gid)); e != 0) return failed("setresgid", e);
  if (int e = sys::err(sys::call(__NR_setresuid, p.uid, p.uid, p.uid)); e != 0) return failed("setresuid", e);
  if (int e = set_capabilities(p.effective, p.uid != 0, failed_step); e != 0) return e;
  // Required by an unprivileged seccomp filter load, and stops setuid binaries regaining privileges.
  if (int e = prctl(PR_SET_NO_NEW_PRIVS, 1); e != 0) return failed("set no_new_privs", e);
  // Last, so no earlier step runs under the filter.
  if (p.seccomp) {
    // The kernel copies the program and never writes through the pointer.
    sock_fprog prog{static_cast<unsigned short>(p.n_filter), const_cast<sock_filter*>(p.filter)};
    if (int e = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, reinterpret_cast<long>(&prog)); e != 0)
      return failed("seccomp", e);
  }
  return 0;
}

}  // namespace fnexec::runtime
