#include "sandbox/capabilities.h"

#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>

namespace fnexec::sandbox {

namespace {

bool is_all(std::string_view name) {
  return name.size() == 3 && std::toupper(name[0]) == 'A' && std::toupper(name[1]) == 'L' &&
         std::toupper(name[2]) == 'L';
}

uint64_t bit(int cap) {
  return uint64_t{1} << cap;
}

}  // namespace

uint64_t all_capabilities() {
  // cap_max_bits() reads /proc/sys/kernel/cap_last_cap once; the kernel refuses bits past it.
  int count = std::clamp(static_cast<int>(cap_max_bits()), 1, 64);
  return count == 64 ? ~uint64_t{0} : (uint64_t{1} << count) - 1;
}

Result<int> capability_from_name(std::string_view name, std::string_view flag) {
  std::string upper;
  for (char c : name) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (!upper.starts_with("CAP_")) upper.insert(0, "CAP_");
  cap_value_t value = 0;
  // cap_from_name also accepts plain numbers; only names are meant here.
  bool numeric = upper.size() > 4 && std::all_of(upper.begin() + 4, upper.end(), ::isdigit);
  if (name.empty() || numeric || cap_from_name(upper.c_str(), &value) != 0 || value < 0 || value >= 64 ||
      !(all_capabilities() & bit(value))) {
    return fail(ErrorKind::invalid, "use " + std::string(flag), std::string(name),
                "unknown capability (expected a name like NET_ADMIN or CAP_NET_ADMIN, or ALL)");
  }
  return static_cast<int>(value);
}

uint64_t held_capabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return 0;
  return data[0].permitted | (uint64_t{data[1].permitted} << 32);
}

Result<CapabilitySets> capability_sets(uint64_t base, const std::vector<std::string>& add,
                                       const std::vector<std::string>& drop, uid_t uid, uint64_t held) {
  const uint64_t all = all_capabilities() & held;
  uint64_t named_add = 0, named_drop = 0;
  bool add_all = false, drop_all = false;
  for (const auto& name : add) {
    if (is_all(name)) {
      add_all = true;
      continue;
    }
    int cap = FNEXEC_TRY(capability_from_name(name, "--cap-add"));
    if (!(held & bit(cap))) {
      return fail(ErrorKind::invalid, "use --cap-add", name,
                  "fnexec does not hold this capability itself, so it cannot pass it on");
    }
    named_add |= bit(cap);
  }
  for (const auto& name : drop) {
    if (is_all(name))
      drop_all = true;
    else
      named_drop |= bit(FNEXEC_TRY(capability_from_name(name, "--cap-drop")));
  }
  uint64_t set = base & all;
  if (add_all) set = all;
  if (drop_all) set = 0;
  set = (set | named_add) & ~named_drop;

  CapabilitySets sets;
  sets.bounding = set;
  // A non-root process starts with no capabilities, as after a plain setuid: only an explicit
  // --cap-add reaches it (through the ambient set, the only one that survives exec for non-root).
  uint64_t asked = add_all ? all : named_add;
  sets.effective = uid == 0 ? set : (asked & set);
  return sets;
}

uint64_t default_capabilities() {
  uint64_t set = 0;
  for (int cap : {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_NET_BIND_SERVICE,
                  CAP_SETFCAP, CAP_SETGID, CAP_SETPCAP, CAP_SETUID}) {
    set |= uint64_t{1} << cap;
  }
  return set;
}

}  // namespace fnexec::sandbox
