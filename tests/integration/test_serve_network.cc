// `fnexec serve` with network bridge functions, in the network suite's lab: the daemon runs in the
// lab's "host" namespace (nsenter), its bridge and nftables table live there, the outside server
// is python's http.server in the "outside" namespace.
#include <doctest/doctest.h>
#include <signal.h>

#include <cstdlib>
#include <string>

#include "network_lab.h"
#include "test_serve_fixture.h"

using namespace fnexec;
using namespace fnexec::test::serve;
using namespace fnexec::test::network;

namespace {

struct NetDaemon : Daemon {
  explicit NetDaemon(std::string extra = "")
      : Daemon("bridge = " + lab().bridge + "\nbridge_subnet = " + kSubnet + "\nbridge_subnet6 = " + kSubnet6 + "\n" +
               extra) {
    launcher_prefix = {"/usr/bin/nsenter", "--net=/run/netns/" + lab().host};
  }
  void create(const std::string& name, const std::string& script, const std::string& fields) {
    std::string body = R"({"image":"busybox:1","cmd":["/bin/sh","-c",)" + server::json_string(script) + "]," +
                       fields + "}";
    auto r = curl("PUT", "/v1/functions/" + name, body);
    REQUIRE_MESSAGE((r.status == 201 || r.status == 200), r.body);
  }
  uint64_t warm(const std::string& name) {
    auto r = curl("GET", "/v1/functions/" + name);
    std::smatch m;
    static const std::regex re(R"re("pool":\{"warm":(\d+))re");
    return std::regex_search(r.body, m, re) ? std::stoull(m[1]) : 0;
  }
  Http invoke(const std::string& name, const std::string& event = "") {
    return curl("POST", "/v1/functions/" + name + "/invoke", event);
  }
  std::string record(const Http& r) {
    return curl("GET", "/v1/invocations/" + r.header("Fnexec-Invocation-Id")).body;
  }
};

const std::string kFetchByName = "timeout 3 wget -q -O- http://outside.test:8080/";

size_t lease_files() {
  size_t n = 0;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(stdfs::path("/run/fnexec/net") / lab().bridge, ec)) {
    auto name = e.path().filename().string();
    if (!name.starts_with(".") && !name.ends_with(".etc")) ++n;
  }
  return n;
}

}  // namespace

TEST_SUITE("network") {
  TEST_CASE_FIXTURE(LabFixture, "serve: a bridge function reaches outside by name from a warm pool, with its traffic in the record") {
    // The daemon also listens on TCP in the host namespace: a sandbox must not reach that port.
    auto port = std::to_string(free_tcp_port());
    auto token = lab().scratch / "token";
    write_file(token, "0123456789abcdef0123456789abcdef\n", 0600);
    NetDaemon daemon("listen = 0.0.0.0:" + port + "\ntoken_file = " + token.string() + "\n");
    daemon.start();
    daemon.create("fetch", kFetchByName,
                  R"("network":"bridge","add_hosts":["outside.test:10.231.0.2"],"min_warm":1)");
    wait_until([&] { return daemon.warm("fetch") >= 1; }, "a parked bridge sandbox");
    auto r = daemon.invoke("fetch");
    CHECK(r.status == 200);
    CHECK(r.body == "hello from outside\n");
    CHECK(r.header("Fnexec-Start") == "warm");
    auto rec = daemon.record(r);
    CHECK_MESSAGE(contains(rec, R"("network":{"bytes_out":)"), rec);
    CHECK(!contains(rec, R"("bytes_out":0,)"));
    CHECK(!contains(rec, R"("bytes_in":0,)"));
    auto fn = daemon.curl("GET", "/v1/functions/fetch").body;
    CHECK(contains(fn, R"("network":"bridge")"));
    CHECK(contains(fn, R"("add_hosts":["outside.test:10.231.0.2"])"));
    CHECK(contains(fn, R"("egress_default":"allow")"));

    // dns appears in the sandbox; a none function sees only lo and records no traffic.
    daemon.create("dns", "cat /etc/resolv.conf /etc/hosts; ip -o link | wc -l",
                  R"("network":"bridge","dns":["10.231.0.2"],"add_hosts":["db:10.9.8.7"],"min_warm":0)");
    auto dns = daemon.invoke("dns");
    CHECK(contains(dns.body, "nameserver 10.231.0.2\n"));
    CHECK(contains(dns.body, "10.9.8.7\tdb\n"));
    CHECK(dns.body.ends_with("2\n"));  // lo and eth0
    daemon.create("none", "ip -o link", R"("min_warm":0)");
    auto none = daemon.invoke("none");
    CHECK(contains(none.body, "lo:"));
    CHECK(!contains(none.body, "eth0"));
    CHECK(!contains(daemon.record(none), R"("network":{)"));

    // Egress: a denied CIDR, the metadata address, the daemon's own TCP port (a host address);
    // an allow rule naming the host address proves the port is open.
    const std::string fetch_out = "timeout 3 wget -q -O- http://10.231.0.2:8080/";
    daemon.create("denied", fetch_out, R"("network":"bridge","egress_deny":["10.231.0.0/30"],"min_warm":0)");
    CHECK(daemon.invoke("denied").status == 502);
    daemon.create("metadata", "timeout 3 wget -q -O- http://169.254.169.254:8080/",
                  R"("network":"bridge","egress_allow":["0.0.0.0/0"],"min_warm":0)");
    CHECK(daemon.invoke("metadata").status == 502);
    const std::string to_daemon = "timeout 3 wget -q -O- http://10.231.0.1:" + port + "/v1/functions 2>&1; echo rc=$?";
    daemon.create("daemon-port", to_daemon, R"("network":"bridge","min_warm":0)");
    auto refused = daemon.invoke("daemon-port");
    CHECK_MESSAGE(!contains(refused.body, "rc=0"), refused.body);
    CHECK_MESSAGE(!contains(refused.body, "401"), refused.body);
    daemon.create("daemon-allowed", to_daemon, R"("network":"bridge","egress_allow":["10.231.0.1"],"min_warm":0)");
    auto allowed = daemon.invoke("daemon-allowed");
    CHECK_MESSAGE(contains(allowed.body, "401"), allowed.body);

    CHECK(daemon.curl("DELETE", "/v1/functions/fetch").status / 100 == 2);
    CHECK(daemon.stop() == 0);
    lab().expect_nothing_left();
  }

  TEST_CASE_FIXTURE(LabFixture, "serve: normal end, timeout, OOM and a failed setup leave no veth, lease or nftables element") {
    NetDaemon d;
    d.start();
    d.create("ok", "echo ok", R"("network":"bridge","min_warm":0)");
    d.create("slow", "sleep 30", R"("network":"bridge","min_warm":0,"timeout_ms":300)");
    d.create("hog", "dd if=/dev/zero of=/dev/null bs=64M count=1", R"("network":"bridge","min_warm":0,"memory_mb":16)");
    d.create("missing", "exec /no/such/program", R"("network":"bridge","min_warm":0)");
    CHECK(d.invoke("ok").status == 200);
    auto t = d.invoke("slow");
    CHECK(t.status == 504);
    auto o = d.invoke("hog");
    CHECK(contains(o.body, R"("oom_killed":true)"));
    CHECK(d.invoke("missing").status == 502);
    lab().expect_nothing_left();
    CHECK(d.stop() == 0);
    lab().expect_nothing_left();

    // A bridge whose subnet overlaps a route of the host: every sandbox's network setup fails.
    std::string other = "nwx" + lab().id;
    Daemon broken("bridge = " + other + "\nbridge_subnet = 10.232.5.0/24\n");
    broken.launcher_prefix = {"/usr/bin/nsenter", "--net=/run/netns/" + lab().host};
    broken.start();
    auto put = broken.curl("PUT", "/v1/functions/x", R"({"image":"busybox:1","cmd":["true"],"network":"bridge","min_warm":0})");
    REQUIRE_MESSAGE(put.status == 201, put.body);
    auto failed = broken.curl("POST", "/v1/functions/x/invoke", "");
    CHECK(failed.status != 200);
    CHECK_MESSAGE(contains(failed.body, "overlaps the host's route to 10.232.0.0/16"), failed.body);
    CHECK(broken.stop() == 0);
    CHECK(test::run({"ip", "-n", lab().host, "link", "show", other}).exit_code != 0);
    std::error_code ec;
    for (const auto& e : stdfs::directory_iterator(stdfs::path("/run/fnexec/net") / other, ec))
      CHECK_MESSAGE(e.path().filename().string().starts_with("."), e.path());  // only the bridge lock
    stdfs::remove_all(stdfs::path("/run/fnexec/net") / other, ec);
    lab().expect_nothing_left();
  }

  TEST_CASE_FIXTURE(LabFixture, "serve: SIGKILLed with parked bridge sandboxes, the restarted daemon removes what they left") {
    NetDaemon d;
    d.start();
    d.create("parked", "echo hi", R"("network":"bridge","min_warm":2)");
    wait_until([&] { return d.warm("parked") >= 2; }, "two parked bridge sandboxes");
    CHECK(lease_files() == 2);
    CHECK(d.stop(SIGKILL) == 128 + SIGKILL);
    // The sandboxes died with the daemon (PDEATHSIG); their leases and map elements stay.
    CHECK(lease_files() == 2);
    auto table = test::run({"ip", "netns", "exec", lab().host, "nft", "list", "table", "inet", "fnexec"}).out;
    CHECK(contains(table, "elements = {"));
    // The restarted daemon removes them before its pools lease again.
    d.start();
    CHECK_MESSAGE(contains(d.log(), "event=network_cleaned bridge=" + lab().bridge + " sandboxes=2"), d.log());
    CHECK(d.curl("DELETE", "/v1/functions/parked").status / 100 == 2);
    CHECK(d.stop() == 0);
    lab().expect_nothing_left();
  }

  TEST_CASE_FIXTURE(LabFixture, "serve: many warm and cold bridge invocations leave no veth, lease or nftables element") {
    NetDaemon d;
    d.start();
    d.create("warm", "echo w", R"("network":"bridge","min_warm":1)");
    d.create("cold", "echo c", R"("network":"bridge","min_warm":0)");
    int rounds = loop_rounds(100);
    for (int i = 0; i < rounds; ++i) {
      auto r = d.invoke(i % 2 ? "cold" : "warm");
      if (r.status != 200) FAIL("invocation ", i, " failed: ", r.status, " ", r.body);
    }
    CHECK(d.curl("DELETE", "/v1/functions/warm").status / 100 == 2);
    CHECK(d.stop() == 0);
    lab().expect_nothing_left();
  }
}
