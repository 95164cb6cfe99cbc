#include "sandbox/devices.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <vector>

namespace fnexec::sandbox {

Result<DeviceNode> parse_device(std::string_view text, std::string_view what) {
  std::vector<std::string> parts;
  for (size_t pos = 0;;) {
    size_t c = text.find(':', pos);
    parts.emplace_back(text.substr(pos, c == std::string_view::npos ? std::string_view::npos : c - pos));
    if (c == std::string_view::npos) break;
    pos = c + 1;
  }
  auto is_access = [](const std::string& p) {
    return !p.empty() && p.find_first_not_of("rwm") == std::string::npos;
  };
  if (parts.size() > 3 || parts[0].empty() || (parts.size() == 3 && !is_access(parts[2])))
    return fail(ErrorKind::invalid, "parse " + std::string(what), std::string(text),
                "expected HOST[:CONTAINER][:PERMISSIONS], e.g. /dev/fuse:/dev/fuse:rw");
  DeviceNode node;
  node.host = parts[0];
  node.path = parts[0];
  if (parts.size() == 2 && is_access(parts[1]))
    node.access = parts[1];
  else if (parts.size() >= 2)
    node.path = parts[1];
  if (parts.size() == 3) node.access = parts[2];
  if (node.host[0] != '/')
    return fail(ErrorKind::invalid, "use " + std::string(what), std::string(text), "the host path must be absolute");
  // Checked here only when given: a defaulted path is the host's, and whether that is a device is
  // the clearer message (read_host_device); rootfs.cc refuses any path outside /dev either way.
  if (node.path != node.host && !node.path.starts_with("/dev/"))
    return fail(ErrorKind::invalid, "use " + std::string(what), std::string(text),
                "the path inside the sandbox must be below /dev");
  return node;
}

Result<> read_host_device(DeviceNode& node) {
  auto rule = FNEXEC_TRY(cgroup::device_rule_for(node.host, node.access));
  struct stat st;
  if (::stat(node.host.c_str(), &st) != 0) return fail_errno("use device", node.host);
  node.mode = st.st_mode & (S_IFMT | 0777);
  node.rdev = makedev(static_cast<unsigned>(rule.major), static_cast<unsigned>(rule.minor));
  return {};
}

cgroup::DeviceRule device_rule(const DeviceNode& node) {
  return {S_ISBLK(node.mode) ? 'b' : 'c', major(node.rdev), minor(node.rdev),
          node.access.find('m') == std::string::npos ? node.access + "m" : node.access};
}

std::string to_string(const DeviceNode& node) {
  return node.host + ":" + node.path + ":" + node.access;
}

}  // namespace fnexec::sandbox
