// The function of the recycled-network-namespace test (test_netns_recycle.cc): leaves behind, or
// looks for, every kind of state a sandbox could leave in its network namespace.
//   netns_probe dirty   TCP over lo closed by us first (TIME_WAIT), a SO_REUSEPORT UDP group and a
//                       datagram, an abstract unix listener still open at exit, and every change of
//                       links, addresses and net.* sysctls it is allowed; prints the namespace cookie
//   netns_probe quiet   the same sockets without a single packet, and the same attempted changes
//   netns_probe view    the cookie, then what the namespace shows: /proc/net, the sysctls, and
//                       whether the port and abstract name the others used can be bound again
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace {

constexpr uint16_t kPort = 47123;
constexpr char kAbstract[] = "fnexec-netns-probe";

unsigned long long cookie() {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  unsigned long long c = 0;
  socklen_t len = sizeof c;
  if (getsockopt(s, SOL_SOCKET, SO_NETNS_COOKIE, &c, &len) != 0) c = 0;
  close(s);
  return c;
}

sockaddr_in lo_addr(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

sockaddr_un abstract_addr(socklen_t& len) {
  sockaddr_un u{};
  u.sun_family = AF_UNIX;
  std::memcpy(u.sun_path + 1, kAbstract, sizeof kAbstract - 1);
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + sizeof kAbstract - 1);
  return u;
}

// Changes only root with CAP_NET_ADMIN or a writable /proc/sys could make; each should fail.
void try_changes() {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  ifreq ifr{};
  std::strcpy(ifr.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags & ~IFF_UP);
    std::printf("lo down: %s\n", ioctl(s, SIOCSIFFLAGS, &ifr) == 0 ? "done" : std::strerror(errno));
  }
  ifreq alias{};
  std::strcpy(alias.ifr_name, "lo:9");
  auto* sin = reinterpret_cast<sockaddr_in*>(&alias.ifr_addr);
  sin->sin_family = AF_INET;
  inet_pton(AF_INET, "10.77.0.1", &sin->sin_addr);
  std::printf("address: %s\n", ioctl(s, SIOCSIFADDR, &alias) == 0 ? "done" : std::strerror(errno));
  close(s);
  for (const char* path : {"/proc/sys/net/ipv4/ip_local_port_range", "/proc/sys/net/ipv4/ip_forward",
                           "/proc/sys/net/ipv4/tcp_fastopen", "/proc/sys/net/core/somaxconn"}) {
    int fd = open(path, O_WRONLY);
    bool done = fd >= 0 && write(fd, "2\n", 2) == 2;
    std::printf("sysctl %s: %s\n", path, done ? "done" : std::strerror(errno));
    if (fd >= 0) close(fd);
  }
}

int leave_state(bool traffic) {
  std::printf("cookie %llu\n", cookie());
  try_changes();
  int one = 1;
  // A SO_REUSEPORT group of two UDP sockets on kPort.
  int g1 = socket(AF_INET, SOCK_DGRAM, 0), g2 = socket(AF_INET, SOCK_DGRAM, 0);
  for (int g : {g1, g2}) {
    setsockopt(g, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    auto a = lo_addr(kPort);
    if (bind(g, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) std::perror("bind reuseport");
  }
  // An abstract unix listener, left open: the kernel closes it at exit.
  int u = socket(AF_UNIX, SOCK_STREAM, 0);
  socklen_t ulen;
  auto ua = abstract_addr(ulen);
  if (bind(u, reinterpret_cast<sockaddr*>(&ua), ulen) != 0 || listen(u, 1) != 0) std::perror("abstract");
  // A TCP listener on kPort.
  int l = socket(AF_INET, SOCK_STREAM, 0);
  auto la = lo_addr(kPort);
  if (bind(l, reinterpret_cast<sockaddr*>(&la), sizeof la) != 0 || listen(l, 1) != 0) std::perror("listen");
  if (traffic) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, reinterpret_cast<sockaddr*>(&la), sizeof la) != 0) std::perror("connect");
    int a = accept(l, nullptr, nullptr);
    (void)!write(c, "x", 1);
    char b;
    (void)!read(a, &b, 1);
    close(c);  // we close first: this side goes to TIME_WAIT
    (void)!read(a, &b, 1);
    close(a);
    auto ga = lo_addr(kPort);
    sendto(g1, "y", 1, 0, reinterpret_cast<sockaddr*>(&ga), sizeof ga);
  }
  std::fflush(stdout);
  return 0;  // g1, g2, u, l: closed by exit
}

void dump(const char* path) {
  int fd = open(path, O_RDONLY);
  std::printf("== %s\n", path);
  if (fd < 0) {
    std::printf("(%s)\n", std::strerror(errno));
    return;
  }
  char buf[8192];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) fwrite(buf, 1, static_cast<size_t>(n), stdout);
  close(fd);
}

int view() {
  std::printf("cookie %llu\n", cookie());
  for (const char* f : {"dev", "snmp", "snmp6", "netstat", "fib_trie", "ipv6_route", "if_inet6", "tcp", "tcp6", "udp",
                        "udp6", "raw", "raw6", "icmp", "unix", "packet"})
    dump((std::string("/proc/net/") + f).c_str());
  for (const char* f : {"/proc/sys/net/ipv4/ip_local_port_range", "/proc/sys/net/ipv4/ip_forward",
                        "/proc/sys/net/ipv4/tcp_fastopen", "/proc/sys/net/core/somaxconn"})
    dump(f);
  // Rebinding what the others used, without SO_REUSEADDR/SO_REUSEPORT: a TIME_WAIT, a leftover group
  // or a leftover abstract name would answer EADDRINUSE.
  int t = socket(AF_INET, SOCK_STREAM, 0), d = socket(AF_INET, SOCK_DGRAM, 0), u = socket(AF_UNIX, SOCK_STREAM, 0);
  auto a = lo_addr(kPort);
  std::printf("bind tcp %u: %s\n", kPort, bind(t, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 ? "ok" : std::strerror(errno));
  std::printf("bind udp %u: %s\n", kPort, bind(d, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 ? "ok" : std::strerror(errno));
  socklen_t ulen;
  auto ua = abstract_addr(ulen);
  std::printf("bind @%s: %s\n", kAbstract, bind(u, reinterpret_cast<sockaddr*>(&ua), ulen) == 0 ? "ok" : std::strerror(errno));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string what = argc > 1 ? argv[1] : "";
  if (what == "dirty") return leave_state(true);
  if (what == "quiet") return leave_state(false);
  if (what == "view") return view();
  std::fprintf(stderr, "usage: netns_probe dirty|quiet|view\n");
  return 2;
}
