// Per-function isolation in the daemon: each function's own slice of the subordinate ids (its user
// namespace maps root to it), which host paths its volumes may name (fnexec.conf volume_allow) and
// which host devices it may be given (device_allow).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "sandbox/spec.h"
#include "util/error.h"

namespace fnexec::server {

// volume_allow = PATH[:rw]: PATH and everything below it may be a volume source; read-only unless :rw.
struct VolumeAllow {
  std::filesystem::path path;  // absolute, canonical
  bool writable = false;
};

// device_allow = PATH[:PERMISSIONS]: the host device node at PATH (its type and number, whatever
// path a function names it by) may be given to a function, with at most PERMISSIONS (default rwm).
struct DeviceAllow {
  std::string path;
  char type = 'c';
  dev_t rdev = 0;
  std::string access = "rwm";
};

struct IsolationSettings {
  std::string subid_user = "fnexec";        // whose lines of /etc/subuid and /etc/subgid the daemon slices
  uint32_t ids_per_function = 65536;        // ids each function's user namespace maps
  std::vector<VolumeAllow> volume_allow;    // empty: no function may have a volume
  std::vector<DeviceAllow> device_allow;    // empty: no function may have a device
  // subuid_file, subgid_file: where the lines are read (tests keep their own).
  std::filesystem::path subuid_file = "/etc/subuid", subgid_file = "/etc/subgid";
};

// The user's range in the subuid and subgid files (both must hold it, the same). A missing line is
// an error naming the file and the line to add.
Result<sandbox::IdRange> subordinate_ids(const IsolationSettings& settings);

// "PATH" or "PATH:rw"; PATH must exist (it is canonicalised, so a symlink names its target).
Result<VolumeAllow> parse_volume_allow(std::string_view value);

// "PATH" or "PATH:PERMISSIONS"; PATH must be a character or block device node now.
Result<DeviceAllow> parse_device_allow(std::string_view value);

// Fills each device's type and number from its host node and checks that node is a device_allow
// device and the access asked is within the allowed one; ErrorKind::invalid names the device and
// the setting to add.
Result<> check_devices(std::string_view function, std::vector<sandbox::DeviceNode>& devices,
                       const std::vector<DeviceAllow>& allow);

// Replaces each volume's source by its canonical path and checks it lies in an allowed path, and
// that a writable volume lies in a writable one; ErrorKind::invalid names the path and the setting.
Result<> check_volumes(std::string_view function, std::vector<sandbox::Volume>& volumes,
                       const std::vector<VolumeAllow>& allow);

}  // namespace fnexec::server
