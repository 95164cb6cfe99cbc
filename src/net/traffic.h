// A sandbox's traffic, read from its own network namespace's /proc/PID/net/dev: the kernel walks
// that namespace's devices under RCU (no rtnl lock, which link changes elsewhere hold for
// milliseconds), and the open file holds a reference to the namespace, so the sandbox's eth0 and
// its counters stay readable after the sandbox's processes are gone, until the file is closed.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string_view>

#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::net {

struct TrafficCounters {
  uint64_t bytes_out = 0, packets_out = 0;  // sent by the sandbox (before the egress verdict)
  uint64_t bytes_in = 0, packets_in = 0;    // delivered to the sandbox
};

// The counters of DEVICE in the text of a /proc/net/dev file, seen from the namespace's side:
// what the device transmitted is the sandbox's out. Fails naming the device when it is not there.
Result<TrafficCounters> parse_net_dev(std::string_view text, std::string_view device);

class NamespaceTraffic {
 public:
  // Opens /proc/PID/net/dev of the sandbox behind pidfd, which must still be running (so pid
  // cannot have been reused by another process).
  static Result<NamespaceTraffic> open(pid_t pid, int pidfd);
  // The device's counters since it was made.
  Result<TrafficCounters> read(std::string_view device) const;

 private:
  explicit NamespaceTraffic(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace fnexec::net
