#include "net/attachment.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <spdlog/spdlog.h>

#include <cinttypes>
#include <cstdio>
#include <sstream>

#include "net/link.h"
#include "net/nft.h"
#include "net/nft_elements.h"
#include "util/fs.h"
#include "util/unique_fd.h"

namespace fnexec::net {

namespace {

namespace stdfs = std::filesystem;

constexpr const char* kPeerName = "eth0";

// nftables names of one bridge's shared objects: the bridge name with anything but [A-Za-z0-9_]
// replaced, so any valid interface name gives a valid nft identifier.
std::string tag(const std::string& bridge) {
  std::string t = bridge;
  for (char& c : t)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return t;
}

// fx + the address in hex: unique per sandbox as bridge subnets may not overlap, and 10 bytes,
// inside IFNAMSIZ.
std::string veth_name(uint32_t ip) {
  char name[IFNAMSIZ];
  std::snprintf(name, sizeof name, "fx%08" PRIx32, ip);
  return name;
}

stdfs::path bridge_dir(const BridgeConfig& c) {
  return c.state_dir / c.bridge;
}
stdfs::path etc_dir(const BridgeConfig& c, uint32_t ip) {
  return bridge_dir(c) / (format_ipv4(ip) + ".etc");
}

// The chain of an egress policy on one bridge: shared by every sandbox with that policy, named by
// a hash of its rules (FNV-1a), so a sandbox's own nftables state is only its map element.
std::string policy_chain(const BridgeConfig& c) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const auto& rule : egress_chain_rules(c.egress, c.subnet, c.subnet6))
    for (char ch : rule + "\n") h = (h ^ static_cast<unsigned char>(ch)) * 0x100000001b3ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016" PRIx64, h);
  return "eg_" + tag(c.bridge) + "_" + hex;
}

std::vector<uint8_t> key_bytes(uint32_t ip) {
  uint32_t be = htonl(ip);
  auto* p = reinterpret_cast<const uint8_t*>(&be);
  return {p, p + 4};
}

std::optional<std::array<uint8_t, 16>> ipv6_of(const BridgeConfig& c, uint32_t ip) {
  if (!c.subnet6) return std::nullopt;
  return c.subnet6->host(ip - c.subnet.address);
}

// The map elements of the sandbox at ip: its addresses → jump to its policy chain.
std::vector<MapElement> sandbox_elements(const BridgeConfig& c, uint32_t ip) {
  std::vector<MapElement> e{MapElement{"out_" + tag(c.bridge), key_bytes(ip), policy_chain(c)}};
  if (auto v6 = ipv6_of(c, ip)) e.push_back(MapElement{"out6_" + tag(c.bridge), {v6->begin(), v6->end()}, policy_chain(c)});
  return e;
}

// Removes the policy chains of this bridge that no map element refers to any more (the kernel
// refuses, EBUSY, to delete a chain still in use), so at most the live policies' chains stay.
void remove_unused_policy_chains(Nft& nft, const BridgeConfig& c) {
  auto listed = nft.run("list chains inet");
  if (!listed) return;
  std::string prefix = "chain eg_" + tag(c.bridge) + "_";
  std::istringstream in(*listed);
  std::string line;
  while (std::getline(in, line)) {
    auto at = line.find(prefix);
    if (at == std::string::npos) continue;
    auto name = line.substr(at + 6, line.find(' ', at + 6) - (at + 6));
    (void)nft.run("flush chain inet fnexec " + name + "\ndelete chain inet fnexec " + name + "\n");
  }
}

// The bridge's hooks and the sandbox's policy chain, made (or brought back to what this version
// makes) in one transaction: forward and input look the source address up in out_B, which jumps
// to the sandbox's policy chain; nat masquerades what leaves the subnet through another interface.
// Only called when adding a sandbox's map element found something missing, under the bridge lock.
Result<> ensure_tables(Nft& nft, const BridgeConfig& c) {
  remove_unused_policy_chains(nft, c);
  auto b = tag(c.bridge);
  std::string q = "\"" + c.bridge + "\"";
  std::string t = "inet fnexec ";
  auto base_chain = [&](const std::string& name, const std::string& hook) {
    return "add chain " + t + name + " { " + hook + "; policy accept; }\nflush chain " + t + name + "\n";
  };
  std::string cmds = "add table inet fnexec\n";
  cmds += "add map " + t + "out_" + b + " { type ipv4_addr : verdict; }\n";
  cmds += "add map " + t + "out6_" + b + " { type ipv6_addr : verdict; }\n";
  cmds += base_chain("fwd_" + b, "type filter hook forward priority filter");
  cmds += "add rule " + t + "fwd_" + b + " ip saddr vmap @out_" + b + "\n";
  cmds += "add rule " + t + "fwd_" + b + " ip6 saddr vmap @out6_" + b + "\n";
  cmds += base_chain("input_" + b, "type filter hook input priority filter");
  cmds += "add rule " + t + "input_" + b + " iifname " + q + " ct state established,related accept\n";
  // Neighbour discovery with the gateway (hop limit 255: from the link itself), before the policy
  // chain, whose link-local and default-deny rules would refuse it.
  cmds += "add rule " + t + "input_" + b + " iifname " + q +
          " icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept\n";
  cmds += "add rule " + t + "input_" + b + " iifname " + q + " ip saddr vmap @out_" + b + "\n";
  cmds += "add rule " + t + "input_" + b + " iifname " + q + " ip6 saddr vmap @out6_" + b + "\n";
  // Anything else arriving from the bridge (no lease, spoofed source) does not reach the host.
  cmds += "add rule " + t + "input_" + b + " iifname " + q + " drop\n";
  cmds += base_chain("nat_" + b, "type nat hook postrouting priority srcnat");
  cmds += "add rule " + t + "nat_" + b + " ip saddr " + c.subnet.to_string() + " oifname != " + q + " masquerade\n";
  // NAT66: the IPv6 subnet is a ULA, which nothing outside routes back to.
  if (c.subnet6)
    cmds += "add rule " + t + "nat_" + b + " ip6 saddr " + c.subnet6->to_string() + " oifname != " + q +
            " masquerade\n";
  auto chain = policy_chain(c);
  cmds += "add chain " + t + chain + "\nflush chain " + t + chain + "\n";
  for (const auto& rule : egress_chain_rules(c.egress, c.subnet, c.subnet6)) cmds += "add rule " + t + chain + " " + rule + "\n";
  auto made = nft.run(cmds);
  if (!made) return std::unexpected(made.error().context("set up nftables for bridge " + c.bridge));
  return {};
}

// The sandbox's map element; the first sandbox of a bridge or a policy makes the chains first
// (libnftables, loaded only then).
Result<> add_sandbox_rules(NftElements& elements, const BridgeConfig& c, uint32_t ip) {
  auto added = elements.add(sandbox_elements(c, ip));
  // Unavailable (no nf_tables in the kernel): libnftables below says so, naming the fix.
  if (added || (added.error().kind != ErrorKind::not_found && added.error().kind != ErrorKind::unavailable))
    return added;
  auto nft = FNEXEC_TRY(Nft::open());
  FNEXEC_TRY(ensure_tables(nft, c));
  auto retried = elements.add(sandbox_elements(c, ip));
  if (!retried) return std::unexpected(retried.error().context("add egress policy of " + format_ipv4(ip)));
  return {};
}

Result<> remove_sandbox_rules(NftElements& elements, const BridgeConfig& c, uint32_t ip) {
  // One transaction each: a missing element fails its whole transaction.
  for (auto& e : sandbox_elements(c, ip)) {
    auto gone = elements.remove({e});
    // Unavailable: no nf_tables, so no element either.
    if (!gone && gone.error().kind != ErrorKind::not_found && gone.error().kind != ErrorKind::unavailable)
      return std::unexpected(gone.error());
  }
  return {};
}

// sandbox_gone: the sandbox's namespace is gone, and the kernel deletes the veth pair with it;
// deleting it here too would wait for the unregistration (15 ms measured), so only stale state of
// another process deletes it.
Result<> remove_sandbox_state(Netlink& nl, NftElements& elements, const BridgeConfig& c, uint32_t ip,
                              bool sandbox_gone = false) {
  FNEXEC_TRY(remove_sandbox_rules(elements, c, ip));
  if (!sandbox_gone) FNEXEC_TRY(nl.delete_link(veth_name(ip)));
  std::error_code ec;
  stdfs::remove_all(etc_dir(c, ip), ec);
  return {};
}

// Routing between the bridge and the outside needs forwarding (as podman and docker set it).
Result<> ensure_forwarding(const char* path) {
  auto now = FNEXEC_TRY(fs::read_file(path));
  if (now.starts_with("1")) return {};
  return fs::write_file(path, "1");
}

constexpr const char* kIpv6Forwarding = "/proc/sys/net/ipv6/conf/all/forwarding";

// The files live only as long as the run, in a fresh directory: no rename or fsync (which cost
// 47 ms on this machine's /run).
Result<> write_new_file(const stdfs::path& path, std::string_view text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd) return fail_errno("create", path.string());
  return fs::write_all(fd.get(), text, path.string());
}

std::string hosts_file(const BridgeConfig& c, uint32_t ip, const std::string& hostname) {
  std::string s = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  s += format_ipv4(ip) + "\t" + hostname + "\n";
  if (auto v6 = ipv6_of(c, ip)) s += format_ipv6(*v6) + "\t" + hostname + "\n";
  for (const auto& e : c.extra_hosts) s += e.address + "\t" + e.name + "\n";
  return s;
}

// --dns servers, else the host's own nameservers except loopback ones (unreachable from a sandbox).
std::string resolv_conf(const std::vector<std::string>& dns) {
  std::string s;
  if (!dns.empty()) {
    for (const auto& ip : dns) s += "nameserver " + ip + "\n";
    return s;
  }
  auto host = fs::read_file("/etc/resolv.conf");
  if (!host) return s;
  std::istringstream in(*host);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key, value;
    words >> key >> value;
    if (key == "search" || (key == "nameserver" && !value.starts_with("127.") && value != "::1"))
      s += line + "\n";
  }
  return s;
}

}  // namespace

Result<> check_bridge_name(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ || name.find_first_of("/ \t\n:\"") != std::string::npos ||
      name == "." || name == "..")
    return fail(ErrorKind::invalid, "use --bridge", name,
                "expected an interface name of 1 to " + std::to_string(IFNAMSIZ - 1) +
                    " characters without / : or blanks");
  return {};
}

Result<std::optional<Ipv6Net>> parse_bridge_subnet6(std::string_view text) {
  if (text == "none") return std::optional<Ipv6Net>{};
  auto net = parse_ipv6_net(text);
  if (!net) return std::unexpected(net.error().context("use --bridge-subnet6"));
  if (net->prefix > 96)
    return fail(ErrorKind::invalid, "use --bridge-subnet6", std::string(text),
                "it needs room for every IPv4 lease's host part: /96 or larger");
  return std::optional<Ipv6Net>(*net);
}

Result<size_t> clean_stale(const BridgeConfig& config) {
  FNEXEC_TRY(check_bridge_name(config.bridge));
  auto dir = bridge_dir(config);
  std::error_code ec;
  if (!stdfs::is_directory(dir, ec)) return 0;
  auto lock = FNEXEC_TRY(BridgeLock::acquire(dir));
  auto nl = FNEXEC_TRY(Netlink::connect());
  auto elements = FNEXEC_TRY(NftElements::connect());
  size_t removed = 0;
  FNEXEC_TRY(clean_stale_leases(dir, [&](uint32_t ip) {
    ++removed;
    return remove_sandbox_state(nl, elements, config, ip);
  }));
  return removed;
}

Result<Attachment> Attachment::prepare(const BridgeConfig& requested, const std::string& hostname) {
  BridgeConfig config = requested;
  FNEXEC_TRY(check_bridge_name(config.bridge));
  if (config.subnet.prefix > 30)
    return fail(ErrorKind::invalid, "use --bridge-subnet", config.subnet.to_string(),
                "it needs room for a gateway and a sandbox: /30 or larger");
  // A kernel without IPv6 (ipv6.disable=1) gets an IPv4-only bridge.
  if (config.subnet6 && ::access(kIpv6Forwarding, F_OK) != 0) config.subnet6.reset();
  auto dir = bridge_dir(config);
  auto lock = FNEXEC_TRY(BridgeLock::acquire(dir));
  auto nl = FNEXEC_TRY(Netlink::connect());
  auto elements = FNEXEC_TRY(NftElements::connect());
  auto clean = [&](uint32_t ip) { return remove_sandbox_state(nl, elements, config, ip); };
  FNEXEC_TRY(clean_stale_leases(dir, clean));
  int bridge = FNEXEC_TRY(nl.ensure_bridge(config.bridge, config.subnet.address + 1, config.subnet));
  FNEXEC_TRY(ensure_forwarding("/proc/sys/net/ipv4/ip_forward"));
  if (config.subnet6) {
    FNEXEC_TRY(nl.add_address6(bridge, config.subnet6->host(1), config.subnet6->prefix));
    FNEXEC_TRY(ensure_forwarding(kIpv6Forwarding));
  }

  Attachment a;
  a.config_ = config;
  a.lease_.emplace(FNEXEC_TRY(Lease::take(dir, config.subnet, clean)));
  // Under the bridge lock, before the veth exists: a policy chain is removed only when no element
  // refers to it, so ours cannot vanish between here and the sandbox's first packet.
  FNEXEC_TRY(add_sandbox_rules(elements, config, a.lease_->address()));
  // After take(): clean uses them.
  a.netlink_.emplace(std::move(nl));
  a.elements_.emplace(std::move(elements));
  uint32_t ip = a.lease_->address();
  a.veth_ = veth_name(ip);
  auto etc = etc_dir(config, ip);
  std::error_code ec;
  stdfs::create_directory(etc, ec);
  if (ec) return fail_errno("create directory", etc.string(), ec.value());
  a.etc_dir_ = etc;
  FNEXEC_TRY(write_new_file(etc / "hosts", hosts_file(config, ip, hostname)));
  FNEXEC_TRY(write_new_file(etc / "resolv.conf", resolv_conf(config.dns)));
  return a;
}

Attachment::Attachment(Attachment&& o) noexcept
    : config_(std::move(o.config_)),
      netlink_(std::move(o.netlink_)),
      elements_(std::move(o.elements_)),
      lease_(std::move(o.lease_)),
      etc_dir_(std::exchange(o.etc_dir_, std::nullopt)),
      traffic_(std::exchange(o.traffic_, std::nullopt)),
      veth_(std::move(o.veth_)) {
  o.lease_.reset();
}

Attachment::~Attachment() {
  teardown();
}

void Attachment::teardown() {
  // First: the kernel starts deleting the namespace and its veth pair while the rest is removed.
  traffic_.reset();
  if (!lease_) return;
  uint32_t ip = lease_->address();
  Result<> removed = netlink_ && elements_
                         ? remove_sandbox_state(*netlink_, *elements_, config_, ip, true)
                         : fail(ErrorKind::internal, "remove network state", {}, "no netlink socket");
  if (!removed) {
    // The lease file stays (unlocked once we exit), so the next setup on this bridge retries.
    spdlog::warn("fnexec: cannot remove network state of {}: {}", format_ipv4(ip), removed.error().message());
    lease_->keep_file();
  }
  lease_.reset();
  etc_dir_.reset();
}

std::vector<sandbox::Volume> Attachment::volumes() const {
  if (!etc_dir_) return {};
  return {sandbox::Volume{*etc_dir_ / "hosts", "/etc/hosts", true},
          sandbox::Volume{*etc_dir_ / "resolv.conf", "/etc/resolv.conf", true}};
}

uint32_t Attachment::address() const {
  return lease_ ? lease_->address() : 0;
}

std::optional<std::array<uint8_t, 16>> Attachment::address6() const {
  return lease_ ? ipv6_of(config_, lease_->address()) : std::nullopt;
}

Result<> Attachment::connect(pid_t pid, int pidfd) {
  traffic_.emplace(FNEXEC_TRY(NamespaceTraffic::open(pid, pidfd)));
  auto& nl = *netlink_;
  int bridge = FNEXEC_TRY(nl.ifindex(config_.bridge));
  if (bridge == 0)
    return fail(ErrorKind::not_found, "attach sandbox to bridge", config_.bridge, "the bridge is gone");
  FNEXEC_TRY(nl.add_veth(veth_, kPeerName, pid, bridge));
  auto inside = FNEXEC_TRY(Netlink::connect_in(pidfd));
  uint32_t ip = lease_->address();
  std::optional<Netlink::Ipv6Interface> v6;
  if (auto a6 = ipv6_of(config_, ip)) v6 = Netlink::Ipv6Interface{*a6, config_.subnet6->host(1), config_.subnet6->prefix};
  FNEXEC_TRY(inside.configure_interface(kPeerName, ip, config_.subnet.prefix, config_.subnet.address + 1, v6));

  return {};
}

Result<TrafficCounters> Attachment::counters() const {
  if (!traffic_) return fail(ErrorKind::internal, "read counters of", veth_, "the sandbox is not connected");
  return traffic_->read(kPeerName);
}

}  // namespace fnexec::net
