// Network namespaces recycled between sandboxes. Creating one (copy_net_ns) and the kernel's
// deferred cleanup_net when its last reference goes are a fixed cost per sandbox; a namespace whose
// sandbox left it exactly as it got it can serve the next one instead.
//
// What a dead sandbox can leave in a network namespace once its processes are gone, and how each is
// handled (docs/ARCHITECTURE.md, "Recycled network namespaces"):
//   - sockets outliving their processes (TIME_WAIT, orphaned FIN_WAIT, unix sockets kept alive in
//     flight, a listener the daemon made for the Lambda API), abstract unix names and SO_REUSEPORT
//     groups (both live only as long as a socket): listed in /proc/net/{udp,raw,unix,packet,...}
//     or counted in sockstat (TCP), so a namespace with any socket left is not recycled;
//   - per-namespace memory of past traffic (tcp_metrics, conntrack, neighbour entries, lo's and the
//     SNMP counters): needs a packet, and every packet moves lo's counters, which cannot be reset,
//     so a namespace whose sandbox sent anything is not recycled;
//   - links, addresses, routes, rules, netfilter tables and BPF programs: need CAP_NET_ADMIN or
//     CAP_SYS_ADMIN over the namespace (owned by the host's user namespace), so sandboxes holding
//     either in their bounding set never get a recycled namespace; the route and address tables are
//     compared anyway;
//   - net.* sysctls: the sandbox's /proc/sys is read-only and it cannot remount without
//     CAP_SYS_ADMIN.
// The check compares the namespace's /proc/net files with the snapshot taken when it was made.
#pragma once

#include <deque>
#include <mutex>
#include <string>
#include <utility>

#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::sandbox {

struct Privileges;

// One network namespace with lo up, as a fresh sandbox's, and what it looked like when made.
struct PristineNetns {
  UniqueFd fd;            // /proc/thread-self/ns/net of the namespace
  std::string snapshot;   // /proc/net state right after lo came up
};

// Makes a namespace holding only lo, up: unshare on this thread, bring lo up, snapshot, go back.
Result<PristineNetns> make_pristine_netns();

// Whether the namespace is exactly as its snapshot says (no socket, no packet, no change); an
// Error when it cannot be read (then it is not reused either).
Result<bool> netns_is_pristine(const PristineNetns& ns);

// Whether a sandbox with these privileges may be given a recycled namespace: it must not be able
// to change the namespace's configuration (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF absent from its
// bounding set).
bool may_share_recycled_netns(const Privileges& p);

// Thread-safe free list. acquire() hands out a recycled namespace or makes a new one; release()
// takes one back after its sandbox is gone (reaped), checks it and keeps it if pristine.
class NetnsPool {
 public:
  explicit NetnsPool(size_t max_free = 64) : max_free_(max_free) {}
  Result<PristineNetns> acquire();
  void release(PristineNetns ns);

  struct Stats {
    uint64_t made = 0, reused = 0, dropped_dirty = 0;
  };
  Stats stats() const;

 private:
  mutable std::mutex mutex_;
  std::deque<PristineNetns> free_;
  size_t max_free_;
  Stats stats_;
};

// A namespace lent to one sandbox: give it back with release() when destroyed, which must happen
// after the sandbox's PID 1 was reaped (its pid namespace is then empty).
class NetnsLease {
 public:
  NetnsLease() = default;
  NetnsLease(NetnsPool* pool, PristineNetns ns) : pool_(pool), ns_(std::move(ns)) {}
  NetnsLease(NetnsLease&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)), ns_(std::move(o.ns_)) {}
  NetnsLease& operator=(NetnsLease&& o) noexcept {
    if (this != &o) {
      if (pool_) pool_->release(std::move(ns_));
      pool_ = std::exchange(o.pool_, nullptr);
      ns_ = std::move(o.ns_);
    }
    return *this;
  }
  ~NetnsLease() {
    if (pool_) pool_->release(std::move(ns_));
  }
  int fd() const { return ns_.fd.get(); }

 private:
  NetnsPool* pool_ = nullptr;
  PristineNetns ns_;
};

// Runs the calling thread in another network namespace until destroyed (setns is per thread), so a
// clone made meanwhile starts there. Fails hard if it cannot switch back.
class ThreadInNetns {
 public:
  static Result<ThreadInNetns> enter(int netns_fd);
  ThreadInNetns(ThreadInNetns&&) noexcept = default;
  ~ThreadInNetns();
  Result<> leave();

 private:
  ThreadInNetns() = default;
  UniqueFd own_;
};

}  // namespace fnexec::sandbox
