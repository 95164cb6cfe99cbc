// Async delivery (issue 17) without a daemon: the retry fields of a function document, the backoff
// series, and the SQLite queue's retries, dead letters, replays and recovery.
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <tuple>

#include "pool/pool.h"
#include "server/api.h"
#include "server/state.h"
#include "support/state_v1.h"
#include "util/fs.h"

using namespace fnexec;
using namespace fnexec::server;
using std::chrono::milliseconds;

namespace {

struct TempDb {
  fs::TempDir dir = *fs::TempDir::make("/tmp", "fnexec-unit-retry-dlq");
  std::filesystem::path path = dir.path() / "server.db";
};

}  // namespace

TEST_CASE("function documents: retries and retry_backoff") {
  auto plain = parse_function_spec("f", R"({"image":"x"})");
  REQUIRE(plain);
  CHECK(plain->retries == 2);
  CHECK(plain->retry_backoff == pool::RetryBackoff{milliseconds(1000), 2.0, milliseconds(60000)});

  auto full = parse_function_spec(
      "f", R"({"image":"x","retries":5,"retry_backoff":{"initial_ms":0,"multiplier":1.5,"max_ms":100}})");
  REQUIRE(full);
  CHECK(full->retries == 5);
  CHECK(full->retry_backoff == pool::RetryBackoff{milliseconds(0), 1.5, milliseconds(100)});
  auto json = function_spec_json(*full);
  CHECK(json.find(R"("retries":5,"retry_backoff":{"initial_ms":0,"multiplier":1.5,"max_ms":100})") !=
        std::string::npos);
  auto again = parse_function_spec("f", json);
  REQUIRE(again);
  CHECK(function_spec_json(*again) == json);

  // A larger initial wait alone raises the default cap with it.
  auto slow = parse_function_spec("f", R"({"image":"x","retry_backoff":{"initial_ms":120000}})");
  REQUIRE(slow);
  CHECK(slow->retry_backoff.max == milliseconds(120000));
  CHECK(parse_function_spec("f", R"({"image":"x","retries":0,"retry_backoff":null})"));

  auto why = [](std::string_view doc) {
    auto r = parse_function_spec("f", doc);
    REQUIRE(!r);
    CHECK(r.error().kind == ErrorKind::invalid);
    return r.error().message();
  };
  CHECK(why(R"({"image":"x","retries":11})").find("\"retries\" must be between 0 and 10") != std::string::npos);
  CHECK(why(R"({"image":"x","retries":-1})").find("\"retries\"") != std::string::npos);
  CHECK(why(R"({"image":"x","retry_backoff":5})").find("must be an object") != std::string::npos);
  CHECK(why(R"({"image":"x","retry_backoff":{"initial":5}})").find("unknown member \"initial\"") !=
        std::string::npos);
  CHECK(why(R"({"image":"x","retry_backoff":{"multiplier":0.5}})").find("retry_backoff.multiplier") !=
        std::string::npos);
  CHECK(why(R"({"image":"x","retry_backoff":{"initial_ms":10,"max_ms":5}})").find("retry_backoff.max_ms") !=
        std::string::npos);
}

TEST_CASE("retry_delay: initial, then multiplied, capped at max") {
  pool::RetryBackoff b{milliseconds(1000), 2.0, milliseconds(5000)};
  CHECK(pool::retry_delay(b, 1) == milliseconds(1000));
  CHECK(pool::retry_delay(b, 2) == milliseconds(2000));
  CHECK(pool::retry_delay(b, 3) == milliseconds(4000));
  CHECK(pool::retry_delay(b, 4) == milliseconds(5000));
  CHECK(pool::retry_delay(b, 100) == milliseconds(5000));
  CHECK(pool::retry_delay({milliseconds(0), 3.0, milliseconds(0)}, 5) == milliseconds(0));
}

TEST_CASE("state: a failed delivery is queued again, the last one is dead-lettered, a replay starts over") {
  TempDb t;
  auto s = std::move(*State::open(t.path));
  Retention keep;
  REQUIRE(s->enqueue("a1", "f", std::string("ev\0ent", 6), 100));
  auto q = s->queued().value();
  REQUIRE(q.size() == 1);
  CHECK(q[0].delivery == 1);
  CHECK(q[0].next_attempt_ms == 0);
  CHECK(s->get_invocation("a1").value()->delivery == 1);

  // Delivery 1 fails: queued as delivery 2 after its backoff, the failure's error kept meanwhile.
  REQUIRE(s->start_queued("a1", 110));
  InvocationEnd failed;
  failed.id = "a1";
  failed.outcome = "error";
  failed.error = "function f exited with code 3";
  failed.finished_ms = 120;
  REQUIRE(s->retry(failed, 2, 1120));
  auto row = s->get_invocation("a1").value();
  REQUIRE(row);
  CHECK(row->status == "queued");
  CHECK(row->delivery == 2);
  CHECK(row->next_attempt_ms == 1120);
  CHECK(row->error == "function f exited with code 3");
  q = s->queued().value();
  REQUIRE(q.size() == 1);
  CHECK(q[0].delivery == 2);
  CHECK(q[0].next_attempt_ms == 1120);
  CHECK(s->retry(failed, 3, 0).error().kind == ErrorKind::not_found);  // only a running row

  // Delivery 2 is the last: the record ends with dead_letter set, the entry keeps the event.
  CHECK(*s->start_queued("a1", 1200) == std::string("ev\0ent", 6));
  failed.error = "function f timed out after 5 ms";
  failed.outcome = "timeout";
  failed.finished_ms = 1300;
  failed.output = "partial";
  auto dead = s->dead_letter(failed, 2, keep);
  REQUIRE_MESSAGE(dead, (dead ? std::string() : dead.error().message()));
  row = s->get_invocation("a1").value();
  CHECK(row->status == "done");
  CHECK(row->outcome == "timeout");
  CHECK(row->dead_letter);
  CHECK(!row->next_attempt_ms);
  auto list = s->dead_letters("", 0, 10).value();
  REQUIRE(list.size() == 1);
  CHECK(list[0].id == "a1");
  CHECK(list[0].function == "f");
  CHECK(list[0].attempts == 2);
  CHECK(list[0].outcome == "timeout");
  CHECK(list[0].error == "function f timed out after 5 ms");
  CHECK(list[0].queued_ms == 100);
  CHECK(list[0].time_ms == 1300);
  CHECK(!list[0].event);  // lists leave events out
  CHECK(s->dead_letters("g", 0, 10).value().empty());
  CHECK(s->dead_letters("f", list[0].seq, 10).value().empty());
  auto one = s->get_dead_letter("a1").value();
  REQUIRE(one);
  CHECK(*one->event == std::string("ev\0ent", 6));
  CHECK(!s->get_dead_letter("nope").value());

  // A replay is a new invocation, delivery 1, with the same event; a second replay is refused.
  CHECK(*s->replay_dead_letter("a1", "a2", 2000) == "f");
  CHECK(s->get_dead_letter("a1").value()->replayed_as == "a2");
  auto replayed = s->get_invocation("a2").value();
  REQUIRE(replayed);
  CHECK(replayed->status == "queued");
  CHECK(replayed->delivery == 1);
  CHECK(*s->start_queued("a2", 2001) == std::string("ev\0ent", 6));
  auto again = s->replay_dead_letter("a1", "a3", 2002);
  REQUIRE(!again);
  CHECK(again.error().kind == ErrorKind::exists);
  CHECK(!s->get_invocation("a3").value());
  CHECK(s->replay_dead_letter("nope", "a4", 2003).error().kind == ErrorKind::not_found);
  CHECK(*s->delete_dead_letter("a1"));
  CHECK(!*s->delete_dead_letter("a1"));
  CHECK(s->dead_letters("", 0, 10).value().empty());
}

TEST_CASE("state: dead letters are pruned to records_per_function per function") {
  TempDb t;
  auto s = std::move(*State::open(t.path));
  Retention three{1 << 20, 3};
  for (int i = 0; i < 5; ++i) {
    auto id = "d" + std::to_string(i);
    REQUIRE(s->enqueue(id, "f", "e", i));
    REQUIRE(s->start_queued(id, i));
    InvocationEnd e;
    e.id = id;
    e.outcome = "error";
    REQUIRE(s->dead_letter(e, 1, three));
  }
  auto list = s->dead_letters("f", 0, 10).value();
  REQUIRE(list.size() == 3);
  CHECK(list.front().id == "d2");
  CHECK(list.back().id == "d4");
}

TEST_CASE("state: a version 1 database migrates to async delivery; its async running rows come back") {
  TempDb t;
  REQUIRE(test::write_state_db_v1(t.path, {"old", "hello:latest"}).empty());
  auto s = std::move(*State::open(t.path));
  CHECK(*s->schema_version() == kSchemaVersion);
  CHECK(s->get_invocation("v1-done").value()->delivery == 1);
  CHECK(!s->get_invocation("v1-done").value()->dead_letter);
  CHECK(s->dead_letters("", 0, 10).value().empty());
  REQUIRE(s->enqueue("a", "old", "e", 1));
  REQUIRE(s->start_queued("a", 2));
  auto rec = s->recover(3).value();
  CHECK(rec.lost == 1);  // v1-running, a sync invocation
  REQUIRE(rec.interrupted.size() == 1);
  CHECK(rec.interrupted[0].id == "a");
  CHECK(rec.interrupted[0].function == "old");
}

TEST_CASE("state: a Lambda caller's context stays with a queued event, its retries, its dead letter and replay") {
  TempDb t;
  auto s = std::move(*State::open(t.path));
  const invoke::EventContext given{R"({"custom":{"k":"v"}})", R"({"cognitoIdentityId":"id-1"})",
                                   "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"};
  REQUIRE(s->enqueue("c1", "f", "{}", 100, given));
  REQUIRE(s->enqueue("c2", "f", "{}", 100));  // none given
  auto fields = [](const invoke::EventContext& c) {
    return std::tuple{c.client_context, c.cognito_identity, c.trace_id};
  };
  invoke::EventContext got;
  CHECK(*s->start_queued("c1", 110, &got) == "{}");
  CHECK(fields(got) == fields(given));
  invoke::EventContext none{"stale", "stale", "stale"};
  REQUIRE(s->start_queued("c2", 110, &none));
  CHECK(fields(none) == fields(invoke::EventContext{}));

  InvocationEnd failed;
  failed.id = "c1";
  failed.outcome = "error";
  failed.error = "function f exited with code 3";
  failed.finished_ms = 120;
  REQUIRE(s->retry(failed, 2, 130));
  got = {};
  REQUIRE(s->start_queued("c1", 140, &got));
  CHECK(fields(got) == fields(given));  // the retry runs with it too
  failed.finished_ms = 150;
  failed.output = "partial";  // finish() drops the event and its context from the queue's table
  REQUIRE(s->dead_letter(failed, 2, Retention{}));
  REQUIRE(*s->replay_dead_letter("c1", "c3", 200) == "f");
  got = {};
  REQUIRE(s->start_queued("c3", 210, &got));
  CHECK(fields(got) == fields(given));  // the dead letter kept it for the replay
}
