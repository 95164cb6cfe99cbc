// Test support: paths of the tree under test and scratch directories on tmpfs.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace fnexec::test {

std::filesystem::path source_root();   // FNEXEC_SOURCE_ROOT
std::filesystem::path build_root();    // FNEXEC_BUILD_ROOT
std::filesystem::path fnexec_bin();    // FNEXEC_BIN
std::filesystem::path rootfs_tool(const std::string& name);  // source_root()/rootfs-tools/NAME
std::filesystem::path runtime_helpers();  // FNEXEC_RUNTIME_HELPERS: runtime/helpers of the source tree
std::filesystem::path example_c_echo();   // FNEXEC_EXAMPLE_C: runtime/helpers/examples/c/echo.c, built

bool is_root();

// Fills rootfs/bin with the host's busybox-static and one symlink per applet (an unpacked rootfs for
// `fnexec run --rootfs`, without an image store).
void populate_busybox_rootfs(const std::filesystem::path& rootfs);

// A fresh tmpfs mounted on a temporary directory (tmpfs keeps trusted.* xattrs and 0/0 whiteout
// devices, and avoids ext4's slow-down after large deletes). Unmounted and removed on destruction.
class ScratchTmpfs {
 public:
  explicit ScratchTmpfs(const std::string& size = "2g");
  ~ScratchTmpfs();
  ScratchTmpfs(const ScratchTmpfs&) = delete;
  ScratchTmpfs& operator=(const ScratchTmpfs&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& rel) const { return path_ / rel; }

 private:
  std::filesystem::path path_;
};

// Our own cgroup in every hierarchy we are in (v1: one per controller; v2: the unified one).
std::vector<std::filesystem::path> own_cgroup_dirs();
// Removes OWN/name and everything below it in every hierarchy: a test that gave a daemon its own
// cgroup prefix cleans up what the daemon leaves there (the prefix and sandboxes emptied by a kill).
void remove_own_cgroup_tree(const std::string& name);

// Cgroup directories anywhere under /sys/fs/cgroup whose name starts with prefix ("run-" for the
// sandboxes of `fnexec run`): other suites share the host's cgroups, so leak checks count by name.
size_t count_cgroups_named(const std::string& prefix);

// Mounts in our namespace at or below dir: other processes on the host (other test runs, image
// tools) mount and unmount meanwhile, so leak checks count only below their own scratch tree.
size_t count_mounts_below(const std::filesystem::path& dir);

// `fnexec run` answers once init reported the function's end and leaves PID 1, which then tears its
// namespaces down, to its parent's reaper: in the tests this process (a subreaper). Reaps every such
// adopted init ("fnexec-init"), waiting for each, so what is counted after it is what a run leaves
// behind and not a teardown still under way. Returns how many there were.
int reap_adopted_sandbox_inits();

// Counters that must not grow across many runs: mounts, our fds, processes, cgroups below ours.
struct ResourceSnapshot {
  size_t mounts = 0;
  size_t fds = 0;
  size_t processes = 0;
  size_t cgroups = 0;
  static ResourceSnapshot take();
};

}  // namespace fnexec::test
