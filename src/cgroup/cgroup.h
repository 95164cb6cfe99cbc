// One interface, two backends: cgroup v2 (unified) and v1 (hybrid hosts), detected at run time.
// fnexec only ever creates cgroups below the one it runs in (/proc/self/cgroup).
// This header is the contract the sandbox, invoke and server modules build on.
//
// Layout, with OWN = our cgroup from /proc/self/cgroup and PREFIX = Options::prefix ("fnexec"):
//   v2: OWN/PREFIX/supervisor      the fnexec process itself (no-internal-processes rule)
//       OWN/PREFIX/sandboxes/<id>  one per sandbox; +memory +cpu +pids enabled on the way down
//   v1: <mount of each controller>/OWN/PREFIX/sandboxes/<id>, one per hierarchy
//       (memory, cpu, cpuacct, pids, freezer; co-mounted ones such as cpu,cpuacct share a dir).
// A process already in an OWN/X/supervisor leaf with X/sandboxes next to it reuses X
// (children of fnexec inherit its cgroup and must not nest a second layout).
//
// Launcher sequence:
//   h = Hierarchy::detect(options)   once per process, keep it (v2: moves the caller into supervisor/)
//   cg = h->create(id, limits)       before the clone
//   v2: clone3 with CLONE_INTO_CGROUP and cgroup = cg->clone_into_fd(); if clone3 refuses, clone without
//       it and attach(pid) before the child runs any function code.
//   v1: clone; the child waits on its control fd; attach(pid); then the child goes on. A child that
//       unshares CLONE_NEWCGROUP must do so after attach, or its namespace root is the supervisor's cgroup.
//   at "go": cg->baseline() (pooled sandboxes; a fresh sandbox may skip it)
//   end or timeout: cg->kill() if anything may be left, cg->usage(), then destroy() (or drop cg).
// Not thread-safe per SandboxCgroup; create() may run concurrently.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cgroup/devices.h"
#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::cgroup {

enum class Mode { v2, v1, disabled };
std::string_view to_string(Mode m);

struct Limits {
  std::optional<uint64_t> memory_bytes;  // also sets swap to 0 where the kernel allows
  std::optional<double> cpus;            // quota/period, e.g. 0.5
  std::optional<uint64_t> pids;
  // Devices allowed beyond default_device_rules() (`--device`). Every sandbox cgroup gets the device
  // policy: the v1 devices controller, or a device BPF program on v2.
  std::vector<DeviceRule> devices;
};

// Counters of one sandbox cgroup. A counter the kernel does not have stays nullopt: never a guess.
struct Usage {
  std::optional<uint64_t> cpu_user_us;
  std::optional<uint64_t> cpu_system_us;
  std::optional<uint64_t> cpu_total_us;
  std::optional<uint64_t> memory_peak_bytes;
  std::optional<uint64_t> oom_kills;
  // True when baseline() was taken but the kernel cannot reset the peak (v2 before 6.12):
  // memory_peak_bytes then covers the cgroup's whole life, setup included.
  bool memory_peak_includes_setup = false;
};

// What the detected kernel offers, for `fnexec info` and for callers that adapt.
struct Features {
  bool memory_peak = false;             // v2 memory.peak (5.19+) or v1 memory.max_usage_in_bytes
  bool memory_peak_resettable = false;  // v1 always; v2 per-fd reset (6.12+)
  bool swap_limit = false;              // memory.swap.max / memory.memsw.limit_in_bytes
  bool cgroup_kill = false;             // v2 cgroup.kill (5.14+)
  bool freezer = false;                 // v2 cgroup.freeze or the v1 freezer controller
  bool clone_into_cgroup = false;       // v2: clone3 CLONE_INTO_CGROUP (5.7+)
  std::string memory_peak_file;         // "memory.peak", "memory.max_usage_in_bytes" or ""
  // How the kernel enforces the device policy: "bpf" (v2 device program), "devices" (v1 controller),
  // or "" when it cannot (v1 without the devices controller, v2 without CONFIG_CGROUP_BPF).
  std::string device_policy;
};

struct Options {
  // No usable controllers: run without limits (Mode::disabled) instead of failing.
  bool allow_disabled = false;
  // Never touch cgroups (`--cgroups=disabled`): Mode::disabled even where cgroups work.
  bool force_disabled = false;
  // Directory below our own cgroup that holds supervisor/ and sandboxes/ (one path component).
  std::string prefix = "fnexec";
};

// `--cgroups=auto|disabled` → Options (auto: cgroups are required; disabled: never used).
Result<Options> options_from_flag(std::string_view value);

class SandboxCgroup;

// The detected hierarchy fnexec creates sandboxes under.
class Hierarchy {
 public:
  // v2 when our own v2 cgroup offers memory, cpu and pids; else v1 per controller;
  // else Mode::disabled only when allow_disabled, otherwise an error naming what is missing.
  // On v2 this moves the calling process into a leaf (".../supervisor") first.
  static Result<std::shared_ptr<Hierarchy>> detect(bool allow_disabled);
  static Result<std::shared_ptr<Hierarchy>> detect(const Options& options);
  virtual ~Hierarchy() = default;

  virtual Mode mode() const = 0;
  virtual std::vector<std::string> controllers() const = 0;
  // Where sandboxes go, one line per hierarchy (v1 has one per controller).
  virtual std::vector<std::string> sandbox_parents() const = 0;
  virtual bool has_memory_peak() const = 0;
  virtual Features features() const = 0;

  // Creates ".../sandboxes/<id>" with limits set. Destroying the result kills what is in it and removes it.
  // id: 1-64 of [A-Za-z0-9_.-], not starting with '.'. An existing cgroup of that id is an error.
  virtual Result<std::unique_ptr<SandboxCgroup>> create(std::string_view id, const Limits& limits) = 0;
  // Removes sandbox cgroups left by a crashed earlier instance (kills their processes first).
  // Without a filter only for the one fnexec instance that owns the prefix (the daemon at start-up,
  // holding its lock); with one, only the sandboxes whose name it accepts (owner_is_gone).
  virtual Result<int> remove_stale(const std::function<bool(const std::string&)>& which = nullptr) = 0;
};

class SandboxCgroup {
 public:
  virtual ~SandboxCgroup() = default;  // kill + remove; errors are logged, never thrown

  // v2: an O_DIRECTORY fd for clone3's CLONE_INTO_CGROUP; -1 on v1 and disabled.
  virtual int clone_into_fd() const = 0;
  // Moves pid in (v1, and v2 when clone3 could not place it). Call before the function runs.
  virtual Result<> attach(pid_t pid) = 0;
  // Takes the counters now as the zero point of usage() (pooled sandboxes: setup is not billed).
  virtual Result<> baseline() = 0;
  // Read it before destroy(): the counters go with the cgroup.
  virtual Result<Usage> usage() const = 0;
  // Kills every process in the cgroup (v2 cgroup.kill; v1 freeze, SIGKILL all, thaw) and waits until empty.
  virtual Result<> kill() = 0;
  // kill(), then rmdir; idempotent.
  virtual Result<> destroy() = 0;
  // The sandbox's directory (v1: the memory hierarchy's, else the first one); "" when disabled.
  virtual std::string path() const = 0;
  // Every directory of this sandbox (v1: one per hierarchy).
  virtual std::vector<std::string> paths() const = 0;
};

// "512k", "32m", "1.5g", "1048576", "64MiB" → bytes (binary units, case-insensitive).
Result<uint64_t> parse_size(std::string_view text);
// "0.5", "2" → cpus; must be > 0 and at most 1024.
Result<double> parse_cpus(std::string_view text);

// Kills every process in dir and in the cgroups below it, then removes them all, deepest first: for
// a layout another fnexec process left when it stopped (`fnexec bench --via-api` removes its own
// daemon's prefix this way). A dir that does not exist is not an error.
Result<> kill_and_remove_tree(const std::filesystem::path& dir);

// For remove_stale() on a prefix several fnexec processes share: sandbox ids are KIND-PID-N
// ("run-", "bench-", "pool-"); true when process PID no longer exists, as after a SIGKILL.
bool owner_is_gone(const std::string& sandbox_id);

}  // namespace fnexec::cgroup
