// Links, addresses and routes through libnl-route (netlink): the bridge, a sandbox's veth pair
// and the sandbox side's address and default route.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "net/address.h"
#include "net/netlink_socket.h"
#include "util/error.h"

struct nl_addr;

namespace fnexec::net {

class Netlink {
 public:
  // A NETLINK_ROUTE socket in our own network namespace.
  static Result<Netlink> connect();
  // A socket in the network namespace of the process behind pidfd: a socket's namespace is fixed
  // when it is created, so this thread enters that namespace only for socket() and comes back.
  static Result<Netlink> connect_in(int pidfd);

  // 0 when there is no such link.
  Result<int> ifindex(const std::string& name);
  // The bridge NAME with address GATEWAY/PREFIX, up; made when missing. A new bridge's subnet
  // must not overlap a route the host already has.
  Result<int> ensure_bridge(const std::string& name, uint32_t gateway, const Ipv4Net& subnet);
  // Fails naming the route when a route of the main table (other than the default) overlaps subnet.
  Result<> check_no_route_overlap(const Ipv4Net& subnet);
  // A veth pair: HOST_NAME here, attached to the bridge as an isolated port (no traffic to other
  // isolated ports, that is, to other sandboxes) and up; PEER_NAME in the network namespace of pid.
  Result<> add_veth(const std::string& host_name, const std::string& peer_name, pid_t pid,
                    int bridge_ifindex);
  // Removes a link; a link that is already gone is fine.
  Result<> delete_link(const std::string& name);
  // An IPv6 address on a link without duplicate address detection (usable at once; the subnet is
  // ours, so nobody else holds it).
  Result<> add_address6(int ifindex, const std::array<uint8_t, 16>& address, int prefix);
  // In a sandbox's namespace: lo and NAME up, ADDRESS/PREFIX on NAME, default route via gateway;
  // the same for IPv6 when v6 is given.
  struct Ipv6Interface {
    std::array<uint8_t, 16> address, gateway;
    int prefix;
  };
  Result<> configure_interface(const std::string& name, uint32_t address, int prefix, uint32_t gateway,
                               const std::optional<Ipv6Interface>& v6 = std::nullopt);

 private:
  explicit Netlink(NlSocket sock) : sock_(std::move(sock)) {}
  Result<> set_up(int ifindex, int master = 0);
  Result<> add_address(int ifindex, uint32_t address, int prefix);
  // Adds LOCAL (address and prefix) to the link; one already there is fine. SHOWN names it in errors.
  Result<> add_local_address(int ifindex, nl_addr* local, unsigned flags, const std::string& shown);
  Result<> add_default_route(int family, nl_addr* gateway, int ifindex);
  Result<> set_port_isolated(int ifindex);
  Result<> check_bridge_subnet(const std::string& name, int index, uint32_t gateway, const Ipv4Net& subnet);
  NlSocket sock_;
};

}  // namespace fnexec::net
