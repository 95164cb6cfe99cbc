// fresh and reuse functions through the daemon end to end: the function fields, records and metrics
// of sandboxes that answer fnexec/1 frames, concurrency, a daemon killed with busy sandboxes, and a
// state directory of the version before lifecycles.
#include <map>
#include <set>

#include "support/state_v1.h"
#include "test_serve_fixture.h"

using namespace fnexec;
using namespace fnexec::test::serve;
using namespace std::chrono_literals;

namespace {

// A busybox-sh function speaking fnexec/1 by hand (man 7 fnexec-protocol): READY, then per EVENT one
// OK or ERROR. It counts the events it answered, so a reply shows whether the process carried over.
// Events: "fail" → an ERROR frame; "crash" → exit mid-event; "sleep" → 30 s; else echoed.
const std::string kFramedSh = R"sh(
n=0
printf 'READY fnexec/1\n'
while read -r kind id deadline len; do
  [ "$kind" = EVENT ] || exit 9
  ev=$(dd bs=1 count="$len" 2>/dev/null)
  read -r _
  n=$((n+1))
  echo "handling $id n=$n" >&2
  case "$ev" in
    fail) out='{"errorType":"HandlerError","errorMessage":"asked to fail"}'
          printf 'ERROR %s %s\n%s\n' "$id" "${#out}" "$out" ;;
    crash) exit 3 ;;
    sleep) sleep 30; printf 'OK %s 5\nslept\n' "$id" ;;
    *) out="n=$n ev=$ev"; printf 'OK %s %s\n%s\n' "$id" "${#out}" "$out" ;;
  esac
done
)sh";

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = 0; (p = hay.find(needle, p)) != std::string::npos; ++p) ++n;
  return n;
}

std::string record_of(Daemon& d, const Http& reply) {
  auto id = reply.header("Fnexec-Invocation-Id");
  REQUIRE(!id.empty());
  auto r = d.curl("GET", "/v1/invocations/" + id);
  REQUIRE(r.status == 200);
  return r.body;
}

}  // namespace

TEST_SUITE("serve") {
  TEST_CASE("lifecycle fields: round trip over curl and the CLI, named mistakes, fnexec.conf defaults") {
    InvokeDaemon d("default_init_timeout = 3s\ndefault_idle_timeout = 2m\n");
    d.create("plain", "cat", R"("min_warm":0)");
    auto plain = d.curl("GET", "/v1/functions/plain").body;
    CHECK(contains(plain, R"("lifecycle":"oneshot","max_events_per_sandbox":0,"init_timeout_ms":3000)"));
    CHECK(contains(plain, R"("idle_timeout_s":120)"));

    // Not d.cli(): its --socket would land after "--", in the command.
    std::vector<std::string> create = {"fn",      "create", "rf", "--socket", d.socket().string(),
                                       "--image", "bb:1"};
    create.insert(create.end(), {"--min-warm", "0", "--max-concurrency", "2", "--lifecycle", "reuse"});
    create.insert(create.end(), {"--max-events-per-sandbox", "5", "--init-timeout", "2500ms"});
    create.insert(create.end(), {"--idle-timeout", "90s", "--", "/bin/sh", "-c", kFramedSh});
    auto r = test::fnexec(create);
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    auto rf = d.curl("GET", "/v1/functions/rf").body;
    CHECK(contains(rf, R"("lifecycle":"reuse","max_events_per_sandbox":5,"init_timeout_ms":2500)"));
    CHECK(contains(rf, R"("idle_timeout_s":90)"));
    auto ls = d.cli({"fn", "ls"});
    CHECK(contains(ls.out, "LIFECYCLE"));
    CHECK(std::regex_search(ls.out, std::regex(R"(\nrf +bb:1 +reuse )")));

    // Each mistake names the field; nothing is stored.
    auto bad = d.curl("PUT", "/v1/functions/bad", R"({"image":"bb:1","lifecycle":"hot"})");
    CHECK(bad.status == 400);
    CHECK(contains(bad.body, R"(field \"lifecycle\" must be oneshot, fresh or reuse, got \"hot\")"));
    bad = d.curl("PUT", "/v1/functions/bad", R"({"image":"bb:1","lifecycle":"fresh","max_events_per_sandbox":2})");
    CHECK(bad.status == 400);
    CHECK(contains(bad.body, "applies to lifecycle reuse only; this function is fresh"));
    bad = d.curl("PUT", "/v1/functions/bad", R"({"image":"bb:1","init_timeout_ms":0})");
    CHECK(bad.status == 400);
    CHECK(contains(bad.body, R"(\"init_timeout_ms\" must be between 1 and 3600000, got 0)"));
    auto cli_bad = d.cli({"fn", "create", "bad", "--image", "bb:1", "--lifecycle", "hot"});
    CHECK(cli_bad.exit_code != 0);
    CHECK(contains(cli_bad.err, "must be oneshot, fresh or reuse"));
    CHECK(d.curl("GET", "/v1/functions/bad").status == 404);

    // The fields survive a restart.
    d.stop();
    d.start();
    CHECK(contains(d.curl("GET", "/v1/functions/rf").body, R"("lifecycle":"reuse","max_events_per_sandbox":5)"));
  }

  TEST_CASE("lifecycle reuse and fresh over the socket: replies and records name the sandbox") {
    InvokeDaemon d;
    d.create("re", kFramedSh,
             R"("min_warm":1,"max_concurrency":1,"lifecycle":"reuse","max_events_per_sandbox":3)");
    wait_until([&] { return d.warm("re") >= 1; }, "a pre-initialized reuse sandbox");
    std::vector<Http> replies;
    for (int i = 1; i <= 4; ++i) {
      replies.push_back(d.invoke("re", "e" + std::to_string(i)));
      REQUIRE_MESSAGE(replies.back().status == 200, replies.back().body);
    }
    // One process answered three events, carrying its count; the fourth went to a new one.
    CHECK(replies[0].body == "n=1 ev=e1");
    CHECK(replies[1].body == "n=2 ev=e2");
    CHECK(replies[2].body == "n=3 ev=e3");
    CHECK(replies[3].body == "n=1 ev=e4");
    for (int i = 0; i < 4; ++i) CHECK(replies[i].header("Fnexec-Lifecycle") == "reuse");
    CHECK(replies[0].header("Fnexec-Sandbox-Events") == "1");
    CHECK(replies[2].header("Fnexec-Sandbox-Events") == "3");
    CHECK(replies[3].header("Fnexec-Sandbox-Events") == "1");
    auto sandbox = replies[0].header("Fnexec-Sandbox-Id");
    CHECK(!sandbox.empty());
    CHECK(replies[1].header("Fnexec-Sandbox-Id") == sandbox);
    CHECK(replies[2].header("Fnexec-Sandbox-Id") == sandbox);
    CHECK(replies[3].header("Fnexec-Sandbox-Id") != sandbox);
    CHECK(!replies[0].header("Fnexec-Init-Us").empty());  // the init, on the sandbox's first event
    CHECK(replies[1].header("Fnexec-Init-Us").empty());
    CHECK(replies[2].header("Fnexec-Sandbox-Retired") == "max_events");
    CHECK(replies[1].header("Fnexec-Sandbox-Retired").empty());

    auto first = record_of(d, replies[0]);
    CHECK(contains(first, R"("lifecycle":"reuse","sandbox_id":")" + sandbox + R"(","sandbox_events":1,"init_us":)"));
    CHECK(contains(first, R"("outcome":"success")"));
    CHECK(contains(record_of(d, replies[1]), R"("sandbox_events":2,"init_us":null,"retired":null)"));
    CHECK(contains(record_of(d, replies[2]), R"("sandbox_events":3,"init_us":null,"retired":"max_events")"));
    // stderr is kept per event.
    CHECK(std::regex_search(first, std::regex(R"("stderr_tail":"handling [^ ]+ n=1\\n")")));

    auto cli = d.cli({"invocations", "re"});
    REQUIRE(cli.exit_code == 0);
    CHECK(contains(cli.out, "LIFECYCLE"));
    CHECK(contains(cli.out, "max_events"));
    CHECK(count(cli.out, " reuse ") == 4);

    d.create("fr", kFramedSh, R"("min_warm":1,"max_concurrency":2,"lifecycle":"fresh")");
    wait_until([&] { return d.warm("fr") >= 1; }, "a pre-initialized fresh sandbox");
    std::set<std::string> sandboxes;
    for (int i = 0; i < 3; ++i) {
      auto f = d.invoke("fr", "x" + std::to_string(i));
      REQUIRE_MESSAGE(f.status == 200, f.body);
      CHECK(f.body == "n=1 ev=x" + std::to_string(i));  // never another event's state
      CHECK(f.header("Fnexec-Lifecycle") == "fresh");
      CHECK(f.header("Fnexec-Sandbox-Events") == "1");
      CHECK(f.header("Fnexec-Sandbox-Retired") == "fresh");
      CHECK(!f.header("Fnexec-Init-Us").empty());
      sandboxes.insert(f.header("Fnexec-Sandbox-Id"));
      CHECK(contains(record_of(d, f), R"("lifecycle":"fresh")"));
    }
    CHECK(sandboxes.size() == 3);

    auto m = parse_metrics(d.curl("GET", "/metrics").body);
    CHECK(m.at(R"(fnexec_function_lifecycle{function="re",lifecycle="reuse"})") == 1);
    CHECK(m.at(R"(fnexec_function_lifecycle{function="fr",lifecycle="fresh"})") == 1);
    CHECK(m.at(R"(fnexec_sandbox_retirements_total{function="re",reason="max_events"})") == 1);
    CHECK(m.at(R"(fnexec_sandbox_retirements_total{function="fr",reason="fresh"})") == 3);
    CHECK(m.at(R"(fnexec_sandbox_events_sum{function="re"})") == 3);
    CHECK(m.at(R"(fnexec_sandbox_init_duration_seconds_count{function="re"})") == 2);
    CHECK(m.at(R"(fnexec_sandbox_init_duration_seconds_count{function="fr"})") == 3);
  }

  TEST_CASE("lifecycle reuse: an ERROR frame is 200 with Fnexec-Function-Error; a crash is 502") {
    InvokeDaemon d;
    d.create("er", kFramedSh, R"("min_warm":1,"max_concurrency":1,"lifecycle":"reuse")");
    wait_until([&] { return d.warm("er") >= 1; }, "a pre-initialized reuse sandbox");
    auto ok = d.invoke("er", "a");
    REQUIRE(ok.status == 200);
    auto err = d.invoke("er", "fail");
    CHECK(err.status == 200);
    CHECK(err.header("Fnexec-Function-Error") == "Unhandled");
    CHECK(err.header("Fnexec-Error-Type") == "Function.Error");
    CHECK(contains(err.header("Content-Type"), "application/json"));
    CHECK(err.body == R"({"errorType":"HandlerError","errorMessage":"asked to fail"})");
    auto rec = record_of(d, err);
    CHECK(contains(rec, R"("outcome":"error")"));
    CHECK(contains(rec, R"("error_type":"Function.Error","error_body":{"errorType":"HandlerError")"));
    // The sandbox lives on after a handled error.
    auto after = d.invoke("er", "b");
    CHECK(after.status == 200);
    CHECK(after.body == "n=3 ev=b");
    CHECK(after.header("Fnexec-Sandbox-Id") == ok.header("Fnexec-Sandbox-Id"));

    auto crash = d.invoke("er", "crash");
    CHECK(crash.status == 502);
    CHECK(crash.header("Fnexec-Function-Error").empty());
    CHECK(crash.header("Fnexec-Error-Type") == "Runtime.ExitError");
    CHECK(crash.header("Fnexec-Sandbox-Retired") == "exit");
    CHECK(contains(crash.body, R"("error_type":"Runtime.ExitError")"));
    CHECK(contains(record_of(d, crash), R"("retired":"exit","error_type":"Runtime.ExitError")"));
    // A new process answers the next event.
    auto next = d.invoke("er", "c");
    CHECK(next.status == 200);
    CHECK(next.body == "n=1 ev=c");
  }

  TEST_CASE("lifecycle reuse: 16 concurrent callers, max_concurrency 4") {
    InvokeDaemon d;
    d.create("par", kFramedSh, R"("min_warm":1,"max_concurrency":4,"lifecycle":"reuse")");
    wait_until([&] { return d.warm("par") >= 1; }, "a pre-initialized reuse sandbox");
    std::vector<std::thread> clients;
    std::vector<Http> results(16);
    std::atomic<int> rejected{0};
    for (int i = 0; i < 16; ++i)
      clients.emplace_back([&, i] {
        // A caller beyond max_concurrency gets 429 and Retry-After; it tries again like a client should.
        for (;;) {
          results[i] = d.invoke("par", "event-" + std::to_string(i));
          if (results[i].status != 429) return;
          ++rejected;
          std::this_thread::sleep_for(20ms);
        }
      });
    for (auto& t : clients) t.join();
    std::map<std::string, std::set<int>> events_by_sandbox;
    for (int i = 0; i < 16; ++i) {
      const auto& r = results[i];
      REQUIRE_MESSAGE(r.status == 200, r.body);
      int n = std::stoi(r.header("Fnexec-Sandbox-Events"));
      // The process's own count agrees with the daemon's: one event at a time per process.
      CHECK(r.body == "n=" + std::to_string(n) + " ev=event-" + std::to_string(i));
      CHECK(events_by_sandbox[r.header("Fnexec-Sandbox-Id")].insert(n).second);
    }
    // At most max_concurrency processes were busy at once, and (with no retirement) no more than
    // max_concurrency + min_warm were ever started; each served its events as 1, 2, ..., k.
    CHECK(events_by_sandbox.size() <= 5);
    size_t served = 0;
    for (const auto& [sandbox, ns] : events_by_sandbox) {
      CHECK(*ns.begin() == 1);
      CHECK(*ns.rbegin() == static_cast<int>(ns.size()));
      served += ns.size();
    }
    CHECK(served == 16);
    auto m = parse_metrics(d.curl("GET", "/metrics").body);
    CHECK(m.at(R"(fnexec_invocations_total{function="par",outcome="success"})") == 16);
    CHECK(m[R"(fnexec_invocations_total{function="par",outcome="rejected"})"] == rejected.load());
    auto records = d.curl("GET", "/v1/invocations?function=par&limit=100").body;
    CHECK(count(records, R"("status":"done")") == 16);
  }

  TEST_CASE("lifecycle reuse: SIGKILL with busy sandboxes; restart marks them lost and leaves no orphan") {
    InvokeDaemon d;
    auto before = test::ResourceSnapshot::take();
    d.create("busy", kFramedSh,
             R"("min_warm":0,"max_concurrency":4,"lifecycle":"reuse","timeout_ms":60000)");
    std::vector<std::thread> clients;
    for (int i = 0; i < 3; ++i) clients.emplace_back([&] { d.invoke("busy", "sleep"); });
    wait_until(
        [&] {
          return count(d.curl("GET", "/v1/invocations?function=busy").body, R"("status":"running")") == 3;
        },
        "three running invocations");
    d.stop(SIGKILL);
    for (auto& t : clients) t.join();
    d.start();
    auto list = d.curl("GET", "/v1/invocations?function=busy").body;
    CHECK(count(list, R"("status":"lost")") == 3);
    CHECK(count(list, R"("lifecycle":"reuse")") == 3);
    CHECK(contains(d.log(), "recovered lost=3"));
    // Every process of the killed instance is gone (orphans would come back to us, the subreaper),
    // and its sandbox cgroups were removed by the new instance.
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    auto after = test::ResourceSnapshot::take();
    CHECK(after.processes == 1);  // the new daemon
    CHECK(after.cgroups <= before.cgroups + 1);  // at most its prefix, which `before` may predate
    // The function works again.
    auto again = d.invoke("busy", "hi");
    CHECK(again.status == 200);
    CHECK(again.body == "n=1 ev=hi");
  }

  TEST_CASE("lifecycle: a state directory of schema version 1 keeps working") {
    Daemon d;
    d.start();  // imports the test images into the state dir
    d.stop();
    for (const char* f : {"server.db", "server.db-wal", "server.db-shm"}) stdfs::remove(d.state_dir() / f);
    REQUIRE(test::write_state_db_v1(d.state_dir() / "server.db", {"old", "busybox:1"}).empty());
    d.start();
    auto fn = d.curl("GET", "/v1/functions/old");
    REQUIRE(fn.status == 200);
    CHECK(contains(fn.body, R"("lifecycle":"oneshot","max_events_per_sandbox":0,"init_timeout_ms":10000)"));
    // It ran as host root before per-function user namespaces, and still does (state migration 7).
    CHECK(contains(fn.body, R"("userns":false)"));
    CHECK(contains(d.log(), "function=old event=host_root"));
    auto r = d.curl("POST", "/v1/functions/old/invoke", "still here");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body == "still here");
    CHECK(r.header("Fnexec-Lifecycle") == "oneshot");
    auto done = d.curl("GET", "/v1/invocations/v1-done").body;
    CHECK(contains(done, R"("outcome":"success")"));
    CHECK(contains(done, R"("lifecycle":"oneshot")"));
    CHECK(contains(d.curl("GET", "/v1/invocations/v1-running").body, R"("status":"lost")"));
    CHECK(contains(d.curl("GET", "/v1/invocations/" + r.header("Fnexec-Invocation-Id")).body,
                   R"("lifecycle":"oneshot")"));
    CHECK(contains(d.log(), "state migrated to schema_version=2"));
    // And a function of the new kind can be added to it.
    auto put = d.curl("PUT", "/v1/functions/new",
                      R"({"image":"busybox:1","lifecycle":"reuse","min_warm":0,"cmd":["/bin/sh","-c",)" +
                          server::json_string(kFramedSh) + "]}");
    CHECK(put.status == 201);
    auto ev = d.curl("POST", "/v1/functions/new/invoke", "x");
    CHECK(ev.status == 200);
    CHECK(ev.body == "n=1 ev=x");
  }
}  // TEST_SUITE
