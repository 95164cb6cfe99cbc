// A sandbox on the bridge: its address lease, veth pair, egress chain and generated /etc files,
// each undone by the destructor. Made in two steps around Sandbox::launch: prepare() before
// (the lease decides /etc/hosts, which is mounted by the sandbox's setup), connect() after, while
// the sandbox is parked (so a pool pays for it before the invocation, not during).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "net/address.h"
#include "net/lease.h"
#include "net/link.h"
#include "net/nft_elements.h"
#include "net/traffic.h"
#include "sandbox/spec.h"
#include "util/error.h"

namespace fnexec::net {

// IPv6 is opt-in: giving the bridge a subnet turns on the host's IPv6 forwarding, and a host that
// takes its own address from router advertisements (accept_ra=1) then ignores them.
constexpr const char* kNoSubnet6 = "none";

struct BridgeConfig {
  std::string bridge = "fnexec0";
  Ipv4Net subnet{0x0A570000u, 16};  // 10.87.0.0/16
  // The bridge's IPv6 subnet (none by default: IPv4 only). A sandbox's IPv6 address has the host
  // part of its IPv4 lease; the gateway is the subnet's first address.
  std::optional<Ipv6Net> subnet6;
  std::vector<std::string> dns;     // empty: the host's non-loopback nameservers
  std::vector<HostEntry> extra_hosts;
  EgressPolicy egress;
  std::filesystem::path state_dir = "/run/fnexec/net";
};

// --bridge-subnet6 / bridge_subnet6: an IPv6 CIDR of /96 or larger, or none.
Result<std::optional<Ipv6Net>> parse_bridge_subnet6(std::string_view text);

// Fails when the bridge name is no valid interface name.
Result<> check_bridge_name(const std::string& name);

class Attachment {
 public:
  // Takes the bridge lock, removes what dead owners left, makes the bridge and fnexec's nftables
  // chains for it when missing, leases an address and writes /etc/hosts and /etc/resolv.conf.
  static Result<Attachment> prepare(const BridgeConfig& config, const std::string& hostname);
  Attachment(Attachment&&) noexcept;
  Attachment& operator=(Attachment&&) = delete;
  ~Attachment();

  // Read-only binds of the generated /etc/hosts and /etc/resolv.conf, for the SandboxSpec.
  std::vector<sandbox::Volume> volumes() const;
  // The veth pair (eth0 in the sandbox, isolated bridge port outside), the sandbox's address and
  // default route, and its egress chain. pid/pidfd: the sandbox's PID 1, parked before go.
  Result<> connect(pid_t pid, int pidfd);
  // The counters of the sandbox's eth0 (frames, ARP included), readable until the Attachment is
  // destroyed, also after the sandbox's processes are gone; without the rtnl lock.
  Result<TrafficCounters> counters() const;

  uint32_t address() const;
  // The sandbox's IPv6 address, when the bridge has an IPv6 subnet.
  std::optional<std::array<uint8_t, 16>> address6() const;
  const std::string& host_veth() const { return veth_; }

 private:
  Attachment() = default;
  void teardown();
  BridgeConfig config_;
  // Kept from prepare() to teardown.
  std::optional<Netlink> netlink_;
  std::optional<NftElements> elements_;
  std::optional<Lease> lease_;
  std::optional<std::filesystem::path> etc_dir_;  // the generated hosts and resolv.conf
  // From connect(); it holds the sandbox's network namespace, and with it the veth pair.
  std::optional<NamespaceTraffic> traffic_;
  std::string veth_;
};

// Removes the veths, nftables chains and lease files that dead fnexec processes left on a bridge
// (daemon start-up; Attachment::prepare does it too); returns how many sandboxes' worth. Nothing
// is loaded or made when the bridge has no state directory (no fnexec ever used it).
Result<size_t> clean_stale(const BridgeConfig& config);

}  // namespace fnexec::net
