// fnexec run --network bridge against the real kernel. Everything happens in two network
// namespaces the suite makes: "host", where fnexec runs (its bridge, nftables table and routes live
// there, never in the machine's own namespace), and "outside", a python http.server behind a veth,
// reached from the host namespace through a /30 route (and through 169.254.169.254, the metadata
// address, which must stay unreachable).
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/fixtures.h"
#include "support/proc.h"

#include "network_lab.h"

namespace fnexec::test {
namespace {

using namespace network;

// busybox 1.35 wget crashes (SIGSEGV) when its -T timeout is used, so timeout(1) bounds it instead.
const std::string kFetchByName = "timeout 3 wget -q -O- http://outside.test:8080/";

// network-core: the case the cgroup-v2 VM suite runs too (tests/vm/meson.build), in two sandboxes
// because code in the VM runs ~16x slower; the cases below check each part more thoroughly.
TEST_SUITE("network-core") {
  TEST_CASE_FIXTURE(LabFixture, "core: fetch from outside with counters; metadata, the host and a denied CIDR refused; nothing left") {
    auto report = lab().scratch / "report.json";
    // A refused fetch ends at timeout(1): the dropped SYN gets no answer.
    const std::string script = kFetchByName +
                               " && timeout 3 wget -q -O- http://10.231.0.2:8080/"
                               " && ! timeout 2 wget -q -O- http://169.254.169.254:8080/"
                               " && ! timeout 2 wget -q -O- http://10.231.0.1:8090/ && echo refused";
    auto r = lab().sandbox({"--add-host", "outside.test:10.231.0.2", "--report", report.string()},
                           {"sh", "-c", script});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out == "hello from outside\nhello from outside\nrefused\n");
    std::ifstream in(report);
    std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(json.find("\"network\":{\"bytes_out\":") != std::string::npos);
    CHECK(json.find("\"bytes_in\":0,") == std::string::npos);
    auto denied = lab().sandbox({"--egress-deny", "10.231.0.0/30"},
                                {"sh", "-c", "timeout 2 wget -q -O- http://10.231.0.2:8080/"});
    CHECK(denied.exit_code != 0);
    CHECK(denied.out.empty());
    lab().expect_nothing_left();
  }
}

TEST_SUITE("network") {
  TEST_CASE_FIXTURE(LabFixture, "a bridge sandbox reaches a server outside by name and address, with counters") {
    auto report = lab().scratch / "report.json";
    auto r = lab().sandbox({"--add-host", "outside.test:10.231.0.2", "--report", report.string()},
                           {"sh", "-c", kFetchByName + " && timeout 3 wget -q -O- http://10.231.0.2:8080/"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out == "hello from outside\nhello from outside\n");
    std::ifstream in(report);
    std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(json.find("\"network\":{\"bytes_out\":") != std::string::npos);
    CHECK(json.find("\"bytes_out\":0,") == std::string::npos);
    CHECK(json.find("\"bytes_in\":0,") == std::string::npos);
    lab().expect_nothing_left();
  }

  TEST_CASE_FIXTURE(LabFixture, "--add-host and --dns appear in the sandbox's /etc files; none sees only lo") {
    auto r = lab().sandbox({"--add-host", "db:10.9.8.7", "--dns", "10.231.0.2", "--hostname", "fn1"},
                           {"sh", "-c", "cat /etc/hosts /etc/resolv.conf; ip -o link | wc -l"});
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("10.9.8.7\tdb\n") != std::string::npos);
    CHECK(r.out.find("\n10.230.0.") != std::string::npos);  // the sandbox's address, whichever the lease
    CHECK(r.out.find("\tfn1\n") != std::string::npos);
    CHECK(r.out.find("nameserver 10.231.0.2\n") != std::string::npos);
    CHECK(r.out.ends_with("2\n"));  // lo and eth0
    auto none = lab().sandbox({}, {"sh", "-c", "ip -o link"}, "none");
    CHECK(none.exit_code == 0);
    CHECK(none.out.find("lo:") != std::string::npos);
    CHECK(none.out.find("eth0") == std::string::npos);
  }

  TEST_CASE_FIXTURE(LabFixture, "egress policy: deny by CIDR and port, default deny with allow, metadata always refused") {
    const std::string fetch = "timeout 3 wget -q -O- http://10.231.0.2:8080/";
    CHECK(lab().sandbox({"--egress-deny", "10.231.0.0/30"}, {"sh", "-c", fetch}).exit_code != 0);
    CHECK(lab().sandbox({"--egress-deny", "10.231.0.2/32:8080"}, {"sh", "-c", fetch}).exit_code != 0);
    CHECK(lab().sandbox({"--egress-deny", "10.231.0.2/32:8081"}, {"sh", "-c", fetch}).exit_code == 0);
    CHECK(lab().sandbox({"--egress-default", "deny"}, {"sh", "-c", fetch}).exit_code != 0);
    CHECK(lab()
              .sandbox({"--egress-default", "deny", "--egress-allow", "10.231.0.2:8080"}, {"sh", "-c", fetch})
              .exit_code == 0);
    // The metadata address is served by the outside namespace, yet refused unless named.
    const std::string metadata = "timeout 3 wget -q -O- http://169.254.169.254:8080/";
    CHECK(lab().sandbox({}, {"sh", "-c", metadata}).exit_code != 0);
    CHECK(lab().sandbox({"--egress-allow", "0.0.0.0/0"}, {"sh", "-c", metadata}).exit_code != 0);
    CHECK(lab().sandbox({"--egress-allow", "169.254.169.254"}, {"sh", "-c", metadata}).exit_code == 0);
    // The host's own addresses (the gateway, the outside-facing address) are refused unless named.
    CHECK(lab().sandbox({}, {"sh", "-c", "timeout 3 wget -q -O- http://10.231.0.1:8090/"}).exit_code != 0);
    CHECK(lab().sandbox({}, {"sh", "-c", "timeout 3 wget -q -O- http://10.230.0.1:8090/"}).exit_code != 0);
    CHECK(lab()
              .sandbox({"--egress-allow", "10.231.0.1"},
                       {"sh", "-c", "timeout 3 wget -q -O- http://10.231.0.1:8090/"})
              .exit_code == 0);
    CHECK(lab()
              .sandbox({"--egress-allow", "10.230.0.1:8090"},
                       {"sh", "-c", "timeout 3 wget -q -O- http://10.230.0.1:8090/"})
              .exit_code == 0);
    lab().expect_nothing_left();
  }

  TEST_CASE_FIXTURE(LabFixture, "two sandboxes on the bridge cannot reach each other") {
    // The first sandbox serves on port 8000 of its address until its stdin closes.
    stdfs::create_directories(lab().rootfs / "www");
    std::ofstream(lab().rootfs / "www/index.html") << "sandbox one\n";
    Conversation first(lab().fnexec_argv(
        {}, {"sh", "-c",
             "httpd -p 8000 -h /www; echo up $(ip -o -4 addr show eth0) $(ip -o -6 addr show eth0 scope global)"
             " end; read x || true"}));
    std::string seen, address, address6;
    bool up = first.exchange("", [&](std::string_view chunk) {
      seen += chunk;
      if (seen.find(" end") == std::string::npos) return false;
      auto word_after = [&](const std::string& key) {
        auto at = seen.find(key);
        auto slash = at == std::string::npos ? at : seen.find('/', at);
        return slash == std::string::npos ? std::string() : seen.substr(at + key.size(), slash - at - key.size());
      };
      address = word_after("inet ");
      address6 = word_after("inet6 ");
      return true;
    });
    REQUIRE(up);
    // The host reaches it (so it is listening), the second sandbox does not.
    std::string got;
    for (int i = 0; i < 50 && got.empty(); ++i)
      got = lab().in_host({"curl", "-sf", "-m", "1", "http://" + address + ":8000/"}).out;
    CHECK(got == "sandbox one\n");
    auto second = lab().sandbox({}, {"sh", "-c", "timeout 3 wget -q -O- http://" + address + ":8000/"});
    CHECK(second.exit_code != 0);
    CHECK(second.out.empty());
    // The same over IPv6.
    REQUIRE(address6.starts_with("fd00:230::"));
    CHECK(lab().in_host({"curl", "-gsf", "-m", "2", "http://[" + address6 + "]:8000/"}).out == "sandbox one\n");
    auto second6 = lab().sandbox({}, {"sh", "-c", "timeout 3 wget -q -O- http://[" + address6 + "]:8000/"});
    CHECK(second6.exit_code != 0);
    CHECK(second6.out.empty());
    first.close_stdin();
    CHECK(first.wait() == 0);
    lab().expect_nothing_left();
  }

  TEST_CASE_FIXTURE(LabFixture, "IPv6: by address and by name, /etc files, metadata, the host and a denied v6 CIDR refused") {
    const std::string by_address = "timeout 3 wget -q -O- http://[fd00:231::2]:8080/";
    const std::string script = by_address +
                               " && timeout 3 wget -q -O- http://outside6.test:8080/"
                               " && ! timeout 2 wget -q -O- http://[fd00:ec2::254]:8080/"
                               " && ! timeout 2 wget -q -O- http://[fd00:231::1]:8090/"
                               " && ! timeout 2 wget -q -O- http://[fd00:230::1]:8090/ && echo refused"
                               " && cat /etc/hosts /etc/resolv.conf && ip -o -6 route show default";
    auto r = lab().sandbox({"--add-host", "outside6.test:fd00:231::2", "--dns", "fd00:231::2", "--hostname", "fn6"},
                           {"sh", "-c", script});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK_MESSAGE(r.out.starts_with("hello from outside\nhello from outside\nrefused\n"), r.out);
    CHECK(r.out.find("\nfd00:230::") != std::string::npos);  // the sandbox's own address
    CHECK(r.out.find("\tfn6\n") != std::string::npos);
    CHECK(r.out.find("fd00:231::2\toutside6.test\n") != std::string::npos);
    CHECK(r.out.find("nameserver fd00:231::2\n") != std::string::npos);
    CHECK(r.out.find("default via fd00:230::1 dev eth0") != std::string::npos);
    // Denied by CIDR, by address and port; allowed again by naming the address.
    CHECK(lab().sandbox({"--egress-deny", "fd00:231::/64"}, {"sh", "-c", by_address}).exit_code != 0);
    CHECK(lab().sandbox({"--egress-deny", "[fd00:231::2]:8080"}, {"sh", "-c", by_address}).exit_code != 0);
    CHECK(lab().sandbox({"--egress-default", "deny", "--egress-allow", "[fd00:231::2]:8080"}, {"sh", "-c", by_address})
              .exit_code == 0);
    CHECK(lab()
              .sandbox({"--egress-allow", "fd00:ec2::254"},
                       {"sh", "-c", "timeout 3 wget -q -O- http://[fd00:ec2::254]:8080/"})
              .exit_code == 0);
    // The lab's argv with another --bridge-subnet6.
    auto with_subnet6 = [](const std::string& subnet6, const std::vector<std::string>& argv) {
      auto a = lab().fnexec_argv({}, argv);
      *(std::find(a.begin(), a.end(), "--bridge-subnet6") + 1) = subnet6;
      return run(a);
    };
    // IPv4 only on request: no IPv6 address, route or hosts line.
    auto v4 = with_subnet6("none", {"sh", "-c", "ip -o -6 addr show scope global; cat /etc/hosts"});
    CHECK_MESSAGE(v4.exit_code == 0, v4.err);
    CHECK(v4.out.find("fd00:230::") == std::string::npos);
    auto small = with_subnet6("fd00:230::/120", {"true"});
    CHECK(small.exit_code != 0);
    CHECK(small.err.find("/96 or larger") != std::string::npos);
    auto bad_host = lab().sandbox({"--add-host", "x:fd00::zz"}, {"true"});
    CHECK(bad_host.err.find("expected an IPv4 or IPv6 address") != std::string::npos);
    lab().expect_nothing_left();
  }

  TEST_CASE_FIXTURE(LabFixture, "a SIGKILLed fnexec run leaves state the next run removes") {
    auto killed = std::make_unique<Conversation>(lab().fnexec_argv({}, {"sh", "-c", "echo up; sleep 60"}));
    REQUIRE(
        killed->exchange("", [](std::string_view out) { return out.find("up") != std::string_view::npos; }));
    auto leases = [] {
      size_t n = 0;
      for (const auto& e : stdfs::directory_iterator(stdfs::path("/run/fnexec/net") / lab().bridge)) {
        auto name = e.path().filename().string();
        if (!name.starts_with(".") && !name.ends_with(".etc")) ++n;
      }
      return n;
    };
    CHECK(leases() == 1);
    // The Conversation's destructor SIGKILLs fnexec; its sandbox dies with it (PDEATHSIG), the
    // lease file and the map element stay.
    killed.reset();
    CHECK(leases() == 1);
    auto table = run({"ip", "netns", "exec", lab().host, "nft", "list", "table", "inet", "fnexec"}).out;
    CHECK(table.find("elements = {") != std::string::npos);
    CHECK(lab().sandbox({}, {"true"}).exit_code == 0);
    lab().expect_nothing_left();
  }

  TEST_CASE_FIXTURE(LabFixture, "sequential bridge runs (200; FNEXEC_NETWORK_ROUNDS) leave no veth, lease, nftables element or mount") {
    for (int i = 0, rounds = loop_rounds(200); i < rounds; ++i) {
      auto r = lab().sandbox({}, {"true"});
      if (r.exit_code != 0) FAIL("run ", i, " failed: ", r.err);
    }
    // Other test runs mount meanwhile, so mounts are counted below our own scratch tree only.
    CHECK(count_mounts_below(lab().scratch.path()) == 1);  // the scratch tmpfs itself
    lab().expect_nothing_left();
  }

  TEST_CASE_FIXTURE(LabFixture, "bad input: clear errors, nothing left behind") {
    auto bad_cidr = lab().sandbox({"--egress-deny", "10.0.0.1/8"}, {"true"});
    CHECK(bad_cidr.exit_code != 0);
    CHECK(bad_cidr.err.find("host bits are set; the network is 10.0.0.0/8") != std::string::npos);
    auto bad_port = lab().sandbox({"--egress-allow", "10.0.0.0/8:99999"}, {"true"});
    CHECK(bad_port.err.find("egress port") != std::string::npos);
    auto bad_default = lab().sandbox({"--egress-default", "maybe"}, {"true"});
    CHECK(bad_default.err.find("expected allow or deny") != std::string::npos);
    auto no_bridge = lab().sandbox({"--dns", "10.0.0.1"}, {"true"}, "none");
    CHECK(no_bridge.err.find("need --network bridge") != std::string::npos);
    auto bad_mode = lab().sandbox({}, {"true"}, "host");
    CHECK(bad_mode.err.find("expected none") != std::string::npos);
    // A new bridge whose subnet overlaps a route the host namespace has (10.232.0.0/16).
    std::string other = "nwx" + lab().id;
    auto overlap = run({"nsenter", "--net=/run/netns/" + lab().host, fnexec_bin().string(), "--root",
                        lab().state.string(), "run", "--rootfs", "--network", "bridge", "--bridge", other,
                        "--bridge-subnet", "10.232.5.0/24", lab().rootfs.string(), "--", "true"});
    CHECK(overlap.exit_code != 0);
    CHECK(overlap.err.find("overlaps the host's route to 10.232.0.0/16") != std::string::npos);
    CHECK(run({"ip", "-n", lab().host, "link", "show", other}).exit_code != 0);
    std::error_code ec;
    stdfs::remove_all(stdfs::path("/run/fnexec/net") / other, ec);
    // The suite's bridge exists with 10.230.0.1/24: another subnet for it is refused.
    REQUIRE(lab().sandbox({}, {"true"}).exit_code == 0);
    auto mismatch =
        run({"nsenter", "--net=/run/netns/" + lab().host, fnexec_bin().string(), "--root",
             lab().state.string(), "run", "--rootfs", "--network", "bridge", "--bridge", lab().bridge,
             "--bridge-subnet", "10.240.0.0/24", lab().rootfs.string(), "--", "true"});
    CHECK(mismatch.exit_code != 0);
    CHECK(mismatch.err.find("it exists with address 10.230.0.1/24") != std::string::npos);
    lab().expect_nothing_left();
  }

  TEST_CASE_FIXTURE(LabFixture, "hostile rootfs: the generated /etc/hosts and resolv.conf follow links inside the root only") {
    ScratchTmpfs tree("64m");
    auto rootfs = tree / "rootfs";
    populate_busybox_rootfs(rootfs);
    stdfs::create_directories(rootfs / "etc");
    stdfs::create_directories(rootfs / "run");
    // An image whose resolv.conf is systemd-resolved's link (relative, with ..) and whose hosts
    // is a link into /proc.
    stdfs::create_symlink("../run/stub-resolv.conf", rootfs / "etc/resolv.conf");
    stdfs::create_symlink("/proc/sys/kernel/hostname", rootfs / "etc/hosts");
    auto with_rootfs = [&](std::vector<std::string> argv) {
      std::replace(argv.begin(), argv.end(), lab().rootfs.string(), rootfs.string());
      return run(argv);
    };
    auto into_proc = with_rootfs(lab().fnexec_argv({"--dns", "10.231.0.2"}, {"cat", "/etc/hosts"}));
    CHECK(into_proc.exit_code == 125);
    CHECK_MESSAGE(into_proc.err.find("/etc/hosts: a symlink leads it into /proc, /sys or /dev") != std::string::npos,
                  into_proc.err);
    lab().expect_nothing_left();

    stdfs::remove(rootfs / "etc/hosts");
    auto inside = with_rootfs(lab().fnexec_argv({"--dns", "10.231.0.2"}, {"cat", "/etc/resolv.conf", "/run/stub-resolv.conf"}));
    CHECK_MESSAGE(inside.exit_code == 0, inside.err);
    CHECK(inside.out == "nameserver 10.231.0.2\nnameserver 10.231.0.2\n");
    CHECK(!stdfs::exists(rootfs / "run/stub-resolv.conf"));  // made in the sandbox's upper layer
    lab().expect_nothing_left();
  }
}

}  // namespace
}  // namespace fnexec::test
