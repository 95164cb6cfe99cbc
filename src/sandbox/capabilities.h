// Capabilities: names to bits in the parent (libcap), the bounding set and capset in the child
// (raw syscalls only, async-signal-safe).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace fnexec::sandbox {

// Every capability the running kernel knows (bits 0..cap_last_cap).
uint64_t all_capabilities();

// "NET_ADMIN", "CAP_NET_ADMIN", "net_admin" → its number. "ALL" is not a single capability and is
// refused here; flag is the option it came from, named in the error ("--cap-add").
Result<int> capability_from_name(std::string_view name, std::string_view flag);

struct CapabilitySets {
  uint64_t bounding = 0;
  uint64_t effective = 0;  // == permitted == inheritable (and ambient when uid != 0)
};

// The permitted set of the calling process: all a sandbox it starts can be given.
uint64_t held_capabilities();

// Docker's rules: start from `base`; "ALL" in add keeps every capability, "ALL" in drop keeps none;
// then named adds, then named drops. A non-root uid gets only what add names explicitly.
// Everything is limited to `held` (capset cannot grant more); a named --cap-add outside it is an error.
Result<CapabilitySets> capability_sets(uint64_t base, const std::vector<std::string>& add,
                                       const std::vector<std::string>& drop, uid_t uid, uint64_t held);

// Podman 4's default set, narrower than crun's: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL,
// NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID. NET_RAW, MKNOD, AUDIT_WRITE and SYS_CHROOT
// are left out so raw sockets, device nodes and chroot are refused unless --cap-add asks for them.
uint64_t default_capabilities();

}  // namespace fnexec::sandbox
