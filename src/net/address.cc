#include "net/address.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

namespace fnexec::net {

namespace {

Result<unsigned> parse_number(std::string_view text, unsigned max, std::string_view what,
                              std::string_view whole) {
  unsigned n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || n > max)
    return fail(ErrorKind::invalid, "parse " + std::string(what), std::string(whole),
                "expected a number from 0 to " + std::to_string(max));
  return n;
}

std::string rule_match(const EgressRule& r) {
  std::string m = r.destination6 ? "ip6 daddr " + r.destination6->to_string() : "ip daddr " + r.destination.to_string();
  if (r.port) m += " meta l4proto { tcp, udp } th dport " + std::to_string(*r.port);
  return m;
}

bool inside_always_denied(const EgressRule& r, const std::vector<Ipv4Net>& denied,
                          const std::vector<Ipv6Net>& denied6) {
  if (r.destination6) {
    for (const auto& d : denied6)
      if (d.contains(*r.destination6)) return true;
    return false;
  }
  for (const auto& d : denied)
    if (d.contains(r.destination)) return true;
  return false;
}

bool single_address(const EgressRule& r) {
  return r.destination6 ? r.destination6->prefix == 128 : r.destination.prefix == 32;
}

}  // namespace

std::string Ipv4Net::to_string() const {
  return format_ipv4(address) + "/" + std::to_string(prefix);
}

Result<uint32_t> parse_ipv4(std::string_view text) {
  in_addr a{};
  std::string s(text);
  if (::inet_pton(AF_INET, s.c_str(), &a) != 1)
    return fail(ErrorKind::invalid, "parse IPv4 address", s, "expected four numbers like 10.87.0.1");
  return ntohl(a.s_addr);
}

std::string format_ipv4(uint32_t ip) {
  char buf[INET_ADDRSTRLEN];
  in_addr a{htonl(ip)};
  ::inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

Result<Ipv4Net> parse_ipv4_net(std::string_view text) {
  auto slash = text.find('/');
  Ipv4Net net;
  auto ip = parse_ipv4(text.substr(0, slash));
  if (!ip)
    return fail(ErrorKind::invalid, "parse CIDR", std::string(text),
                "expected ADDRESS/PREFIX like 10.87.0.0/16");
  if (slash != std::string_view::npos)
    net.prefix = static_cast<int>(FNEXEC_TRY(parse_number(text.substr(slash + 1), 32, "CIDR prefix", text)));
  net.address = *ip & net.mask();
  if (net.address != *ip)
    return fail(ErrorKind::invalid, "parse CIDR", std::string(text),
                "host bits are set; the network is " + net.to_string());
  return net;
}

bool Ipv6Net::contains(const std::array<uint8_t, 16>& ip) const {
  for (int bit = 0; bit < prefix; bit += 8) {
    int bits = std::min(8, prefix - bit);
    uint8_t mask = static_cast<uint8_t>(0xFF << (8 - bits));
    if ((ip[bit / 8] & mask) != address[bit / 8]) return false;
  }
  return true;
}

std::array<uint8_t, 16> Ipv6Net::host(uint32_t offset) const {
  auto ip = address;
  for (int i = 15; i >= 12; --i, offset >>= 8) ip[i] = static_cast<uint8_t>(ip[i] | (offset & 0xFF));
  return ip;
}

std::string Ipv6Net::to_string() const {
  return format_ipv6(address) + "/" + std::to_string(prefix);
}

Result<std::array<uint8_t, 16>> parse_ipv6(std::string_view text) {
  std::array<uint8_t, 16> a{};
  std::string s(text);
  if (::inet_pton(AF_INET6, s.c_str(), a.data()) != 1)
    return fail(ErrorKind::invalid, "parse IPv6 address", s, "expected an address like fd00::1");
  return a;
}

std::string format_ipv6(const std::array<uint8_t, 16>& ip) {
  char buf[INET6_ADDRSTRLEN];
  ::inet_ntop(AF_INET6, ip.data(), buf, sizeof buf);
  return buf;
}

Result<Ipv6Net> parse_ipv6_net(std::string_view text) {
  auto slash = text.find('/');
  Ipv6Net net;
  auto ip = parse_ipv6(text.substr(0, slash));
  if (!ip)
    return fail(ErrorKind::invalid, "parse CIDR", std::string(text), "expected ADDRESS/PREFIX like fd00::/8");
  if (slash != std::string_view::npos)
    net.prefix = static_cast<int>(FNEXEC_TRY(parse_number(text.substr(slash + 1), 128, "CIDR prefix", text)));
  for (int i = 0; i < 16; ++i) {
    int bits = std::clamp(net.prefix - i * 8, 0, 8);
    net.address[i] = static_cast<uint8_t>((*ip)[i] & (0xFF << (8 - bits)));
  }
  if (net.address != *ip)
    return fail(ErrorKind::invalid, "parse CIDR", std::string(text),
                "host bits are set; the network is " + net.to_string());
  return net;
}

Result<std::string> parse_ip_text(std::string_view text) {
  if (auto v4 = parse_ipv4(text)) return format_ipv4(*v4);
  if (auto v6 = parse_ipv6(text)) return format_ipv6(*v6);
  return fail(ErrorKind::invalid, "parse IP address", std::string(text), "expected an IPv4 or IPv6 address");
}

Result<EgressRule> parse_egress_rule(std::string_view text) {
  EgressRule rule;
  size_t colon = std::string_view::npos;
  if (text.starts_with('[')) {
    // [V6CIDR]:PORT
    auto close = text.find(']');
    if (close == std::string_view::npos || (close + 1 < text.size() && text[close + 1] != ':'))
      return fail(ErrorKind::invalid, "parse egress rule", std::string(text), "expected [IPV6CIDR]:PORT");
    rule.destination6 = FNEXEC_TRY(parse_ipv6_net(text.substr(1, close - 1)));
    if (close + 1 < text.size()) colon = close + 1;
  } else if (text.find(':') != text.rfind(':')) {
    rule.destination6 = FNEXEC_TRY(parse_ipv6_net(text));  // a bare IPv6 CIDR has no port
  } else {
    colon = text.find(':');
    rule.destination = FNEXEC_TRY(parse_ipv4_net(text.substr(0, colon)));
  }
  if (colon != std::string_view::npos) {
    auto port = FNEXEC_TRY(parse_number(text.substr(colon + 1), 65535, "egress port", text));
    if (port == 0)
      return fail(ErrorKind::invalid, "parse egress port", std::string(text), "port 0 matches nothing");
    rule.port = static_cast<uint16_t>(port);
  }
  return rule;
}

Result<EgressDefault> parse_egress_default(std::string_view text) {
  if (text == "allow") return EgressDefault::allow;
  if (text == "deny") return EgressDefault::deny;
  return fail(ErrorKind::invalid, "use --egress-default", std::string(text), "expected allow or deny");
}

std::vector<Ipv4Net> always_denied(const Ipv4Net& subnet) {
  return {Ipv4Net{0xA9FE0000u, 16}, subnet};  // 169.254.0.0/16
}

std::vector<Ipv6Net> always_denied6(const std::optional<Ipv6Net>& subnet6) {
  std::vector<Ipv6Net> denied{*parse_ipv6_net("fe80::/10"), *parse_ipv6_net("fd00:ec2::254")};
  if (subnet6) denied.push_back(*subnet6);
  return denied;
}

std::vector<std::string> egress_chain_rules(const EgressPolicy& policy, const Ipv4Net& subnet,
                                            const std::optional<Ipv6Net>& subnet6) {
  auto denied = always_denied(subnet);
  auto denied6 = always_denied6(subnet6);
  auto inside = [&](const EgressRule& r) { return inside_always_denied(r, denied, denied6); };
  std::vector<std::string> rules;
  for (const auto& r : policy.deny) rules.push_back(rule_match(r) + " drop");
  for (const auto& r : policy.allow)
    if (inside(r)) rules.push_back(rule_match(r) + " accept");
  for (const auto& d : denied) rules.push_back("ip daddr " + d.to_string() + " drop");
  for (const auto& d : denied6) rules.push_back("ip6 daddr " + d.to_string() + " drop");
  // A host address is reachable only through an allow rule naming that one address (/32, /128).
  for (const auto& r : policy.allow)
    if (!inside(r) && single_address(r)) rules.push_back(rule_match(r) + " accept");
  rules.push_back("fib daddr type local drop");
  for (const auto& r : policy.allow)
    if (!inside(r) && !single_address(r)) rules.push_back(rule_match(r) + " accept");
  rules.push_back(policy.fallback == EgressDefault::allow ? "accept" : "drop");
  return rules;
}

}  // namespace fnexec::net

namespace fnexec::net {

Result<HostEntry> parse_host_entry(std::string_view text) {
  auto colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0)
    return fail(ErrorKind::invalid, "parse --add-host", std::string(text), "expected NAME:IP");
  HostEntry e{std::string(text.substr(0, colon)), {}};
  if (e.name.find_first_of(" \t\n#") != std::string::npos)
    return fail(ErrorKind::invalid, "parse --add-host", std::string(text), "the name has blanks or #");
  // The name has no colon, so an IPv6 address is everything after the first one.
  auto ip = parse_ip_text(text.substr(colon + 1));
  if (!ip) return std::unexpected(ip.error().context("parse --add-host " + std::string(text)));
  e.address = *ip;
  return e;
}

}  // namespace fnexec::net

namespace fnexec::net {

Result<NetworkSettings> parse_network_settings(const NetworkSettingsText& t) {
  NetworkSettings s;
  for (const auto& d : t.dns) s.dns.push_back(FNEXEC_TRY(parse_ip_text(d)));
  for (const auto& h : t.add_hosts) s.extra_hosts.push_back(FNEXEC_TRY(parse_host_entry(h)));
  for (const auto& r : t.egress_allow) s.egress.allow.push_back(FNEXEC_TRY(parse_egress_rule(r)));
  for (const auto& r : t.egress_deny) s.egress.deny.push_back(FNEXEC_TRY(parse_egress_rule(r)));
  s.egress.fallback = FNEXEC_TRY(parse_egress_default(t.egress_default));
  return s;
}

}  // namespace fnexec::net
