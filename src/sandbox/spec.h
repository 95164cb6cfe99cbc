// What one sandbox is made of: the caller fills a SandboxSpec, the Launcher builds it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "sandbox/privileges.h"

namespace fnexec::cgroup {
class SandboxCgroup;
}

namespace fnexec::sandbox {

struct Volume {
  std::filesystem::path source;  // host path: directory or file
  std::string target;            // absolute path inside the sandbox
  bool read_only = false;
};

// --device: a host device node made again in the sandbox's /dev (the cgroup's device policy allows it).
struct DeviceNode {
  std::string host;        // the host node it copies: `--device HOST`, a function's "devices"
  std::string path;        // absolute, below /dev inside the sandbox
  unsigned mode = 0;       // S_IFCHR or S_IFBLK | permission bits (the host node's)
  dev_t rdev = 0;
  std::string access = "rwm";  // what the device policy allows on it
};

struct TmpfsMount {
  std::string target;   // absolute path inside the sandbox
  std::string options;  // tmpfs options, e.g. "size=64m"
};

// Always a fresh network namespace. loopback: lo brought up (what --net=none gives, as in podman);
// lo_down: lo left down, saving the netlink round trip for functions that need no network at all.
enum class Network { loopback, lo_down };
// automatic: the child makes every mount as host root (so overlay honours the store's trusted.*
// whiteout xattrs, no userxattr needed), over layers id-mapped 0 -> FIRST, then joins a user
// namespace mapping 0..COUNT to FIRST.. before the function runs. Its mount, pid and network
// namespaces stay owned by the host's user namespace: root inside cannot mount, and cannot bind
// ports below 1024 either (net.ipv4.ip_unprivileged_port_start applies).
enum class UserNamespace { host, automatic };

// Host ids that root in a --userns=auto sandbox maps to.
struct IdRange {
  uid_t host_first = 100000;
  uint32_t count = 65536;
};

// inherit: the function gets fnexec's own 0/1/2 (zero copy for `fnexec run`); pipes: the launcher
// makes one pipe per stream and hands the parent's ends out (Sandbox::take_stdio), as pools need.
enum class Stdio { inherit, pipes };

struct SandboxSpec {
  std::vector<std::filesystem::path> layers;  // absolute layer dirs, BOTTOM first
  std::string image_name;                     // for messages: "fn-hello:1"
  bool read_only = false;
  std::vector<TmpfsMount> tmpfs;
  std::vector<Volume> volumes;
  std::vector<DeviceNode> devices;
  std::string hostname = "fnexec";
  Network network = Network::loopback;
  UserNamespace userns = UserNamespace::host;
  IdRange id_range;                         // used with UserNamespace::automatic
  cgroup::SandboxCgroup* cgroup = nullptr;  // not owned; nullptr: no cgroup
  // With Network::loopback: join this network namespace (lo already up; not owned) instead of
  // creating one. Pools pass a recycled one (netns_pool.h); -1: a new namespace.
  int netns_fd = -1;
  Privileges privileges;                    // from prepare_privileges()

  std::vector<std::string> argv;  // argv[0] is the entrypoint: absolute, relative or looked up in PATH
  std::vector<std::string> env;   // "K=V", final
  std::string cwd = "/";
  bool init = true;  // fnexec's init as PID 1; false: the function is PID 1
  // SIGKILL the sandbox when the thread that launched it dies (PR_SET_PDEATHSIG): right for
  // `fnexec run`; a multi-threaded launcher must launch from a thread that outlives the sandbox.
  bool die_with_parent = true;
  Stdio stdio = Stdio::inherit;
  // Set by a launcher thread that runs at a lower priority than the rest of its process (pools):
  // the sandbox is set up at the thread's priority and the function runs at this nice value.
  std::optional<int> function_nice;

  // Where the sandbox's private tmpfs and overlay are mounted, inside its own mount namespace only.
  std::filesystem::path mount_dir = "/run/fnexec/mnt";
};

}  // namespace fnexec::sandbox
