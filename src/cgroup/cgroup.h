// One interface, two backends: cgroup v2 (unified) and v1 (hybrid hosts), detected at run time.
// fnexec only ever creates cgroups below the one it runs in (/proc/self/cgroup).
// This header is the contract the sandbox, invoke and server modules build on.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::cgroup {

enum class Mode { v2, v1, disabled };
std::string_view to_string(Mode m);

struct Limits {
  std::optional<uint64_t> memory_bytes;  // also sets swap to 0 where the kernel allows
  std::optional<double> cpus;            // quota/period, e.g. 0.5
  std::optional<uint64_t> pids;
};

// Counters of one sandbox cgroup. A counter the kernel does not have stays nullopt: never a guess.
struct Usage {
  std::optional<uint64_t> cpu_user_us;
  std::optional<uint64_t> cpu_system_us;
  std::optional<uint64_t> cpu_total_us;
  std::optional<uint64_t> memory_peak_bytes;
  std::optional<uint64_t> oom_kills;
};

class SandboxCgroup;

// The detected hierarchy fnexec creates sandboxes under.
class Hierarchy {
 public:
  // v2 when our own v2 cgroup offers memory, cpu and pids; else v1 per controller;
  // else Mode::disabled only when allow_disabled, otherwise an error naming what is missing.
  // On v2 this moves the calling process into a leaf (".../supervisor") first.
  static Result<std::shared_ptr<Hierarchy>> detect(bool allow_disabled);
  virtual ~Hierarchy() = default;

  virtual Mode mode() const = 0;
  virtual std::vector<std::string> controllers() const = 0;
  // Where sandboxes go, one line per hierarchy (v1 has one per controller).
  virtual std::vector<std::string> sandbox_parents() const = 0;
  virtual bool has_memory_peak() const = 0;

  // Creates ".../sandboxes/<id>" with limits set. Destroying the result kills what is in it and removes it.
  virtual Result<std::unique_ptr<SandboxCgroup>> create(std::string_view id, const Limits& limits) = 0;
  // Removes sandbox cgroups left by a crashed earlier instance (kills their processes first).
  virtual Result<int> remove_stale() = 0;
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
  virtual Result<Usage> usage() const = 0;
  // Kills every process in the cgroup (v2 cgroup.kill; v1 freeze, SIGKILL all, thaw) and waits until empty.
  virtual Result<> kill() = 0;
  // kill(), then rmdir; idempotent.
  virtual Result<> destroy() = 0;
  virtual std::string path() const = 0;
};

}  // namespace fnexec::cgroup
