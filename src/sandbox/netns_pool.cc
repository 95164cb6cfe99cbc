#include "sandbox/netns_pool.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <unistd.h>

#include <array>
#include <optional>
#include <string_view>

#include "sandbox/net.h"
#include "sandbox/privileges.h"
#include "util/fs.h"

namespace fnexec::sandbox {

namespace {

// Everything of a namespace's state that /proc/net shows per namespace: the sockets of every
// family a sandbox can open without CAP_NET_ADMIN, lo's traffic counters and the SNMP MIBs (any
// packet moves them), links, addresses and routes. TCP, UDP, UDP-Lite and raw sockets are counted
// from sockstat instead of listed: their /proc/net lists walk the host-wide hash tables (TCP 0.8 ms
// each, measured; the four UDP lists were 0.2 ms of the 0.75 ms check per sandbox, perf) and
// sockstat's in-use counts are the namespace's own, of the same hashed sockets the lists show.
// Ping sockets (icmp, icmp6) have no count there and stay listed.
constexpr std::array kNetFiles = {"dev",      "snmp",  "snmp6", "netstat", "fib_trie", "ipv6_route", "if_inet6",
                                  "icmp",     "icmp6", "unix",  "packet",  "netlink"};

// sockstat's per-namespace fields only ("TCP: inuse 0 orphan 0 tw 0 alloc 0 mem 0" keeps inuse and
// tw; "sockets: used", orphan, alloc and mem count the whole host).
std::string own_socket_counts(std::string_view text) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    auto colon = line.find(':');
    if (colon == std::string_view::npos || line.starts_with("sockets")) continue;
    out.append(line.substr(0, colon));
    for (std::string_view key : {" inuse ", " tw ", " memory "}) {
      auto at = line.find(key);
      if (at == std::string_view::npos) continue;
      auto end = line.find(' ', at + key.size());
      out.append(line.substr(at, (end == std::string_view::npos ? line.size() : end) - at));
    }
    out += '\n';
  }
  return out;
}

// Must run on a thread inside the namespace: /proc/thread-self/net is the calling thread's. Opened
// once and its files relative to it: the absolute path walked /proc and the thread's directory
// again for each file. A file the kernel lacks (no IPv6) is left out of snapshot and check alike.
Result<std::string> read_net_state() {
  std::string out;
  UniqueFd dir(::open("/proc/thread-self/net", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return fail_errno("open", "/proc/thread-self/net");
  auto read = [&](const char* name) -> std::optional<std::string> {
    UniqueFd fd(::openat(dir.get(), name, O_RDONLY | O_CLOEXEC));
    if (!fd) return std::nullopt;
    auto text = fs::read_fd(fd.get(), name);
    return text ? std::optional(std::move(*text)) : std::nullopt;
  };
  for (const char* name : kNetFiles) {
    out += name;
    out += '\n';
    if (auto text = read(name)) out += *text;
  }
  for (const char* name : {"sockstat", "sockstat6"})
    if (auto text = read(name)) out += own_socket_counts(*text);
  return out;
}

}  // namespace

Result<ThreadInNetns> ThreadInNetns::enter(int netns_fd) {
  ThreadInNetns t;
  t.own_.reset(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!t.own_) return fail_errno("open own network namespace");
  if (::setns(netns_fd, CLONE_NEWNET) != 0) return fail_errno("enter recycled network namespace");
  return t;
}

Result<> ThreadInNetns::leave() {
  if (!own_) return {};
  if (::setns(own_.get(), CLONE_NEWNET) != 0) return fail_errno("return to own network namespace");
  own_.reset();
  return {};
}

ThreadInNetns::~ThreadInNetns() {
  // Staying in a sandbox's namespace would silently break everything this thread does after.
  if (own_ && !leave()) std::abort();
}

Result<PristineNetns> make_pristine_netns() {
  UniqueFd own(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!own) return fail_errno("open own network namespace");
  // unshare(CLONE_NEWNET) moves only the calling thread.
  if (::unshare(CLONE_NEWNET) != 0) return fail_errno("create network namespace");
  PristineNetns ns;
  ns.fd.reset(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  int open_errno = errno;
  if (::setns(own.get(), CLONE_NEWNET) != 0) std::abort();  // see ~ThreadInNetns
  if (!ns.fd) return fail_errno("open new network namespace", {}, open_errno);
  FNEXEC_TRY(bring_up_loopback(ns.fd.get()));
  auto inside = FNEXEC_TRY(ThreadInNetns::enter(ns.fd.get()));
  ns.snapshot = FNEXEC_TRY(read_net_state());
  FNEXEC_TRY(inside.leave());
  return ns;
}

Result<bool> netns_is_pristine(const PristineNetns& ns) {
  auto inside = FNEXEC_TRY(ThreadInNetns::enter(ns.fd.get()));
  auto state = FNEXEC_TRY(read_net_state());
  bool same = state == ns.snapshot;
  FNEXEC_TRY(inside.leave());
  return same;
}

bool may_share_recycled_netns(const Privileges& p) {
  constexpr uint64_t kConfigures =
      (uint64_t{1} << CAP_NET_ADMIN) | (uint64_t{1} << CAP_SYS_ADMIN) | (uint64_t{1} << CAP_BPF);
  return (p.bounding & kConfigures) == 0;
}

Result<PristineNetns> NetnsPool::acquire() {
  {
    std::lock_guard lock(mutex_);
    if (!free_.empty()) {
      // Oldest first, so every namespace on the list is used in turn.
      PristineNetns ns = std::move(free_.front());
      free_.pop_front();
      ++stats_.reused;
      return ns;
    }
  }
  auto ns = FNEXEC_TRY(make_pristine_netns());
  std::lock_guard lock(mutex_);
  ++stats_.made;
  return ns;
}

void NetnsPool::release(PristineNetns ns) {
  auto pristine = netns_is_pristine(ns);
  std::lock_guard lock(mutex_);
  if (!pristine || !*pristine) {
    ++stats_.dropped_dirty;
    return;  // closing the last fd lets the kernel destroy it
  }
  if (free_.size() < max_free_) free_.push_back(std::move(ns));
}

NetnsPool::Stats NetnsPool::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace fnexec::sandbox
