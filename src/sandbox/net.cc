#include "sandbox/net.h"

#include <fcntl.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <sched.h>

#include <memory>

#include "util/unique_fd.h"

namespace fnexec::sandbox {

namespace {

struct SocketFree {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct LinkPut {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};

}  // namespace

Result<> bring_up_loopback(int pidfd) {
  UniqueFd own(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!own) return fail_errno("open own network namespace");
  std::unique_ptr<nl_sock, SocketFree> sock(nl_socket_alloc());
  if (!sock) return fail(ErrorKind::internal, "allocate netlink socket");

  // setns with a pidfd (Linux >= 5.8) saves opening /proc/PID/ns/net.
  if (::setns(pidfd, CLONE_NEWNET) != 0) return fail_errno("enter network namespace of sandbox");
  int rc = nl_connect(sock.get(), NETLINK_ROUTE);
  if (::setns(own.get(), CLONE_NEWNET) != 0) {
    // Staying in the sandbox's namespace would silently break everything after: fail hard.
    return fail_errno("return to own network namespace");
  }
  if (rc < 0) return fail(ErrorKind::internal, "connect netlink socket in sandbox", {}, nl_geterror(rc));

  std::unique_ptr<rtnl_link, LinkPut> lo(rtnl_link_alloc()), change(rtnl_link_alloc());
  if (!lo || !change) return fail(ErrorKind::internal, "allocate netlink link");
  rtnl_link_set_ifindex(lo.get(), 1);  // lo is always index 1 in a new network namespace
  rtnl_link_set_name(lo.get(), "lo");
  rtnl_link_set_flags(change.get(), IFF_UP);
  rc = rtnl_link_change(sock.get(), lo.get(), change.get(), 0);
  if (rc < 0) return fail(ErrorKind::internal, "bring up lo in sandbox", {}, nl_geterror(rc));
  return {};
}

}  // namespace fnexec::sandbox
