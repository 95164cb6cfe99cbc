#include "net/attachment.h"

#include <fcntl.h>
#include <net/if.h>
#include <spdlog/spdlog.h>

#include <cinttypes>
#include <cstdio>
#include <sstream>

#include "net/link.h"
#include "net/nft.h"
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

// The bridge's hooks: forward and input look the source address up in out_B (the sandbox's egress
// chain); nat masquerades what leaves the subnet through another interface. Made once per bridge,
// under the bridge lock.
Result<> ensure_base_chains(Nft& nft, const BridgeConfig& c) {
  auto b = tag(c.bridge);
  auto exists = nft.run("list chain inet fnexec fwd_" + b);
  if (exists) return {};
  if (exists.error().kind != ErrorKind::not_found) return std::unexpected(exists.error());
  std::string q = "\"" + c.bridge + "\"";
  std::string cmds =
      "add table inet fnexec\n"
      "add map inet fnexec out_" +
      b +
      " { type ipv4_addr : verdict; }\n"
      "add chain inet fnexec fwd_" +
      b +
      " { type filter hook forward priority filter; policy accept; }\n"
      "add rule inet fnexec fwd_" +
      b + " ip saddr vmap @out_" + b +
      "\n"
      "add chain inet fnexec input_" +
      b +
      " { type filter hook input priority filter; policy accept; }\n"
      "add rule inet fnexec input_" +
      b + " iifname " + q +
      " ct state established,related accept\n"
      "add rule inet fnexec input_" +
      b + " iifname " + q + " ip saddr vmap @out_" + b +
      "\n"
      // Anything else arriving from the bridge (no lease, spoofed source) does not reach the host.
      "add rule inet fnexec input_" +
      b + " iifname " + q +
      " drop\n"
      "add chain inet fnexec nat_" +
      b +
      " { type nat hook postrouting priority srcnat; policy accept; }\n"
      "add rule inet fnexec nat_" +
      b + " ip saddr " + c.subnet.to_string() + " oifname != " + q + " masquerade\n";
  auto made = nft.run(cmds);
  if (!made) return std::unexpected(made.error().context("set up nftables for bridge " + c.bridge));
  return {};
}

Result<> remove_sandbox_rules(Nft& nft, const BridgeConfig& c, uint32_t ip) {
  auto b = tag(c.bridge);
  auto v = veth_name(ip);
  auto a = format_ipv4(ip);
  auto gone = nft.run("delete element inet fnexec out_" + b + " { " + a + " }\n" + "flush chain inet fnexec eg_" +
                      v + "\n" + "delete chain inet fnexec eg_" + v + "\n");
  // The rules are added in one transaction, so "not there" means none of them is.
  if (!gone && gone.error().kind != ErrorKind::not_found) return std::unexpected(gone.error());
  return {};
}

// sandbox_gone: the sandbox's namespace is gone, and the kernel deletes the veth pair with it;
// deleting it here too would wait for the unregistration (15 ms measured), so only stale state of
// another process deletes it.
Result<> remove_sandbox_state(Netlink& nl, Nft& nft, const BridgeConfig& c, uint32_t ip,
                              bool sandbox_gone = false) {
  FNEXEC_TRY(remove_sandbox_rules(nft, c, ip));
  if (!sandbox_gone) FNEXEC_TRY(nl.delete_link(veth_name(ip)));
  std::error_code ec;
  stdfs::remove_all(etc_dir(c, ip), ec);
  return {};
}

// Routing between the bridge and the outside needs IPv4 forwarding (as podman and docker set it).
Result<> ensure_forwarding() {
  const char* path = "/proc/sys/net/ipv4/ip_forward";
  auto now = FNEXEC_TRY(fs::read_file(path));
  if (now.starts_with("1")) return {};
  return fs::write_file(path, "1");
}

// The files live only as long as the run, in a fresh directory: no rename or fsync (which cost
// 47 ms on this machine's /run).
Result<> write_new_file(const stdfs::path& path, std::string_view text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd) return fail_errno("create", path.string());
  return fs::write_all(fd.get(), text, path.string());
}

std::string hosts_file(uint32_t ip, const std::string& hostname, const std::vector<HostEntry>& extra) {
  std::string s = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  s += format_ipv4(ip) + "\t" + hostname + "\n";
  for (const auto& e : extra) s += format_ipv4(e.address) + "\t" + e.name + "\n";
  return s;
}

// --dns servers, else the host's own nameservers except loopback ones (unreachable from a sandbox).
std::string resolv_conf(const std::vector<uint32_t>& dns) {
  std::string s;
  if (!dns.empty()) {
    for (uint32_t ip : dns) s += "nameserver " + format_ipv4(ip) + "\n";
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

Result<size_t> clean_stale(const BridgeConfig& config) {
  FNEXEC_TRY(check_bridge_name(config.bridge));
  auto dir = bridge_dir(config);
  std::error_code ec;
  if (!stdfs::is_directory(dir, ec)) return 0;
  auto lock = FNEXEC_TRY(BridgeLock::acquire(dir));
  auto nl = FNEXEC_TRY(Netlink::connect());
  auto nft = FNEXEC_TRY(Nft::open());
  size_t removed = 0;
  FNEXEC_TRY(clean_stale_leases(dir, [&](uint32_t ip) {
    ++removed;
    return remove_sandbox_state(nl, nft, config, ip);
  }));
  return removed;
}

Result<Attachment> Attachment::prepare(const BridgeConfig& config, const std::string& hostname) {
  FNEXEC_TRY(check_bridge_name(config.bridge));
  if (config.subnet.prefix > 30)
    return fail(ErrorKind::invalid, "use --bridge-subnet", config.subnet.to_string(),
                "it needs room for a gateway and a sandbox: /30 or larger");
  auto dir = bridge_dir(config);
  auto lock = FNEXEC_TRY(BridgeLock::acquire(dir));
  auto nl = FNEXEC_TRY(Netlink::connect());
  auto nft = FNEXEC_TRY(Nft::open());
  auto clean = [&](uint32_t ip) { return remove_sandbox_state(nl, nft, config, ip); };
  FNEXEC_TRY(clean_stale_leases(dir, clean));
  FNEXEC_TRY(nl.ensure_bridge(config.bridge, config.subnet.address + 1, config.subnet));
  FNEXEC_TRY(ensure_forwarding());
  FNEXEC_TRY(ensure_base_chains(nft, config));

  Attachment a;
  a.config_ = config;
  a.lease_.emplace(FNEXEC_TRY(Lease::take(dir, config.subnet, clean)));
  // After take(): clean uses them.
  a.netlink_.emplace(std::move(nl));
  a.nft_.emplace(std::move(nft));
  uint32_t ip = a.lease_->address();
  a.veth_ = veth_name(ip);
  auto etc = etc_dir(config, ip);
  std::error_code ec;
  stdfs::create_directory(etc, ec);
  if (ec) return fail_errno("create directory", etc.string(), ec.value());
  a.etc_dir_ = etc;
  FNEXEC_TRY(write_new_file(etc / "hosts", hosts_file(ip, hostname, config.extra_hosts)));
  FNEXEC_TRY(write_new_file(etc / "resolv.conf", resolv_conf(config.dns)));
  return a;
}

Attachment::Attachment(Attachment&& o) noexcept
    : config_(std::move(o.config_)),
      netlink_(std::move(o.netlink_)),
      nft_(std::move(o.nft_)),
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
  Result<> removed = netlink_ && nft_
                         ? remove_sandbox_state(*netlink_, *nft_, config_, ip, true)
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

Result<> Attachment::connect(pid_t pid, int pidfd) {
  traffic_.emplace(FNEXEC_TRY(NamespaceTraffic::open(pid, pidfd)));
  auto& nl = *netlink_;
  int bridge = FNEXEC_TRY(nl.ifindex(config_.bridge));
  if (bridge == 0)
    return fail(ErrorKind::not_found, "attach sandbox to bridge", config_.bridge, "the bridge is gone");
  FNEXEC_TRY(nl.add_veth(veth_, kPeerName, pid, bridge));
  auto inside = FNEXEC_TRY(Netlink::connect_in(pidfd));
  uint32_t ip = lease_->address();
  FNEXEC_TRY(inside.configure_interface(kPeerName, ip, config_.subnet.prefix, config_.subnet.address + 1));

  auto b = tag(config_.bridge);
  auto a = format_ipv4(ip);
  std::string cmds = "add chain inet fnexec eg_" + veth_ + "\n";
  for (const auto& rule : egress_chain_rules(config_.egress, config_.subnet))
    cmds += "add rule inet fnexec eg_" + veth_ + " " + rule + "\n";
  cmds += "add element inet fnexec out_" + b + " { " + a + " : jump eg_" + veth_ + " }\n";
  auto added = nft_->run(cmds);
  if (!added) return std::unexpected(added.error().context("add egress policy of " + a));
  return {};
}

Result<TrafficCounters> Attachment::counters() const {
  if (!traffic_) return fail(ErrorKind::internal, "read counters of", veth_, "the sandbox is not connected");
  return traffic_->read(kPeerName);
}

}  // namespace fnexec::net
