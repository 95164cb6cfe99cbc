#include "net/traffic.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <string>

#include "util/fs.h"

namespace fnexec::net {

Result<TrafficCounters> parse_net_dev(std::string_view text, std::string_view device) {
  // Two header lines, then "  NAME: rx_bytes rx_packets errs drop fifo frame compressed multicast
  // tx_bytes tx_packets ..." per device.
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(at, end - at);
    at = end + 1;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = line.substr(0, colon);
    name.remove_prefix(std::min(name.find_first_not_of(' '), name.size()));
    if (name != device) continue;
    std::string fields(line.substr(colon + 1));
    uint64_t rx_bytes, rx_packets, tx_bytes, tx_packets, skip;
    if (std::sscanf(fields.c_str(),
                    "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                    " %" SCNu64 " %" SCNu64,
                    &rx_bytes, &rx_packets, &skip, &skip, &skip, &skip, &skip, &skip, &tx_bytes, &tx_packets) != 10)
      return fail(ErrorKind::internal, "read counters of", std::string(device),
                  "unexpected /proc/net/dev line: " + std::string(line));
    return TrafficCounters{tx_bytes, tx_packets, rx_bytes, rx_packets};
  }
  return fail(ErrorKind::not_found, "read counters of", std::string(device), "no such device in /proc/net/dev");
}

Result<NamespaceTraffic> NamespaceTraffic::open(pid_t pid, int pidfd) {
  auto path = "/proc/" + std::to_string(pid) + "/net/dev";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno("open", path);
  // Still running after the open: the file is that sandbox's, not a process's that reused the pid.
  pollfd exited{pidfd, POLLIN, 0};
  if (::poll(&exited, 1, 0) != 0)
    return fail(ErrorKind::internal, "open", path, "the sandbox exited before its network was connected");
  return NamespaceTraffic(std::move(fd));
}

Result<TrafficCounters> NamespaceTraffic::read(std::string_view device) const {
  // A seq_file read from offset 0 is generated anew.
  if (::lseek(fd_.get(), 0, SEEK_SET) != 0) return fail_errno("rewind /proc/net/dev of sandbox");
  auto text = FNEXEC_TRY(fs::read_fd(fd_.get(), "/proc/net/dev of sandbox"));
  return parse_net_dev(text, device);
}

}  // namespace fnexec::net
