#include "support/fixtures.h"

#include "support/proc.h"

#include <dirent.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace fnexec::test {

namespace {

std::filesystem::path env_path(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) throw std::runtime_error(std::string(name) + " is not set: run the tests with `meson test`");
  return v;
}

// Orphans of the binary under test are reparented to the test process instead of host init,
// so ResourceSnapshot sees them as our descendants.
[[maybe_unused]] const bool subreaper = [] {
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  return true;
}();

size_t count_lines(const std::filesystem::path& p) {
  std::ifstream f(p);
  size_t n = 0;
  std::string line;
  while (std::getline(f, line)) ++n;
  return n;
}

size_t count_dirs_below(const std::filesystem::path& p) {
  std::error_code ec;
  size_t n = 0;
  for (auto it = std::filesystem::recursive_directory_iterator(p, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec)) ++n;
  }
  return n;
}

}  // namespace

std::filesystem::path source_root() { return env_path("FNEXEC_SOURCE_ROOT"); }
std::filesystem::path build_root() { return env_path("FNEXEC_BUILD_ROOT"); }
std::filesystem::path fnexec_bin() { return env_path("FNEXEC_BIN"); }
std::filesystem::path rootfs_tool(const std::string& name) { return source_root() / "rootfs-tools" / name; }
std::filesystem::path runtime_helpers() { return env_path("FNEXEC_RUNTIME_HELPERS"); }
std::filesystem::path example_c_echo() { return env_path("FNEXEC_EXAMPLE_C"); }

bool is_root() { return ::geteuid() == 0; }

void populate_busybox_rootfs(const std::filesystem::path& rootfs) {
  std::filesystem::create_directories(rootfs / "bin");
  std::filesystem::copy_file("/bin/busybox", rootfs / "bin/busybox");
  std::istringstream names(run({"/bin/busybox", "--list"}).out);
  for (std::string n; std::getline(names, n);)
    if (!n.empty() && n != "busybox") std::filesystem::create_symlink("busybox", rootfs / "bin" / n);
}

ScratchTmpfs::ScratchTmpfs(const std::string& size) {
  const char* tmpdir = std::getenv("TMPDIR");  // the VM suite points it at its scratch tmpfs
  std::string tmpl = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/fnexec-test-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
  std::string opts = "size=" + size + ",mode=0755";
  if (::mount("fnexec-test", path_.c_str(), "tmpfs", 0, opts.c_str()) != 0) {
    ::rmdir(path_.c_str());
    throw std::runtime_error("mount tmpfs on " + path_.string() + " failed (are we root?)");
  }
}

ScratchTmpfs::~ScratchTmpfs() {
  // Lazy: a test that failed may still hold a file open there.
  ::umount2(path_.c_str(), MNT_DETACH);
  ::rmdir(path_.c_str());
}

namespace {

struct ProcessStat {
  pid_t pid;
  std::string comm;
  pid_t ppid;
};

// Every process of /proc/*/stat that could be read (one may exit while we look).
std::vector<ProcessStat> list_processes() {
  std::vector<ProcessStat> out;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    auto name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so the last ')' ends it.
    auto open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close + 4 >= line.size()) continue;
    out.push_back({std::stoi(name), line.substr(open + 1, close - open - 1), std::atoi(line.c_str() + close + 4)});
  }
  return out;
}

}  // namespace

int reap_adopted_sandbox_inits() {
  int reaped = 0;
  for (auto& p : list_processes())
    if (p.ppid == ::getpid() && p.comm == "fnexec-init" && ::waitpid(p.pid, nullptr, 0) == p.pid) ++reaped;
  return reaped;
}

ResourceSnapshot ResourceSnapshot::take() {
  ResourceSnapshot s;
  s.mounts = count_lines("/proc/self/mountinfo");
  std::error_code ec;
  // The sandbox init's sealed memfd is made once per process, at the first launch, and kept.
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    if (std::filesystem::read_symlink(it->path(), ec).string() != "/memfd:fnexec-init (deleted)") ++s.fds;

  // Descendants of this process (orphans come back to us: we are a subreaper).
  std::multimap<pid_t, pid_t> children;
  for (auto& p : list_processes()) children.emplace(p.ppid, p.pid);
  std::vector<pid_t> todo{::getpid()};
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    auto [b, e] = children.equal_range(p);
    for (auto it = b; it != e; ++it) {
      ++s.processes;
      todo.push_back(it->second);
    }
  }

  for (auto& own : own_cgroup_dirs()) s.cgroups += count_dirs_below(own);
  return s;
}

std::vector<std::filesystem::path> own_cgroup_dirs() {
  std::vector<std::filesystem::path> dirs;
  std::ifstream cg("/proc/self/cgroup");
  std::string line;
  while (std::getline(cg, line)) {
    auto a = line.find(':'), b = line.find(':', a + 1);
    std::string ctrls = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    std::filesystem::path base;
    if (ctrls.empty()) base = std::filesystem::exists("/sys/fs/cgroup/unified") ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup";
    else if (ctrls.starts_with("name=")) continue;
    else base = "/sys/fs/cgroup/" + ctrls.substr(0, ctrls.find(','));
    dirs.push_back(base / path.substr(1));
  }
  return dirs;
}

size_t count_mounts_below(const std::filesystem::path& dir) {
  std::ifstream f("/proc/self/mountinfo");
  size_t n = 0;
  std::string base = dir.string(), below = base + "/";
  for (std::string line; std::getline(f, line);) {
    // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT ...; a mount point's spaces are escaped as \040.
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (point == base || point.starts_with(below)) ++n;
  }
  return n;
}

size_t count_cgroups_named(const std::string& prefix) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator("/sys/fs/cgroup", ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
    if (it->is_directory(ec) && it->path().filename().string().starts_with(prefix)) ++n;
  return n;
}

void remove_own_cgroup_tree(const std::string& name) {
  for (auto& own : own_cgroup_dirs()) {
    auto root = own / name;
    std::error_code ec;
    if (!std::filesystem::is_directory(root, ec)) continue;
    std::vector<std::filesystem::path> dirs{root};
    for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
      if (it->is_directory(ec)) dirs.push_back(it->path());
    // Deepest first; a cgroup whose last task is still exiting refuses rmdir with EBUSY for a moment.
    std::sort(dirs.begin(), dirs.end(), [](auto& x, auto& y) { return x.string().size() > y.string().size(); });
    for (auto& d : dirs)
      for (int i = 0; i < 200 && ::rmdir(d.c_str()) != 0 && errno == EBUSY; ++i) ::usleep(10000);
  }
}

}  // namespace fnexec::test
