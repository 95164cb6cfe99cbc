// The network suites' lab: two network namespaces the test makes, "host" (where fnexec runs, its
// bridge, nftables table and routes live there, never in the machine's own namespace) and
// "outside" (a python http.server behind a veth, reached from host through a /30 route and through
// 169.254.169.254, the metadata address, which must stay unreachable; over IPv6 the same through
// fd00:231::/64 and fd00:ec2::254, with addresses made without duplicate address detection).
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/fixtures.h"
#include "support/proc.h"

namespace fnexec::test::network {

namespace stdfs = std::filesystem;

constexpr const char* kSubnet = "10.230.0.0/24";
constexpr const char* kServer = "10.231.0.2";
constexpr const char* kSubnet6 = "fd00:230::/64";
constexpr const char* kServer6 = "fd00:231::2";

inline void must(const std::vector<std::string>& argv) {
  auto r = run(argv);
  if (r.exit_code != 0)
    FAIL("setup command failed: ", argv[0], " ", argv.size() > 1 ? argv[1] : "", ": ", r.err);
}

struct NetworkLab {
  std::string id = std::to_string(::getpid() % 100000);
  std::string host = "fxnet-h-" + id, outside = "fxnet-o-" + id;
  std::string bridge = "nwb" + id;
  ScratchTmpfs scratch{"256m"};
  stdfs::path rootfs = scratch / "rootfs", state = scratch / "state", www = scratch / "www";
  std::unique_ptr<Conversation> server, host_server;

  NetworkLab() {
    populate_busybox_rootfs(rootfs);
    stdfs::create_directories(rootfs / "etc");
    stdfs::create_directories(state);
    stdfs::create_directories(www);
    std::ofstream(www / "index.html") << "hello from outside\n";
    must({"ip", "netns", "add", host});
    must({"ip", "netns", "add", outside});
    std::string h = "nwh" + id, o = "nwo" + id;
    must({"ip", "-n", host, "link", "add", h, "type", "veth", "peer", "name", o, "netns", outside});
    must({"ip", "-n", host, "link", "set", "lo", "up"});
    must({"ip", "-n", host, "addr", "add", "10.231.0.1/30", "dev", h});
    must({"ip", "-n", host, "link", "set", h, "up"});
    must({"ip", "-n", host, "route", "add", "169.254.169.254/32", "via", kServer});
    must({"ip", "-n", host, "route", "add", "10.232.0.0/16", "via", kServer});  // for the overlap test
    must({"ip", "-n", host, "-6", "addr", "add", "fd00:231::1/64", "dev", h, "nodad"});
    must({"ip", "-n", host, "-6", "route", "add", "fd00:ec2::254/128", "via", kServer6});
    must({"ip", "-n", outside, "link", "set", "lo", "up"});
    must({"ip", "-n", outside, "addr", "add", "10.231.0.2/30", "dev", o});
    must({"ip", "-n", outside, "addr", "add", "169.254.169.254/32", "dev", o});
    must({"ip", "-n", outside, "-6", "addr", "add", "fd00:231::2/64", "dev", o, "nodad"});
    must({"ip", "-n", outside, "-6", "addr", "add", "fd00:ec2::254/128", "dev", o, "nodad"});
    must({"ip", "-n", outside, "link", "set", o, "up"});
    must({"ip", "-n", outside, "route", "add", "default", "via", "10.231.0.1"});
    must({"ip", "-n", outside, "-6", "route", "add", "default", "via", "fd00:231::1"});
    // Listens on every address of the outside namespace, IPv4 and IPv6 (:: is dual-stack here):
    // 10.231.0.2, fd00:231::2 and the metadata addresses.
    server = std::make_unique<Conversation>(std::vector<std::string>{"ip", "netns", "exec", outside, "python3", "-m",
                                                                     "http.server", "8080", "--bind", "::",
                                                                     "--directory", www.string()});
    // A service of the host itself (a daemon's port, say), on every address of the host namespace.
    host_server = std::make_unique<Conversation>(std::vector<std::string>{
        "ip", "netns", "exec", host, "/bin/busybox", "httpd", "-f", "-p", "8090", "-h", www.string()});
    for (const char* url : {"http://10.231.0.2:8080/", "http://[fd00:231::2]:8080/", "http://10.231.0.1:8090/",
                            "http://[fd00:231::1]:8090/"}) {
      int i = 0;
      while (in_host({"curl", "-gsf", "-m", "1", url}).exit_code != 0 && ++i < 200)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (i == 200) FAIL("the http server at ", std::string(url), " did not come up");
    }
  }
  ~NetworkLab() {
    server.reset();
    host_server.reset();
    run({"ip", "netns", "del", host});
    run({"ip", "netns", "del", outside});
    std::error_code ec;
    stdfs::remove_all(stdfs::path("/run/fnexec/net") / bridge, ec);
  }

  // A command in the host namespace.
  ProcResult in_host(const std::vector<std::string>& argv) {
    std::vector<std::string> a{"ip", "netns", "exec", host};
    a.insert(a.end(), argv.begin(), argv.end());
    return run(a);
  }
  std::vector<std::string> fnexec_argv(const std::vector<std::string>& flags,
                                       const std::vector<std::string>& argv,
                                       const std::string& network = "bridge") {
    // nsenter, not `ip netns exec`: that remounts /sys, which hides the host's cgroups from fnexec.
    std::vector<std::string> a{"nsenter",
                               "--net=/run/netns/" + host,
                               fnexec_bin().string(),
                               "--root",
                               state.string(),
                               "run",
                               "--rootfs",
                               "--network",
                               network};
    if (network == "bridge")
      a.insert(a.end(), {"--bridge", bridge, "--bridge-subnet", kSubnet, "--bridge-subnet6", kSubnet6});
    a.insert(a.end(), flags.begin(), flags.end());
    a.push_back(rootfs.string());
    a.push_back("--");
    a.insert(a.end(), argv.begin(), argv.end());
    return a;
  }
  ProcResult sandbox(const std::vector<std::string>& flags, const std::vector<std::string>& argv,
                     const std::string& network = "bridge") {
    return run(fnexec_argv(flags, argv, network));
  }
  // What a finished run may not leave: veths, lease files, nftables map elements (the policy
  // chains are shared by every sandbox with that policy, as the base chains are, and stay).
  void expect_nothing_left() {
    // The kernel deletes a veth with the sandbox's namespace from a work queue, shortly after the
    // run ends (fnexec does not wait for it), and a daemon releases leases on its cleanup thread,
    // after the reply: wait for both, a bounded while.
    std::string links;
    size_t leases = 0;
    for (int i = 0; i < 200; ++i) {
      links = run({"ip", "-n", host, "-o", "link"}).out;
      leases = 0;
      for (const auto& e : stdfs::directory_iterator(stdfs::path("/run/fnexec/net") / bridge))
        if (!e.path().filename().string().starts_with(".")) ++leases;
      if (links.find(": fx") == std::string::npos && leases == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK_MESSAGE(links.find(": fx") == std::string::npos, links);
    CHECK(leases == 0);
    auto table = run({"ip", "netns", "exec", host, "nft", "list", "table", "inet", "fnexec"}).out;
    CHECK_MESSAGE(table.find("counter fx") == std::string::npos, table);
    CHECK_MESSAGE(table.find("elements") == std::string::npos, table);
  }
};

// Rounds of the leak loops: a default that fits CI; FNEXEC_NETWORK_ROUNDS=1000 for the figure.
inline int loop_rounds(int ci_default) {
  const char* env = std::getenv("FNEXEC_NETWORK_ROUNDS");
  return env ? std::atoi(env) : ci_default;
}

// One lab per test case: its servers are children of this process, and the suites after this one
// count this process's children, so the lab must be gone when the case ends.
inline NetworkLab* current_lab = nullptr;
inline NetworkLab& lab() { return *current_lab; }
struct LabFixture {
  NetworkLab l;
  LabFixture() { current_lab = &l; }
  ~LabFixture() { current_lab = nullptr; }
};

}  // namespace fnexec::test::network
