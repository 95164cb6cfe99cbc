#include "net/link.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>
#include <sched.h>

#include <cstring>

#include "util/unique_fd.h"

namespace fnexec::net {

namespace {

template <class T, void (*F)(T*)>
struct Put {
  void operator()(T* p) const { F(p); }
};
using LinkPtr = std::unique_ptr<rtnl_link, Put<rtnl_link, rtnl_link_put>>;
using AddrPtr = std::unique_ptr<rtnl_addr, Put<rtnl_addr, rtnl_addr_put>>;
using NlAddrPtr = std::unique_ptr<nl_addr, Put<nl_addr, nl_addr_put>>;
using RoutePtr = std::unique_ptr<rtnl_route, Put<rtnl_route, rtnl_route_put>>;
using CachePtr = std::unique_ptr<nl_cache, Put<nl_cache, nl_cache_free>>;

std::unexpected<Error> nl_fail(std::string what, std::string on, int rc) {
  return fail(ErrorKind::internal, std::move(what), std::move(on), nl_geterror(rc));
}

NlAddrPtr ipv4_addr(uint32_t ip, int prefix) {
  uint32_t be = htonl(ip);
  NlAddrPtr a(nl_addr_build(AF_INET, &be, sizeof be));
  if (a) nl_addr_set_prefixlen(a.get(), prefix);
  return a;
}

NlAddrPtr ipv6_addr(const std::array<uint8_t, 16>& ip, int prefix) {
  NlAddrPtr a(nl_addr_build(AF_INET6, ip.data(), ip.size()));
  if (a) nl_addr_set_prefixlen(a.get(), prefix);
  return a;
}

}  // namespace

Result<Netlink> Netlink::connect() {
  auto sock = connect_netlink(NETLINK_ROUTE, "netlink socket");
  if (!sock) return std::unexpected(sock.error());
  return Netlink(std::move(*sock));
}

Result<Netlink> Netlink::connect_in(int pidfd) {
  UniqueFd own(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!own) return fail_errno("open own network namespace");
  if (::setns(pidfd, CLONE_NEWNET) != 0) return fail_errno("enter network namespace of sandbox");
  auto sock = connect_netlink(NETLINK_ROUTE, "netlink socket in sandbox");
  // Staying in the sandbox's namespace would silently break everything after: fail hard.
  if (::setns(own.get(), CLONE_NEWNET) != 0) return fail_errno("return to own network namespace");
  if (!sock) return std::unexpected(sock.error());
  return Netlink(std::move(*sock));
}

Result<int> Netlink::ifindex(const std::string& name) {
  rtnl_link* raw = nullptr;
  int rc = rtnl_link_get_kernel(sock_.get(), 0, name.c_str(), &raw);
  LinkPtr link(raw);
  if (rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NODEV) return 0;
  if (rc < 0) return nl_fail("look up link", name, rc);
  return rtnl_link_get_ifindex(link.get());
}

Result<> Netlink::check_no_route_overlap(const Ipv4Net& subnet) {
  nl_cache* raw = nullptr;
  if (int rc = rtnl_route_alloc_cache(sock_.get(), AF_INET, 0, &raw); rc < 0)
    return nl_fail("list routes", {}, rc);
  CachePtr cache(raw);
  for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
    auto* route = reinterpret_cast<rtnl_route*>(o);
    if (rtnl_route_get_table(route) != RT_TABLE_MAIN) continue;
    nl_addr* dst = rtnl_route_get_dst(route);
    if (!dst || nl_addr_get_prefixlen(dst) == 0 || nl_addr_get_len(dst) != 4) continue;
    uint32_t be;
    std::memcpy(&be, nl_addr_get_binary_addr(dst), 4);
    Ipv4Net existing{ntohl(be), static_cast<int>(nl_addr_get_prefixlen(dst))};
    existing.address &= existing.mask();
    if (existing.overlaps(subnet))
      return fail(
          ErrorKind::exists, "use bridge subnet", subnet.to_string(),
          "it overlaps the host's route to " + existing.to_string() + "; choose another --bridge-subnet");
  }
  return {};
}

Result<> Netlink::set_up(int ifindex, int master) {
  LinkPtr link(rtnl_link_alloc()), change(rtnl_link_alloc());
  if (!link || !change) return fail(ErrorKind::internal, "allocate netlink link");
  rtnl_link_set_ifindex(link.get(), ifindex);
  rtnl_link_set_flags(change.get(), IFF_UP);
  if (master) rtnl_link_set_master(change.get(), master);
  if (int rc = rtnl_link_change(sock_.get(), link.get(), change.get(), 0); rc < 0)
    return nl_fail("bring up link", std::to_string(ifindex), rc);
  return {};
}

Result<> Netlink::add_local_address(int ifindex, nl_addr* local, unsigned flags, const std::string& shown) {
  AddrPtr addr(rtnl_addr_alloc());
  if (!addr || !local) return fail(ErrorKind::internal, "allocate netlink address");
  rtnl_addr_set_ifindex(addr.get(), ifindex);
  rtnl_addr_set_family(addr.get(), nl_addr_get_family(local));
  rtnl_addr_set_local(addr.get(), local);
  if (flags) rtnl_addr_set_flags(addr.get(), flags);
  int rc = rtnl_addr_add(sock_.get(), addr.get(), 0);
  if (rc < 0 && rc != -NLE_EXIST) return nl_fail("add address", shown, rc);
  return {};
}

Result<> Netlink::add_address(int ifindex, uint32_t address, int prefix) {
  return add_local_address(ifindex, ipv4_addr(address, prefix).get(), 0, format_ipv4(address));
}

Result<> Netlink::add_address6(int ifindex, const std::array<uint8_t, 16>& address, int prefix) {
  // Without duplicate address detection the address is usable at once, not after DAD's delay.
  return add_local_address(ifindex, ipv6_addr(address, prefix).get(), IFA_F_NODAD, format_ipv6(address));
}

Result<> Netlink::set_port_isolated(int ifindex) {
  // libnl 3.7 has no setter for IFLA_BRPORT_ISOLATED, so the AF_BRIDGE RTM_SETLINK is built here.
  nl_msg* msg = nlmsg_alloc_simple(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK);
  if (!msg) return fail(ErrorKind::internal, "allocate netlink message");
  ifinfomsg ifi{};
  ifi.ifi_family = AF_BRIDGE;
  ifi.ifi_index = ifindex;
  nlattr* protinfo = nullptr;
  if (nlmsg_append(msg, &ifi, sizeof ifi, NLMSG_ALIGNTO) < 0 ||
      !(protinfo = nla_nest_start(msg, IFLA_PROTINFO | NLA_F_NESTED)) ||
      nla_put_u8(msg, IFLA_BRPORT_ISOLATED, 1) < 0 || nla_nest_end(msg, protinfo) < 0) {
    nlmsg_free(msg);
    return fail(ErrorKind::internal, "build bridge port message");
  }
  if (int rc = nl_send_sync(sock_.get(), msg); rc < 0)  // frees msg
    return nl_fail("isolate bridge port", std::to_string(ifindex), rc);
  return {};
}

Result<> Netlink::check_bridge_subnet(const std::string& name, int index, uint32_t gateway,
                                      const Ipv4Net& subnet) {
  nl_cache* raw = nullptr;
  if (int rc = rtnl_addr_alloc_cache(sock_.get(), &raw); rc < 0) return nl_fail("list addresses", name, rc);
  CachePtr cache(raw);
  std::string found;
  for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
    auto* addr = reinterpret_cast<rtnl_addr*>(o);
    nl_addr* local = rtnl_addr_get_local(addr);
    if (rtnl_addr_get_ifindex(addr) != index || rtnl_addr_get_family(addr) != AF_INET || !local) continue;
    uint32_t be;
    std::memcpy(&be, nl_addr_get_binary_addr(local), 4);
    if (ntohl(be) == gateway && rtnl_addr_get_prefixlen(addr) == subnet.prefix) return {};
    found = format_ipv4(ntohl(be)) + "/" + std::to_string(rtnl_addr_get_prefixlen(addr));
  }
  // A bridge without an IPv4 address gets ours; one with another subnet is someone else's choice.
  if (found.empty()) return {};
  return fail(ErrorKind::exists, "use bridge", name,
              "it exists with address " + found + ", not in --bridge-subnet " + subnet.to_string() +
                  "; pass its subnet or another --bridge");
}

Result<int> Netlink::ensure_bridge(const std::string& name, uint32_t gateway, const Ipv4Net& subnet) {
  int index = FNEXEC_TRY(ifindex(name));
  if (index != 0) FNEXEC_TRY(check_bridge_subnet(name, index, gateway, subnet));
  if (index == 0) {
    FNEXEC_TRY(check_no_route_overlap(subnet));
    if (int rc = rtnl_link_bridge_add(sock_.get(), name.c_str()); rc < 0 && rc != -NLE_EXIST)
      return nl_fail("create bridge", name, rc);
    index = FNEXEC_TRY(ifindex(name));
    if (index == 0) return fail(ErrorKind::internal, "create bridge", name, "it vanished after creation");
  }
  FNEXEC_TRY(add_address(index, gateway, subnet.prefix));
  FNEXEC_TRY(set_up(index));
  return index;
}

Result<> Netlink::add_veth(const std::string& host_name, const std::string& peer_name, pid_t pid,
                           int bridge_ifindex) {
  int rc = rtnl_link_veth_add(sock_.get(), host_name.c_str(), peer_name.c_str(), pid);
  if (rc == -NLE_EXIST) {
    // The previous holder of this address ended, and the kernel has not yet deleted its veth
    // with its namespace (that runs in a work queue): delete it now and retry once.
    FNEXEC_TRY(delete_link(host_name));
    rc = rtnl_link_veth_add(sock_.get(), host_name.c_str(), peer_name.c_str(), pid);
  }
  if (rc < 0) return nl_fail("create veth pair", host_name, rc);
  int index = FNEXEC_TRY(ifindex(host_name));
  if (index == 0)
    return fail(ErrorKind::internal, "create veth pair", host_name, "host end missing after creation");
  FNEXEC_TRY(set_up(index, bridge_ifindex));
  FNEXEC_TRY(set_port_isolated(index));
  return {};
}

Result<> Netlink::delete_link(const std::string& name) {
  LinkPtr link(rtnl_link_alloc());
  if (!link) return fail(ErrorKind::internal, "allocate netlink link");
  rtnl_link_set_name(link.get(), name.c_str());
  int rc = rtnl_link_delete(sock_.get(), link.get());
  if (rc < 0 && rc != -NLE_OBJ_NOTFOUND && rc != -NLE_NODEV) return nl_fail("delete link", name, rc);
  return {};
}

Result<> Netlink::add_default_route(int family, nl_addr* gateway, int ifindex) {
  RoutePtr route(rtnl_route_alloc());
  auto any = family == AF_INET ? ipv4_addr(0, 0) : ipv6_addr({}, 0);
  NlAddrPtr via(nl_addr_clone(gateway));
  rtnl_nexthop* hop = rtnl_route_nh_alloc();
  if (!route || !any || !via || !hop) {
    if (hop) rtnl_route_nh_free(hop);
    return fail(ErrorKind::internal, "allocate netlink route");
  }
  rtnl_route_set_family(route.get(), static_cast<uint8_t>(family));
  rtnl_route_set_dst(route.get(), any.get());
  rtnl_route_nh_set_gateway(hop, via.get());
  rtnl_route_nh_set_ifindex(hop, ifindex);
  rtnl_route_add_nexthop(route.get(), hop);  // the route owns hop from here
  if (int rc = rtnl_route_add(sock_.get(), route.get(), 0); rc < 0)
    return nl_fail(family == AF_INET ? "add default route in sandbox" : "add IPv6 default route in sandbox",
                   {}, rc);
  return {};
}

Result<> Netlink::configure_interface(const std::string& name, uint32_t address, int prefix, uint32_t gateway,
                                      const std::optional<Ipv6Interface>& v6) {
  FNEXEC_TRY(set_up(1));  // lo is always index 1 in a new network namespace
  int index = FNEXEC_TRY(ifindex(name));
  if (index == 0) return fail(ErrorKind::internal, "configure sandbox interface", name, "not in the sandbox");
  FNEXEC_TRY(add_address(index, address, prefix));
  if (v6) FNEXEC_TRY(add_address6(index, v6->address, v6->prefix));
  FNEXEC_TRY(set_up(index));
  auto via = ipv4_addr(gateway, 32);
  if (!via) return fail(ErrorKind::internal, "allocate netlink address");
  FNEXEC_TRY(add_default_route(AF_INET, via.get(), index));
  if (v6) {
    auto via6 = ipv6_addr(v6->gateway, 128);
    if (!via6) return fail(ErrorKind::internal, "allocate netlink address");
    FNEXEC_TRY(add_default_route(AF_INET6, via6.get(), index));
  }
  return {};
}

}  // namespace fnexec::net
