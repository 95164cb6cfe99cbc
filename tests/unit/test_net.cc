// The pure parts of fnexec::net: CIDR, egress rule and --add-host parsing, the order of the
// egress chain's rules, and the /proc/net/dev parser of the traffic counters.
#include <doctest/doctest.h>

#include <algorithm>

#include "net/address.h"
#include "net/traffic.h"

namespace fnexec::net {
namespace {

TEST_SUITE("net") {
  TEST_CASE("CIDR parsing and arithmetic") {
    auto n = parse_ipv4_net("10.87.0.0/16");
    REQUIRE(n);
    CHECK(n->address == 0x0A570000u);
    CHECK(n->prefix == 16);
    CHECK(n->to_string() == "10.87.0.0/16");
    CHECK(n->broadcast() == 0x0A57FFFFu);
    CHECK(n->contains(*parse_ipv4("10.87.3.4")));
    CHECK(!n->contains(*parse_ipv4("10.88.0.1")));
    CHECK(n->overlaps(*parse_ipv4_net("10.0.0.0/8")));
    CHECK(!n->overlaps(*parse_ipv4_net("10.88.0.0/16")));
    CHECK(parse_ipv4_net("1.2.3.4")->prefix == 32);
    CHECK(parse_ipv4_net("0.0.0.0/0")->contains(*parse_ipv4_net("192.168.0.0/16")));

    auto host_bits = parse_ipv4_net("10.87.0.1/16");
    REQUIRE(!host_bits);
    CHECK(host_bits.error().message().find("the network is 10.87.0.0/16") != std::string::npos);
    for (const char* bad :
         {"", "10.87.0.0/33", "10.87.0/16", "300.1.1.1", "10.0.0.0/", "10.0.0.0/x", "fe80::/10"})
      CHECK_MESSAGE(!parse_ipv4_net(bad), bad);
  }

  TEST_CASE("egress rules, defaults and host entries") {
    auto r = parse_egress_rule("10.0.0.0/8:443");
    REQUIRE(r);
    CHECK(r->destination == *parse_ipv4_net("10.0.0.0/8"));
    CHECK(r->port == 443);
    CHECK(!parse_egress_rule("10.0.0.0/8")->port);
    CHECK(!parse_egress_rule("10.0.0.0/8:0"));
    CHECK(!parse_egress_rule("10.0.0.0/8:65536"));
    CHECK(!parse_egress_rule("10.0.0.0/8:"));
    CHECK(parse_egress_default("deny") == EgressDefault::deny);
    CHECK(!parse_egress_default("DENY"));
    auto h = parse_host_entry("db.local:10.1.2.3");
    REQUIRE(h);
    CHECK(h->name == "db.local");
    CHECK(h->address == "10.1.2.3");
    CHECK(!parse_host_entry(":10.1.2.3"));
    CHECK(!parse_host_entry("db"));
    CHECK(!parse_host_entry("db:10.1.2"));
    auto h6 = parse_host_entry("db6:fd00:0::5");
    REQUIRE(h6);
    CHECK(h6->name == "db6");
    CHECK(h6->address == "fd00::5");
  }

  TEST_CASE("IPv6 networks and rules: parsing, host bits, the address of a lease, brackets for ports") {
    auto n = parse_ipv6_net("fd87:6e78:1f00::/64");
    REQUIRE(n);
    CHECK(n->to_string() == "fd87:6e78:1f00::/64");
    CHECK(format_ipv6(n->host(1)) == "fd87:6e78:1f00::1");
    CHECK(format_ipv6(n->host(0x0105)) == "fd87:6e78:1f00::105");
    CHECK(n->contains(*parse_ipv6("fd87:6e78:1f00::abcd")));
    CHECK(!n->contains(*parse_ipv6("fd87:6e78:1f01::1")));
    CHECK(parse_ipv6_net("fe80::/10")->contains(*parse_ipv6_net("fe80::1/128")));
    auto host_bits = parse_ipv6_net("fd00::1/64");
    REQUIRE(!host_bits);
    CHECK(host_bits.error().message().find("the network is fd00::/64") != std::string::npos);
    CHECK(!parse_ipv6_net("fd00::/129"));
    CHECK(!parse_ipv6_net("10.0.0.0/8"));
    auto bare = parse_egress_rule("fd00::/8");
    REQUIRE(bare);
    REQUIRE(bare->destination6);
    CHECK(bare->destination6->to_string() == "fd00::/8");
    CHECK(!bare->port);
    auto ported = parse_egress_rule("[fd00::1]:443");
    REQUIRE(ported);
    CHECK(ported->destination6->prefix == 128);
    CHECK(ported->port == 443);
    CHECK(!parse_egress_rule("[fd00::1]443"));
    CHECK(!parse_egress_rule("[fd00::1"));
    CHECK(parse_ip_text("fd00:0:0::1") == "fd00::1");
  }

  TEST_CASE("egress chain with IPv6: always-denied v6 ranges, /128 allows before the host rule") {
    EgressPolicy p;
    p.deny.push_back(*parse_egress_rule("[2001:db8::/32]:22"));
    p.allow.push_back(*parse_egress_rule("fd00:ec2::254"));
    p.allow.push_back(*parse_egress_rule("[2001:db8::1]:53"));
    p.allow.push_back(*parse_egress_rule("::/0"));
    auto rules = egress_chain_rules(p, *parse_ipv4_net("10.87.0.0/16"), parse_ipv6_net("fd87::/64").value());
    std::vector<std::string> want{
        "ip6 daddr 2001:db8::/32 meta l4proto { tcp, udp } th dport 22 drop",
        "ip6 daddr fd00:ec2::254/128 accept",
        "ip daddr 169.254.0.0/16 drop",
        "ip daddr 10.87.0.0/16 drop",
        "ip6 daddr fe80::/10 drop",
        "ip6 daddr fd00:ec2::254/128 drop",
        "ip6 daddr fd87::/64 drop",
        "ip6 daddr 2001:db8::1/128 meta l4proto { tcp, udp } th dport 53 accept",
        "fib daddr type local drop",
        "ip6 daddr ::/0 accept",
        "accept",
    };
    CHECK(rules == want);
  }

  TEST_CASE("egress chain order: deny, explicit always-denied allows, always denied, host, allows, default") {
    EgressPolicy p;
    p.deny.push_back(*parse_egress_rule("10.1.0.0/16:22"));
    p.allow.push_back(*parse_egress_rule("0.0.0.0/0"));
    p.allow.push_back(*parse_egress_rule("169.254.169.254"));
    p.allow.push_back(*parse_egress_rule("192.0.2.1:53"));
    p.fallback = EgressDefault::deny;
    auto rules = egress_chain_rules(p, *parse_ipv4_net("10.87.0.0/16"));
    std::vector<std::string> want{
        "ip daddr 10.1.0.0/16 meta l4proto { tcp, udp } th dport 22 drop",
        "ip daddr 169.254.169.254/32 accept",
        "ip daddr 169.254.0.0/16 drop",
        "ip daddr 10.87.0.0/16 drop",
        "ip6 daddr fe80::/10 drop",
        "ip6 daddr fd00:ec2::254/128 drop",
        "ip daddr 192.0.2.1/32 meta l4proto { tcp, udp } th dport 53 accept",
        "fib daddr type local drop",
        "ip daddr 0.0.0.0/0 accept",
        "drop",
    };
    CHECK(rules == want);
    CHECK(egress_chain_rules({}, *parse_ipv4_net("10.87.0.0/16")).back() == "accept");
  }

  TEST_CASE("traffic counters from /proc/net/dev, seen from the sandbox's side") {
    const std::string text =
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
        "carrier compressed\n"
        "    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0"
        "       0          0\n"
        "  eth0: 5000000000      37    0    1    0     0          0         0     2048      19    0    0    0     0"
        "       0          0\n";
    auto c = parse_net_dev(text, "eth0");
    REQUIRE(c);
    CHECK(c->bytes_in == 5000000000u);  // past 32 bits
    CHECK(c->packets_in == 37);
    CHECK(c->bytes_out == 2048);
    CHECK(c->packets_out == 19);
    auto missing = parse_net_dev(text, "eth1");
    REQUIRE(!missing);
    CHECK(missing.error().kind == ErrorKind::not_found);
    CHECK(missing.error().message().find("eth1") != std::string::npos);
    CHECK(!parse_net_dev(text, "eth"));  // a prefix is no match
    auto garbled = parse_net_dev("  eth0: 1 2 3\n", "eth0");
    REQUIRE(!garbled);
    CHECK(garbled.error().message().find("unexpected") != std::string::npos);
  }
}

}  // namespace
}  // namespace fnexec::net
