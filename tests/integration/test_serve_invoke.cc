// Invocations through the daemon end to end: real images, real warm pools, real sandboxes.
#include <sqlite3.h>

#include "server/client.h"
#include "server/json.h"
#include "test_serve_fixture.h"

using namespace fnexec;
using namespace fnexec::test::serve;
using namespace std::chrono_literals;

namespace {

// The daemon's open fds; network namespaces are counted apart, as netns_fds, because the pool keeps
// up to 64 pristine ones to recycle (src/sandbox/netns_pool.h) and their number follows the load.
size_t fds_of(pid_t pid, bool netns = false) {
  size_t n = 0;
  for (auto& e : stdfs::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    std::error_code ec;
    bool is_netns = stdfs::read_symlink(e.path(), ec).string().starts_with("net:[");
    n += is_netns == netns;
  }
  return n;
}

}  // namespace

TEST_SUITE("serve") {
  TEST_CASE("invoke sync: stdout is the body, warm start once the pool is full, headers carry the record") {
    InvokeDaemon d;
    d.create("echo", "cat; echo to-stderr >&2", R"("min_warm":2)");
    wait_until([&] { return d.warm("echo") >= 2; }, "two parked sandboxes");
    auto r = d.invoke("echo", "hello event");
    CHECK(r.status == 200);
    CHECK(r.body == "hello event");
    CHECK(r.header("Fnexec-Start") == "warm");
    CHECK(r.header("Fnexec-Exit-Code") == "0");
    CHECK(r.header("Fnexec-Invocation-Id").size() == 32);
    auto wall = std::stoull(r.header("Fnexec-Duration-Us"));
    CHECK(wall > 0);
    CHECK(std::stoull(r.header("Fnexec-Billed-Ms")) == (wall + 999) / 1000);
    CHECK(!r.header("Fnexec-Cpu-Us").empty());
    CHECK(!r.header("Fnexec-Memory-Peak-Bytes").empty());

    auto rec = d.curl("GET", "/v1/invocations/" + r.header("Fnexec-Invocation-Id"));
    CHECK(contains(rec.body, R"("status":"done")"));
    CHECK(contains(rec.body, R"("outcome":"success")"));
    CHECK(contains(rec.body, R"("start":"warm")"));
    CHECK(contains(rec.body, "to-stderr"));

    auto cli = d.cli({"invoke", "echo"}, "from the cli");
    CHECK(cli.exit_code == 0);
    CHECK(cli.out == "from the cli");

    // A cold start when the pool is empty: min_warm 0.
    d.create("cold", "echo cold", R"("min_warm":0)");
    auto c = d.invoke("cold", "");
    CHECK(c.status == 200);
    CHECK(c.header("Fnexec-Start") == "cold");

    auto m = parse_metrics(d.curl("GET", "/metrics").body);
    CHECK(m.at(R"(fnexec_invocations_total{function="echo",outcome="success"})") == 2);
    CHECK(m.at(R"(fnexec_starts_total{kind="cold"})") >= 1);
    CHECK(m.at(R"(fnexec_invocation_duration_seconds_count{function="echo"})") == 2);
  }

  TEST_CASE("function errors: exit code 502, timeout 504, OOM 502, output too large 502") {
    InvokeDaemon d;
    d.create("fails", "echo oops >&2; exit 3", R"("min_warm":0)");
    auto r = d.invoke("fails", "");
    CHECK(r.status == 502);
    CHECK(contains(r.body, R"("exit_code":3)"));
    CHECK(contains(r.body, "oops"));
    CHECK(r.header("Fnexec-Exit-Code") == "3");
    auto cli = d.cli({"invoke", "fails"});
    CHECK(cli.exit_code == 3);
    CHECK(contains(cli.err, "oops"));

    d.create("slow", "sleep 30", R"("min_warm":0,"timeout_ms":300)");
    auto t = d.invoke("slow", "");
    CHECK(t.status == 504);
    CHECK(contains(t.body, R"("timed_out":true)"));
    CHECK(d.cli({"invoke", "slow"}).exit_code == 124);

    d.create("hog", "dd if=/dev/zero of=/dev/null bs=64M count=1", R"("min_warm":0,"memory_mb":16)");
    auto o = d.invoke("hog", "");
    CHECK(o.status == 502);
    CHECK(contains(o.body, R"("oom_killed":true)"));

    d.create("chatty", "head -c 100000 /dev/zero", R"("min_warm":0,"max_output_bytes":1000)");
    auto big = d.invoke("chatty", "");
    CHECK(big.status == 502);
    CHECK(contains(big.body, R"("output_too_large":true)"));

    auto list = d.curl("GET", "/v1/invocations?limit=100").body;
    for (const char* outcome : {"error", "timeout", "oom", "output_too_large"})
      CHECK_MESSAGE(contains(list, std::string(R"("outcome":")") + outcome + "\""), outcome);
  }

  TEST_CASE("16 parallel clients; 429 beyond max_concurrency") {
    InvokeDaemon d;
    d.create("par", "cat", R"("min_warm":4,"max_concurrency":16)");
    std::vector<std::thread> clients;
    std::vector<Http> results(16);
    for (int i = 0; i < 16; ++i)
      clients.emplace_back([&, i] { results[i] = d.invoke("par", "event-" + std::to_string(i)); });
    for (auto& t : clients) t.join();
    for (int i = 0; i < 16; ++i) {
      CHECK(results[i].status == 200);
      CHECK(results[i].body == "event-" + std::to_string(i));
    }

    d.create("one", "cat >/dev/null; sleep 3", R"("min_warm":0,"max_concurrency":1)");
    std::thread busy([&] { CHECK(d.invoke("one", "").status == 200); });
    wait_until(
        [&] { return contains(d.curl("GET", "/v1/invocations?function=one").body, R"("status":"running")"); },
        "the first invocation to run");
    auto rejected = d.invoke("one", "");
    CHECK(rejected.status == 429);
    CHECK(rejected.header("Retry-After") == "1");
    CHECK(contains(rejected.body, "max_concurrency (1)"));
    busy.join();
  }

  TEST_CASE("SIGTERM drains: an invocation running when the signal comes finishes and is answered") {
    InvokeDaemon d("shutdown_grace = 60s\n");
    // The sandbox is warm when the event comes, so it was launched by the pool's launcher thread,
    // whose exit at shutdown must not take the sandbox with it (PR_SET_PDEATHSIG is per thread).
    d.create("slow", "read x; sleep 2; echo done-$x", R"("min_warm":1)");
    wait_until([&] { return d.warm("slow") >= 1; }, "a parked sandbox");
    Http reply;
    std::thread caller([&] { reply = d.invoke("slow", "drain\n"); });
    // busy counts from the moment the pool handed the sandbox out, past its shutting-down check.
    wait_until([&] { return contains(d.curl("GET", "/v1/functions/slow").body, R"("busy":1)"); },
               "the invocation to take the sandbox");
    CHECK(d.stop(SIGTERM) == 0);
    caller.join();
    CHECK(reply.status == 200);
    CHECK(reply.body == "done-drain\n");
    CHECK(contains(d.log(), "shutting down"));
  }

  TEST_CASE("async: 202, queued durably, run, result kept") {
    InvokeDaemon d;
    d.create("up", "tr a-z A-Z", R"("min_warm":1,"max_concurrency":2)");
    std::vector<std::string> ids;
    for (int i = 0; i < 5; ++i) {
      auto r = d.invoke("up", "event " + std::to_string(i), "?mode=async");
      REQUIRE(r.status == 202);
      ids.push_back(r.header("Fnexec-Invocation-Id"));
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      Http rec;
      wait_until(
          [&] {
            rec = d.curl("GET", "/v1/invocations/" + ids[i]);
            return contains(rec.body, R"("status":"done")");
          },
          "the async invocation to finish");
      CHECK(contains(rec.body, R"("outcome":"success")"));
      CHECK(contains(rec.body, "\"output\":\"EVENT " + std::to_string(i) + "\""));
    }
    auto cli = d.cli({"invoke", "up", "--async"}, "x");
    CHECK(cli.exit_code == 0);
    CHECK(cli.out.size() == 33);
  }

  TEST_CASE("async: binary output comes back byte for byte (base64 in the record, raw from the CLI)") {
    InvokeDaemon d;
    d.create("echo", "cat", R"("min_warm":0)");
    std::string bytes;
    uint32_t x = 2463534242u;  // a fixed xorshift sequence: every byte value, invalid UTF-8 among them
    for (int i = 0; i < 65536; ++i) {
      x ^= x << 13, x ^= x >> 17, x ^= x << 5;
      bytes.push_back(static_cast<char>(i < 256 ? i : x & 0xFF));
    }
    auto queued = d.cli({"invoke", "echo", "--async"}, bytes);
    REQUIRE_MESSAGE(queued.exit_code == 0, queued.err);
    std::string id = queued.out.substr(0, 32);
    Http rec;
    wait_until(
        [&] {
          rec = d.curl("GET", "/v1/invocations/" + id);
          return contains(rec.body, R"("status":"done")");
        },
        "the async invocation to finish");
    CHECK(contains(rec.body, R"("outcome":"success")"));
    CHECK(contains(rec.body, R"("output_encoding":"base64")"));
    auto out = d.cli({"invocations", "--id", id, "--output"});
    REQUIRE_MESSAGE(out.exit_code == 0, out.err);
    CHECK(out.out.size() == bytes.size());
    CHECK(out.out == bytes);
    // A sync invocation has no output kept: --output says so.
    auto sync = d.invoke("echo", "x");
    REQUIRE(sync.status == 200);
    auto none = d.cli({"invocations", "--id", sync.header("Fnexec-Invocation-Id"), "--output"});
    CHECK(none.exit_code != 0);
    CHECK_MESSAGE(contains(none.err, "only async invocations keep theirs"), none.err);
  }

  TEST_CASE("logs: stderr tails by function, CLI") {
    InvokeDaemon d;
    d.create("talk", R"(read line; echo "log: $line" >&2)", R"("min_warm":1)");
    for (int i = 0; i < 3; ++i) REQUIRE(d.invoke("talk", "n" + std::to_string(i) + "\n").status == 200);
    auto logs = d.curl("GET", "/v1/functions/talk/logs");
    CHECK(logs.status == 200);
    CHECK(logs.body.find("log: n0") < logs.body.find("log: n2"));
    auto cli = d.cli({"logs", "talk"});
    CHECK(cli.exit_code == 0);
    CHECK(cli.out == "log: n0\nlog: n1\nlog: n2\n");
  }

  TEST_CASE("2000 invocations leave no leaked mounts, cgroups, fds or processes") {
    InvokeDaemon d;
    d.create("loop", "cat", R"("min_warm":2,"max_concurrency":4)");
    wait_until([&] { return d.warm("loop") >= 2; }, "the pool to fill");
    auto client = server::Client::connect({d.socket().string(), {}, {}});
    REQUIRE(client);
    // Warm up once so lazily opened files (the database, logs) are in the baseline.
    REQUIRE(client->request("POST", "/v1/functions/loop/invoke", "w")->status == 200);
    wait_until([&] { return d.warm("loop") >= 2; }, "the pool to refill");
    auto before = test::ResourceSnapshot::take();
    auto daemon_fds = fds_of(d.pid());
    for (int i = 0; i < 2000; ++i) {
      auto r = client->request("POST", "/v1/functions/loop/invoke", std::to_string(i));
      REQUIRE(r);
      REQUIRE(r->status == 200);
      REQUIRE(r->body == std::to_string(i));
    }
    wait_until([&] { return d.warm("loop") >= 2; }, "the pool to refill");
    // Used sandboxes are destroyed by the daemon's cleanup thread, off the invocation's path: give
    // it the time to catch up (a minute at most) before counting.
    test::ResourceSnapshot after;
    for (int i = 0; i < 1200; ++i) {
      after = test::ResourceSnapshot::take();
      if (after.cgroups == before.cgroups && after.processes == before.processes) break;
      std::this_thread::sleep_for(50ms);
    }
    CHECK(after.mounts == before.mounts);
    CHECK(after.cgroups == before.cgroups);
    CHECK(after.processes == before.processes);
    CHECK(fds_of(d.pid()) == daemon_fds);
    CHECK(fds_of(d.pid(), true) <= 64 + 4);  // recycled namespaces: the pool's 64 and the live sandboxes'
    auto m = parse_metrics(d.curl("GET", "/metrics").body);
    CHECK(m.at(R"(fnexec_invocations_total{function="loop",outcome="success"})") == 2001);
  }

  TEST_CASE("SIGKILL mid-load: restart marks lost invocations and leaves no orphan sandbox") {
    InvokeDaemon d;
    d.create("sleepy", "sleep 30", R"("min_warm":0,"max_concurrency":4,"timeout_ms":60000)");
    std::vector<std::thread> clients;
    for (int i = 0; i < 3; ++i) clients.emplace_back([&] { d.invoke("sleepy", ""); });
    wait_until(
        [&] {
          auto body = d.curl("GET", "/v1/invocations?function=sleepy").body;
          size_t n = 0;
          for (size_t p = 0; (p = body.find(R"("status":"running")", p)) != std::string::npos; ++p) ++n;
          return n == 3;
        },
        "three running invocations");
    d.stop(SIGKILL);
    for (auto& t : clients) t.join();
    d.start();
    auto list = d.curl("GET", "/v1/invocations?function=sleepy").body;
    size_t lost = 0;
    for (size_t p = 0; (p = list.find(R"("status":"lost")", p)) != std::string::npos; ++p) ++lost;
    CHECK(lost == 3);
    // Every process of the crashed instance is gone: only the new daemon is left below the test
    // (orphaned sandbox init processes would have come back to us, the subreaper, and be counted).
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    CHECK(test::ResourceSnapshot::take().processes == 1);
  }

}  // TEST_SUITE

