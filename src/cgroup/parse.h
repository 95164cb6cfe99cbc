// Pure parsers and formatters for cgroup and proc files; no I/O, so unit tests cover them.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace fnexec::cgroup {

// One line of /proc/<pid>/cgroup: "4:memory:/process_api/x", "0::/", "1:cpu,cpuacct:/".
struct ProcCgroupEntry {
  int hierarchy_id = 0;
  std::vector<std::string> controllers;  // empty for v2; "name=systemd" kept as is
  std::string path;                      // absolute within the hierarchy (or cgroup namespace)
};
Result<std::vector<ProcCgroupEntry>> parse_proc_cgroup(std::string_view text);

// A cgroup or cgroup2 mount from /proc/<pid>/mountinfo.
struct CgroupMount {
  std::string mount_point;           // "/sys/fs/cgroup/memory"
  std::string root;                  // root of the mount within the hierarchy, usually "/"
  bool v2 = false;                   // fstype cgroup2
  std::vector<std::string> options;  // super options: controller names for v1 ("cpu", "cpuacct")
};
std::vector<CgroupMount> parse_cgroup_mounts(std::string_view mountinfo);

// "key value" per line (cpu.stat, memory.events, memory.oom_control, pids.events).
std::optional<uint64_t> keyed_value(std::string_view text, std::string_view key);
// A file holding one number ("12345\n"); "max" and garbage give nullopt.
std::optional<uint64_t> single_value(std::string_view text);
// cgroup.procs: one pid per line.
std::vector<pid_t> parse_pids(std::string_view text);
// Space-separated words of cgroup.controllers / subtree_control.
std::vector<std::string> split_words(std::string_view text);

// CFS period fnexec uses: 100 ms, the kernel default.
inline constexpr uint64_t kCpuPeriodUs = 100000;
// Quota in µs for cpus (0.5 → 50000); the kernel refuses quotas below 1 ms, so never less.
uint64_t cpu_quota_us(double cpus, uint64_t period_us = kCpuPeriodUs);
// v2 cpu.max value: "50000 100000".
std::string format_cpu_max(double cpus, uint64_t period_us = kCpuPeriodUs);

// "6.1.0-56-amd64" → {6, 1}; nullopt when unparsable.
std::optional<std::pair<int, int>> kernel_major_minor(std::string_view release);

// Sandbox ids are single path components: 1-64 of [A-Za-z0-9_.-], not starting with '.'.
bool valid_id(std::string_view id);

}  // namespace fnexec::cgroup
