// Shared by the v1 and v2 backends; not part of the module's interface.
#pragma once

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "cgroup/cgroup.h"
#include "cgroup/parse.h"

// FNEXEC_TRY for Result<> (void): util/error.h's macro dereferences the value, which void has not.
namespace fnexec::cgroup::detail {

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;

// How long kill() waits for a cgroup to empty: killed tasks still unwind their mm (large ones under
// TCG take a while), and a stuck one means a kernel problem worth an error rather than a hang.
inline constexpr std::chrono::seconds kKillDeadline{10};

// Where a hierarchy is mounted and where we sit in it.
struct OwnCgroup {
  stdfs::path mount_point;
  stdfs::path dir;  // mount_point + our path from /proc/self/cgroup
};

// Our cgroup in the v2 hierarchy, or nullopt when cgroup2 is not mounted (or our path is outside it).
std::optional<OwnCgroup> own_v2(const std::vector<ProcCgroupEntry>& self,
                                const std::vector<CgroupMount>& mounts);
// Our cgroup in the v1 hierarchy that holds controller (e.g. "memory"), or nullopt.
std::optional<OwnCgroup> own_v1(const std::vector<ProcCgroupEntry>& self,
                                const std::vector<CgroupMount>& mounts, const std::string& controller);

bool file_exists(const stdfs::path& p);
// mkdir that accepts an existing directory.
Result<> ensure_dir(const stdfs::path& p);
// Removes a cgroup directory and any cgroups below it, retrying EBUSY briefly (the kernel releases
// a cgroup asynchronously after its last task exits).
Result<> remove_cgroup_tree(const stdfs::path& dir);
// Names of the subdirectories of dir.
std::vector<std::string> subdirs(const stdfs::path& dir);
// Pids listed in dir/cgroup.procs and the same file of every cgroup below it.
std::vector<pid_t> procs_below(const stdfs::path& dir);
// Sleeps a little longer each round, so a short wait costs microseconds and a long one little CPU.
void backoff_sleep(int round);

// Error unless valid_id(id).
Result<> check_id(std::string_view id);
// Counters since a baseline: subtracts base's cumulative counters (cpu, oom kills) from u.
void subtract_counters(Usage& u, const Usage& base);

Result<std::shared_ptr<Hierarchy>> make_v2(const OwnCgroup& own, const Options& options);
Result<std::shared_ptr<Hierarchy>> make_v1(const std::vector<ProcCgroupEntry>& self,
                                           const std::vector<CgroupMount>& mounts, const Options& options);

}  // namespace fnexec::cgroup::detail
