// Host devices a sandbox is given (`fnexec run --device`, a daemon function's "devices"): podman's
// HOST[:CONTAINER][:PERMISSIONS] form, and the host node it names. The node is made again in the
// sandbox's /dev (rootfs.cc) and the cgroup's device policy allows its number (cgroup/devices.h).
#pragma once

#include <string>
#include <string_view>

#include "cgroup/devices.h"
#include "sandbox/spec.h"
#include "util/error.h"

namespace fnexec::sandbox {

// HOST[:CONTAINER][:PERMISSIONS]: CONTAINER defaults to HOST and must be below /dev, PERMISSIONS of
// r, w and m defaults to rwm. Only the text is checked; mode and rdev stay 0 (read_host_device).
// what names the source in errors: "--device", "devices of function f".
Result<DeviceNode> parse_device(std::string_view text, std::string_view what);

// Fills node.mode and node.rdev from the host node at node.host: a character or block device.
Result<> read_host_device(DeviceNode& node);

// The device policy's rule for node; 'm' always, since fnexec's init makes the node inside the
// sandbox's cgroup, and mknod of a number the function may already open gives it nothing new.
cgroup::DeviceRule device_rule(const DeviceNode& node);

// "HOST:CONTAINER:PERMISSIONS", what parse_device reads back.
std::string to_string(const DeviceNode& node);

}  // namespace fnexec::sandbox
