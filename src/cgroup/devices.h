// The device policy of a sandbox, enforced by the kernel: which device numbers its processes may
// create (mknod) and open, whatever nodes they manage to make. cgroup v1 writes it into the devices
// controller (devices.deny / devices.allow); cgroup v2 has no device files, so the same rules become a
// BPF_PROG_TYPE_CGROUP_DEVICE program attached to the sandbox's cgroup (as crun and systemd do).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::cgroup {

// One allowed device class, as in devices.allow: "c 1:3 rwm", "c 136:* rw".
struct DeviceRule {
  char type = 'c';        // 'c' char, 'b' block
  int64_t major = -1;     // -1: any
  int64_t minor = -1;     // -1: any
  std::string access = "rwm";  // subset of "rwm": read, write, mknod
};

// What every sandbox may use: the nodes fnexec makes in /dev (null, zero, full, random, urandom,
// tty) and its own devpts instance (ptmx 5:2, pts 136:*). Everything else is refused.
std::span<const DeviceRule> default_device_rules();

// "c 1:3 rwm", the v1 devices.allow form.
std::string to_string(const DeviceRule& rule);

// The rule for host device node path (`--device /dev/fuse`): its type and number, access as given.
Result<DeviceRule> device_rule_for(const std::string& path, std::string access = "rwm");

// Loads a BPF_PROG_TYPE_CGROUP_DEVICE program that allows exactly rules (and nothing else).
Result<UniqueFd> load_device_program(std::span<const DeviceRule> rules);

// Attaches program to the v2 cgroup open at cgroup_fd (BPF_F_ALLOW_MULTI, so a device program of an
// ancestor, e.g. systemd's, still runs too: a device must pass all of them).
Result<> attach_device_program(int cgroup_fd, int program_fd, const std::string& cgroup_path);

// The v1 form: "a" into devices.deny, then one devices.allow line per rule, in dir.
Result<> write_v1_device_rules(const std::string& dir, std::span<const DeviceRule> rules);

}  // namespace fnexec::cgroup
