// IPv4 and IPv6 networks and egress rules as the user writes them (CIDR, CIDR:PORT, [V6CIDR]:PORT):
// parsing, arithmetic and the nftables rule text of an egress policy. Pure functions, no kernel calls.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace fnexec::net {

// An IPv4 network in host byte order; address holds the network with host bits cleared.
struct Ipv4Net {
  uint32_t address = 0;
  int prefix = 32;

  uint32_t mask() const { return prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix); }
  uint32_t broadcast() const { return address | ~mask(); }
  bool contains(uint32_t ip) const { return (ip & mask()) == address; }
  bool contains(const Ipv4Net& other) const { return other.prefix >= prefix && contains(other.address); }
  bool overlaps(const Ipv4Net& other) const { return contains(other.address) || other.contains(address); }
  std::string to_string() const;  // "10.87.0.0/16"
  bool operator==(const Ipv4Net&) const = default;
};

Result<uint32_t> parse_ipv4(std::string_view text);
std::string format_ipv4(uint32_t ip);
// "10.0.0.0/8", or a bare address as /32. Host bits set ("10.0.0.1/8") are refused: they are
// almost always a typo for another network.
Result<Ipv4Net> parse_ipv4_net(std::string_view text);

// An IPv6 network; address holds the network with host bits cleared (network byte order).
struct Ipv6Net {
  std::array<uint8_t, 16> address{};
  int prefix = 128;

  bool contains(const std::array<uint8_t, 16>& ip) const;
  bool contains(const Ipv6Net& other) const { return other.prefix >= prefix && contains(other.address); }
  // The address OFFSET after the network's first one (offset 1: the gateway).
  std::array<uint8_t, 16> host(uint32_t offset) const;
  std::string to_string() const;  // "fd87:6e78:ec00::/64"
  bool operator==(const Ipv6Net&) const = default;
};

Result<std::array<uint8_t, 16>> parse_ipv6(std::string_view text);
std::string format_ipv6(const std::array<uint8_t, 16>& ip);
// "fd00::/8", or a bare address as /128; host bits set are refused as for IPv4.
Result<Ipv6Net> parse_ipv6_net(std::string_view text);
// An address of either family in its canonical text ("10.0.0.1", "fd00::1").
Result<std::string> parse_ip_text(std::string_view text);

// CIDR[:PORT] or an IPv6 CIDR, bracketed when it has a port ([fd00::/8]:443): one destination of
// --egress-allow / --egress-deny; a port applies to TCP and UDP.
struct EgressRule {
  Ipv4Net destination;                  // IPv4 rules
  std::optional<Ipv6Net> destination6;  // set for an IPv6 rule (destination unused)
  std::optional<uint16_t> port;
  bool operator==(const EgressRule&) const = default;
};
Result<EgressRule> parse_egress_rule(std::string_view text);

enum class EgressDefault { allow, deny };
Result<EgressDefault> parse_egress_default(std::string_view text);

struct EgressPolicy {
  std::vector<EgressRule> allow, deny;
  EgressDefault fallback = EgressDefault::allow;
};

// Destinations a sandbox never reaches unless an allow rule names them (or a network inside them)
// explicitly: link-local (cloud metadata at 169.254.169.254) and the sandbox subnet itself
// (other sandboxes). The host's own addresses are refused by a `fib daddr type local` rule.
std::vector<Ipv4Net> always_denied(const Ipv4Net& subnet);
// The same for IPv6: link-local fe80::/10, the metadata address fd00:ec2::254 and the bridge's
// IPv6 subnet when it has one.
std::vector<Ipv6Net> always_denied6(const std::optional<Ipv6Net>& subnet6);

// The body of a sandbox's egress chain, one nftables rule per line, first match wins:
// deny rules; allow rules inside an always-denied range; the always-denied ranges; allow rules for
// one address (/32, /128); the host's own addresses; the other allow rules; the default.
std::vector<std::string> egress_chain_rules(const EgressPolicy& policy, const Ipv4Net& subnet,
                                            const std::optional<Ipv6Net>& subnet6 = std::nullopt);

}  // namespace fnexec::net

namespace fnexec::net {

// NAME:IP of --add-host (IPv4 or IPv6: NAME:fd00::1), an /etc/hosts line in the sandbox.
struct HostEntry {
  std::string name;
  std::string address;  // canonical text
};
Result<HostEntry> parse_host_entry(std::string_view text);

}  // namespace fnexec::net

namespace fnexec::net {

// A sandbox's network settings as the user writes them (`fnexec run` flags, a function document).
struct NetworkSettingsText {
  std::vector<std::string> dns, add_hosts, egress_allow, egress_deny;
  std::string egress_default = "allow";
};
struct NetworkSettings {
  std::vector<std::string> dns;  // canonical text, IPv4 or IPv6
  std::vector<HostEntry> extra_hosts;
  EgressPolicy egress;
};
// Each entry parsed; the first bad one fails, naming itself.
Result<NetworkSettings> parse_network_settings(const NetworkSettingsText& text);

}  // namespace fnexec::net
