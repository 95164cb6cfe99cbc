// Async delivery through the daemon (issue 17): retries with backoff, dead letters, replay, and an
// event interrupted by a SIGKILL of the daemon delivered again. Real sandboxes, curl and the CLI.
#include "test_serve_fixture.h"

using namespace fnexec;
using namespace fnexec::test::serve;

namespace {

// A reuse function speaking fnexec/1 by hand: it answers ERROR to its first $FAILS events and OK
// after that. A Function.Error keeps a reuse sandbox, so with one sandbox the count spans deliveries.
const std::string kFailsThenOk = R"sh(
n=0
printf 'READY fnexec/1\n'
while read -r kind id deadline len; do
  ev=$(dd bs=1 count="$len" 2>/dev/null)
  read -r _
  n=$((n+1))
  echo "handling $ev n=$n" >&2
  if [ "$n" -le "$FAILS" ]; then
    out="{\"errorType\":\"Flaky\",\"errorMessage\":\"failure $n\"}"
    printf 'ERROR %s %s\n%s\n' "$id" "${#out}" "$out"
  else
    out="ok n=$n ev=$ev"
    printf 'OK %s %s\n%s\n' "$id" "${#out}" "$out"
  fi
done
)sh";

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = 0; (p = hay.find(needle, p)) != std::string::npos; ++p) ++n;
  return n;
}

std::string queue(InvokeDaemon& d, const std::string& name, const std::string& event) {
  auto r = d.invoke(name, event, "?mode=async");
  REQUIRE_MESSAGE(r.status == 202, r.body);
  return r.header("Fnexec-Invocation-Id");
}

// The record once its status is no longer queued or running.
std::string wait_finished(InvokeDaemon& d, const std::string& id) {
  std::string body;
  wait_until(
      [&] {
        body = d.curl("GET", "/v1/invocations/" + id).body;
        return !contains(body, R"("status":"queued")") && !contains(body, R"("status":"running")");
      },
      "the async invocation to finish");
  return body;
}

}  // namespace

TEST_SUITE("serve") {
  TEST_CASE("async delivery: two failed deliveries, then delivery 3 succeeds; each delivery's stderr is kept") {
    InvokeDaemon d;
    d.create("flaky", kFailsThenOk,
             R"("lifecycle":"reuse","min_warm":1,"max_concurrency":1,"env":["FAILS=2"],)"
             R"("retries":2,"retry_backoff":{"initial_ms":0})");
    auto fn = d.curl("GET", "/v1/functions/flaky").body;
    CHECK(contains(fn, R"("retries":2,"retry_backoff":{"initial_ms":0,"multiplier":2,"max_ms":60000})"));
    auto id = queue(d, "flaky", "e1");
    auto rec = wait_finished(d, id);
    CHECK(contains(rec, R"("status":"done")"));
    CHECK(contains(rec, R"("outcome":"success")"));
    CHECK(contains(rec, R"("output":"ok n=3 ev=e1")"));
    CHECK(contains(rec, R"("delivery":3)"));
    CHECK(contains(rec, R"("dead_letter":false)"));
    // Deliveries in order, one log entry each, under the one invocation id.
    auto logs = d.curl("GET", "/v1/functions/flaky/logs").body;
    CHECK(count(logs, id) == 3);
    auto n1 = logs.find("handling e1 n=1"), n2 = logs.find("handling e1 n=2"), n3 = logs.find("handling e1 n=3");
    CHECK(n1 < n2);
    CHECK(n2 < n3);
    CHECK(n3 != std::string::npos);
    CHECK(contains(d.log(), "delivery 1 failed (error); delivery 2 in 0 ms"));
    CHECK(d.curl("GET", "/v1/dead-letters").body == R"({"dead_letters":[],"next":0})");
  }

  TEST_CASE("async delivery: an always-failing event is dead-lettered after its retries; replay and rm") {
    InvokeDaemon d;
    d.create("broken", "cat >/dev/null; echo broke >&2; exit 3",
             R"("min_warm":0,"retries":1,"retry_backoff":{"initial_ms":0})");
    d.create("never", "exit 4", R"("min_warm":0,"retries":0)");
    auto id = queue(d, "broken", "precious event");
    auto never = queue(d, "never", "x");
    auto rec = wait_finished(d, id);
    CHECK(contains(rec, R"("status":"done")"));
    CHECK(contains(rec, R"("outcome":"error")"));
    CHECK(contains(rec, R"("delivery":2)"));
    CHECK(contains(rec, R"("dead_letter":true)"));
    // retries 0: the first failure goes straight to the dead letters.
    auto never_rec = wait_finished(d, never);
    CHECK(contains(never_rec, R"("delivery":1)"));
    CHECK(contains(never_rec, R"("dead_letter":true)"));

    auto list = d.curl("GET", "/v1/dead-letters?function=broken");
    REQUIRE(list.status == 200);
    CHECK(count(list.body, R"("id":)") == 1);
    CHECK(contains(list.body, "\"id\":\"" + id + "\""));
    CHECK(contains(list.body, R"("attempts":2,"outcome":"error","error":"function broken exited with code 3")"));
    CHECK(!contains(list.body, "precious event"));  // lists leave the events out
    auto all = d.curl("GET", "/v1/dead-letters").body;
    CHECK(count(all, R"("function":)") == 2);
    CHECK(contains(all, R"("function":"never","invocation_id":")" + never + R"(","attempts":1)"));
    // Paging: after the first entry's seq only the second is left.
    CHECK(count(d.curl("GET", "/v1/dead-letters?limit=1").body, R"("function":)") == 1);
    auto one = d.curl("GET", "/v1/dead-letters/" + id);
    REQUIRE(one.status == 200);
    CHECK(contains(one.body, R"("event":"precious event","event_encoding":"utf-8")"));
    CHECK(contains(one.body, R"("replayed_as":null)"));

    auto ls = d.cli({"dead-letters", "ls", "broken"});
    REQUIRE_MESSAGE(ls.exit_code == 0, ls.err);
    CHECK(contains(ls.out, "ATTEMPTS"));
    CHECK(contains(ls.out, id));
    CHECK(!contains(ls.out, never));

    // Fixed, the function takes the replayed event: a new invocation, delivery 1.
    auto fixed = d.curl("PUT", "/v1/functions/broken", R"({"image":"bb:1","cmd":["cat"],"min_warm":0})");
    REQUIRE_MESSAGE(fixed.status == 200, fixed.body);
    auto replay = d.cli({"dead-letters", "replay", id});
    REQUIRE_MESSAGE(replay.exit_code == 0, replay.err);
    auto new_id = replay.out.substr(0, 32);
    CHECK(new_id != id);
    auto replayed = wait_finished(d, new_id);
    CHECK(contains(replayed, R"("outcome":"success")"));
    CHECK(contains(replayed, R"("output":"precious event")"));
    CHECK(contains(replayed, R"("delivery":1)"));
    CHECK(contains(d.curl("GET", "/v1/dead-letters/" + id).body, "\"replayed_as\":\"" + new_id + "\""));
    auto twice = d.curl("POST", "/v1/dead-letters/" + id + "/replay", "");
    CHECK(twice.status == 409);
    CHECK(contains(twice.body, "replayed already as invocation " + new_id));

    auto rm = d.cli({"dead-letters", "rm", id});
    CHECK_MESSAGE(rm.exit_code == 0, rm.err);
    CHECK(d.curl("GET", "/v1/dead-letters/" + id).status == 404);
    auto gone = d.cli({"dead-letters", "show", id});
    CHECK(gone.exit_code != 0);
    CHECK_MESSAGE(contains(gone.err, "no dead letter with id " + id), gone.err);
    CHECK(d.curl("DELETE", "/v1/dead-letters/" + id).status == 404);
    CHECK(d.curl("PUT", "/v1/dead-letters/" + never, "").status == 405);
    CHECK(d.curl("GET", "/v1/dead-letters?limit=x").status == 400);
  }

  TEST_CASE("async delivery: a retry waits out its backoff while later events run, across a restart") {
    InvokeDaemon d;
    // An hour's backoff: the retry cannot run during the test, so what runs meanwhile is ordering.
    d.create("picky", R"(read ev; [ "$ev" = bad ] && exit 1; echo "ok $ev")",
             R"("min_warm":0,"retries":1,"retry_backoff":{"initial_ms":3600000})");
    auto bad = queue(d, "picky", "bad\n");
    std::string rec;
    wait_until(
        [&] {
          rec = d.curl("GET", "/v1/invocations/" + bad).body;
          return contains(rec, R"("delivery":2)");
        },
        "the failed delivery to be queued again");
    CHECK(contains(rec, R"("status":"queued")"));
    CHECK(contains(rec, "exited with code 1"));
    std::smatch m;
    REQUIRE(std::regex_search(rec, m, std::regex(R"("next_attempt_ms":(\d+))")));
    int64_t next_attempt = std::stoll(m[1]);
    REQUIRE(std::regex_search(rec, m, std::regex(R"("queued_ms":(\d+))")));
    CHECK(next_attempt - std::stoll(m[1]) >= 3600000);
    for (int i = 0; i < 3; ++i) {
      auto good = queue(d, "picky", "good" + std::to_string(i) + "\n");
      CHECK(contains(wait_finished(d, good), R"("outcome":"success")"));
    }
    CHECK(contains(d.curl("GET", "/v1/invocations/" + bad).body, R"("status":"queued")"));
    auto metrics = parse_metrics(d.curl("GET", "/metrics").body);
    CHECK(metrics.at("fnexec_async_queued") == 1);

    // The backoff is durable: a restart keeps the retry queued with the same time.
    CHECK(d.stop(SIGTERM) == 0);
    d.start();
    rec = d.curl("GET", "/v1/invocations/" + bad).body;
    CHECK(contains(rec, R"("status":"queued")"));
    CHECK(contains(rec, "\"next_attempt_ms\":" + std::to_string(next_attempt)));
  }

  TEST_CASE("async delivery: SIGKILL while an event runs; the next instance delivers it again (delivery 2)") {
    InvokeDaemon d;
    d.create("slow", "sleep 3; cat", R"("min_warm":0,"timeout_ms":60000)");
    auto id = queue(d, "slow", "survivor");
    wait_until([&] { return contains(d.curl("GET", "/v1/invocations/" + id).body, R"("status":"running")"); },
               "the event to run");
    CHECK(d.stop(SIGKILL) == 128 + SIGKILL);
    d.start();
    CHECK(contains(d.log(), "interrupted=1"));
    auto rec = wait_finished(d, id);
    CHECK(contains(rec, R"("status":"done")"));
    CHECK(contains(rec, R"("outcome":"success")"));
    CHECK(contains(rec, R"("output":"survivor")"));
    CHECK(contains(rec, R"("delivery":2)"));
  }

  TEST_CASE("async delivery: fn create --retries --retry-backoff") {
    InvokeDaemon d;
    // Not d.cli(): its --socket would land after "--", in the command.
    auto r = test::fnexec({"fn", "create", "cli", "--socket", d.socket().string(), "--image", "bb:1", "--min-warm",
                           "0", "--retries", "0", "--retry-backoff", "500ms:3:20s", "--", "cat"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    CHECK(contains(d.curl("GET", "/v1/functions/cli").body,
                   R"("retries":0,"retry_backoff":{"initial_ms":500,"multiplier":3,"max_ms":20000})"));
    auto bad = test::fnexec({"fn", "create", "cli", "--socket", d.socket().string(), "--image", "bb:1",
                             "--retry-backoff", "1s:fast", "--", "cat"});
    CHECK(bad.exit_code != 0);
    CHECK_MESSAGE(contains(bad.err, "expected INITIAL[:MULTIPLIER[:MAX]]"), bad.err);
    auto over = test::fnexec({"fn", "create", "cli", "--socket", d.socket().string(), "--image", "bb:1",
                              "--retries", "11", "--", "cat"});
    CHECK(over.exit_code != 0);
    CHECK_MESSAGE(contains(over.err, "\"retries\" must be between 0 and 10"), over.err);
  }

  TEST_CASE("async delivery: Lambda Event invocations go through the same retries and dead letters") {
    InvokeDaemon d;
    d.create("lam", "exit 2", R"("min_warm":0,"retries":1,"retry_backoff":{"initial_ms":0})");
    auto r = d.curl("POST", "/2015-03-31/functions/lam/invocations", "{}", {"-H", "X-Amz-Invocation-Type: Event"});
    REQUIRE_MESSAGE(r.status == 202, r.body);
    std::string list;
    wait_until(
        [&] {
          list = d.curl("GET", "/v1/dead-letters?function=lam").body;
          return contains(list, R"("function":"lam")");
        },
        "the event to be dead-lettered");
    CHECK(contains(list, R"("attempts":2)"));
  }
}  // TEST_SUITE
