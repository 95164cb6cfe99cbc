// Recycled network namespaces (src/sandbox/netns_pool.*): a namespace goes to the next sandbox
// only when its last one left nothing in it. netns_probe (programs/netns_probe.cc) leaves every kind
// of state it can, and later sandboxes look for it; the namespace cookie (SO_NETNS_COOKIE, never
// reused by the kernel) tells which namespace each one ran in.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <set>
#include <string>

#include "cgroup/cgroup.h"
#include "image/store.h"
#include "pool/pool.h"
#include "pool_support.h"
#include "sandbox/netns_pool.h"
#include "support/fixtures.h"
#include "support/proc.h"

namespace fnexec::test {
namespace {

namespace stdfs = std::filesystem;
using namespace std::chrono_literals;

struct NetnsImage {
  static constexpr const char* kPrefix = "fnexec-test-netns-recycle";
  ScratchTmpfs scratch{"128m"};
  std::optional<image::Store> store;
  std::shared_ptr<cgroup::Hierarchy> cgroups;

  NetnsImage() {
    const char* probe = std::getenv("FNEXEC_NETNS_PROBE");
    stdfs::path bin = probe ? stdfs::path(probe) : build_root() / "tests/integration/netns_probe";
    auto mk = run({rootfs_tool("mkimage").string(), "--busybox", "--host-binary", bin.string() + "=/bin/netns_probe",
                   "--ref", "netns:1", "-o", (scratch / "img").string()});
    REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    auto s = image::Store::open(scratch / "store");
    REQUIRE(s);
    store.emplace(std::move(*s));
    REQUIRE(store->import("oci:" + (scratch / "img").string(), {.name = "netns:1"}));
    cgroups = suite_cgroups(kPrefix);
  }
  ~NetnsImage() {
    cgroups.reset();
    remove_own_cgroup_tree(kPrefix);
  }
};

NetnsImage& netns_image() {
  static NetnsImage i;
  return i;
}

pool::FunctionSpec probe_function(const std::string& name, const std::string& mode) {
  pool::FunctionSpec f;
  f.name = name;
  f.image = "netns:1";
  f.cmd = std::vector<std::string>{"netns_probe", mode};
  f.min_warm = 0;  // every invocation builds its sandbox, taking a namespace from the free list
  f.timeout = 20s;
  return f;
}

// "cookie N\n" first, the rest after it.
std::pair<std::string, std::string> split_cookie(const std::string& out) {
  auto eol = out.find('\n');
  REQUIRE(out.starts_with("cookie "));
  return {out.substr(7, eol - 7), out.substr(eol + 1)};
}

}  // namespace

TEST_SUITE("pool") {
  TEST_CASE("a recycled network namespace shows the next sandbox nothing of the last one") {
    auto& img = netns_image();
    PoolLeaks leaks(img.scratch.path());
    {
      auto pools = pool::PoolSet::create(*img.store, img.cgroups, {});
      REQUIRE(pools);
      auto& p = **pools;
      REQUIRE(p.configure(probe_function("view", "view")));
      REQUIRE(p.configure(probe_function("dirty", "dirty")));
      REQUIRE(p.configure(probe_function("quiet", "quiet")));

      // What a sandbox sees in a namespace nobody used before.
      auto first = invoke(p, "view", "");
      REQUIRE(first.record.exit_code == 0);
      auto [first_cookie, baseline] = split_cookie(first.output);
      CHECK(baseline.find("bind tcp 47123: ok") != std::string::npos);
      CHECK(baseline.find("bind @fnexec-netns-probe: ok") != std::string::npos);

      std::set<std::string> dirty_cookies;
      bool quiet_reused = false;
      for (int round = 0; round < 4; ++round) {
        auto dirty = invoke(p, "dirty", "");
        REQUIRE_MESSAGE(dirty.record.exit_code == 0, dirty.log);
        // Every change to the namespace's configuration is refused.
        CHECK(dirty.output.find("done") == std::string::npos);
        dirty_cookies.insert(split_cookie(dirty.output).first);
        auto quiet = invoke(p, "quiet", "");
        REQUIRE_MESSAGE(quiet.record.exit_code == 0, quiet.log);
        CHECK(quiet.output.find("done") == std::string::npos);
        auto quiet_cookie = split_cookie(quiet.output).first;
        // The namespaces go back after the sandbox is reaped, on the cleanup thread: look until
        // one of the views runs in the quiet one's namespace (or give up; checked below).
        for (int i = 0; i < 40; ++i) {
          auto v = invoke(p, "view", "");
          REQUIRE(v.record.exit_code == 0);
          auto [cookie, state] = split_cookie(v.output);
          CHECK_MESSAGE(state == baseline, "sandbox in namespace " << cookie << " saw state left behind");
          // A namespace a sandbox sent packets in, or left a socket in, is never handed out again
          // (a dirty sandbox may well have got one that served views before it).
          CHECK_MESSAGE(!dirty_cookies.contains(cookie), "namespace " << cookie << " was reused after traffic");
          if (cookie == quiet_cookie) {
            quiet_reused = true;
            break;
          }
          std::this_thread::sleep_for(50ms);
        }
      }
      // One a sandbox only tried to change is, and shows nothing (above).
      CHECK(quiet_reused);
    }
    leaks.check_same();
  }

  TEST_CASE("netns_is_pristine: sockets left open, TIME_WAIT, traffic and addresses make a namespace dirty") {
    auto ns = sandbox::make_pristine_netns();
    REQUIRE_MESSAGE(ns, ns.error().message());
    CHECK(sandbox::netns_is_pristine(*ns).value());

    auto in_ns = [&](auto&& body) {
      auto inside = sandbox::ThreadInNetns::enter(ns->fd.get());
      REQUIRE(inside);
      body();
      REQUIRE(inside->leave());
    };
    // A bound socket still open: dirty while it lives, clean once closed.
    int held = -1;
    in_ns([&] {
      held = ::socket(AF_INET, SOCK_DGRAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      REQUIRE(::bind(held, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    });
    CHECK_FALSE(sandbox::netns_is_pristine(*ns).value());
    ::close(held);
    CHECK(sandbox::netns_is_pristine(*ns).value());

    // UDP (v6), UDP-Lite and raw sockets are seen through sockstat's counts, not their lists:
    // each one left open makes the namespace dirty, and clean again once closed.
    struct Kind {
      const char* name;
      int family, type, protocol;
    };
    for (auto k : {Kind{"udp6", AF_INET6, SOCK_DGRAM, 0}, Kind{"udplite", AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE},
                   Kind{"udplite6", AF_INET6, SOCK_DGRAM, IPPROTO_UDPLITE}, Kind{"raw", AF_INET, SOCK_RAW, IPPROTO_ICMP},
                   Kind{"raw6", AF_INET6, SOCK_RAW, IPPROTO_ICMPV6}}) {
      CAPTURE(std::string(k.name));
      in_ns([&] {
        held = ::socket(k.family, k.type, k.protocol);
        REQUIRE(held >= 0);
        if (k.type == SOCK_DGRAM) {
          sockaddr_in6 a6{};
          a6.sin6_family = AF_INET6;
          a6.sin6_addr = in6addr_loopback;
          sockaddr_in a4{};
          a4.sin_family = AF_INET;
          a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
          int bound = k.family == AF_INET6 ? ::bind(held, reinterpret_cast<sockaddr*>(&a6), sizeof a6)
                                           : ::bind(held, reinterpret_cast<sockaddr*>(&a4), sizeof a4);
          REQUIRE(bound == 0);
        }
      });
      CHECK_FALSE(sandbox::netns_is_pristine(*ns).value());
      ::close(held);
      CHECK(sandbox::netns_is_pristine(*ns).value());
    }

    // One datagram over lo: counters moved, dirty for good.
    in_ns([&] {
      int s = ::socket(AF_INET, SOCK_DGRAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(9);
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      (void)::sendto(s, "x", 1, 0, reinterpret_cast<sockaddr*>(&a), sizeof a);
      ::close(s);
    });
    CHECK_FALSE(sandbox::netns_is_pristine(*ns).value());

    // An address added (as root with CAP_NET_ADMIN could): dirty.
    auto other = sandbox::make_pristine_netns();
    REQUIRE(other);
    {
      auto inside = sandbox::ThreadInNetns::enter(other->fd.get());
      REQUIRE(inside);
      auto r = run({"ip", "addr", "add", "10.77.0.1/32", "dev", "lo"});
      REQUIRE(inside->leave());
      REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    }
    CHECK_FALSE(sandbox::netns_is_pristine(*other).value());

    // The pool keeps only pristine ones.
    sandbox::NetnsPool pool;
    auto a = pool.acquire();
    REQUIRE(a);
    pool.release(std::move(*a));
    pool.release(std::move(*ns));
    auto st = pool.stats();
    CHECK(st.made == 1);
    CHECK(st.dropped_dirty == 1);
    auto again = pool.acquire();
    REQUIRE(again);
    CHECK(pool.stats().reused == 1);
  }
}

}  // namespace fnexec::test
