// The daemon's side of the fresh/reuse lifecycles without a socket: the function fields, their
// fnexec.conf defaults, the schema migration from version 1, the sandbox facts of records, the
// batched record writes, and the lifecycle metrics.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "server/api.h"
#include "server/config.h"
#include "server/metrics.h"
#include "server/record_writer.h"
#include "server/state.h"
#include "support/state_v1.h"
#include "util/fs.h"

using namespace fnexec;
using namespace fnexec::server;

namespace {

bool has(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

struct TempDb {
  fs::TempDir dir = *fs::TempDir::make("/tmp", "fnexec-unit-lifecycle");
  std::filesystem::path path = dir.path() / "server.db";
};

pool::InvocationResult reuse_result() {
  pool::InvocationResult r;
  r.start = pool::StartKind::warm;
  r.lifecycle = pool::Lifecycle::reuse;
  r.sandbox_id = "sb-7";
  r.sandbox_events = 1;
  r.init_us = 4200;
  return r;
}

}  // namespace

TEST_CASE("lifecycle fields: defaults, every value, round trip") {
  auto min = parse_function_spec("f", R"({"image":"x"})");
  REQUIRE(min);
  CHECK(min->lifecycle == pool::Lifecycle::oneshot);
  CHECK(min->max_events_per_sandbox == 0);
  CHECK(min->init_timeout.count() == 10000);
  CHECK(min->idle_timeout.count() == 600);
  auto json = function_spec_json(*min);
  CHECK(has(json, R"("lifecycle":"oneshot","max_events_per_sandbox":0,"init_timeout_ms":10000)"));

  auto reuse = parse_function_spec(
      "g", R"({"image":"x","lifecycle":"reuse","max_events_per_sandbox":100,"init_timeout_ms":2500,
               "idle_timeout_s":30})");
  REQUIRE(reuse);
  CHECK(reuse->lifecycle == pool::Lifecycle::reuse);
  CHECK(reuse->max_events_per_sandbox == 100);
  CHECK(reuse->init_timeout.count() == 2500);
  CHECK(reuse->idle_timeout.count() == 30);
  auto again = parse_function_spec("g", function_spec_json(*reuse));
  REQUIRE(again);
  CHECK(function_spec_json(*again) == function_spec_json(*reuse));

  auto fresh = parse_function_spec("h", R"({"image":"x","lifecycle":"fresh","max_events_per_sandbox":0})");
  REQUIRE(fresh);
  CHECK(fresh->lifecycle == pool::Lifecycle::fresh);
  // What GET returned for a fresh function can be PUT back.
  CHECK(parse_function_spec("h", function_spec_json(*fresh)));
}

TEST_CASE("lifecycle fields: each mistake is named") {
  auto why = [](std::string_view json) {
    auto r = parse_function_spec("f", json);
    REQUIRE(!r);
    CHECK(r.error().kind == ErrorKind::invalid);
    return r.error().message();
  };
  CHECK(has(why(R"({"image":"x","lifecycle":"warm"})"),
            R"(field "lifecycle" must be oneshot, fresh or reuse, got "warm")"));
  CHECK(has(why(R"({"image":"x","lifecycle":1})"), R"("lifecycle" must be a string, got an integer)"));
  CHECK(has(why(R"({"image":"x","lifecycle":"fresh","max_events_per_sandbox":5})"),
            "(5) applies to lifecycle reuse only; this function is fresh"));
  CHECK(has(why(R"({"image":"x","max_events_per_sandbox":5})"), "this function is oneshot"));
  CHECK(has(why(R"({"image":"x","lifecycle":"reuse","max_events_per_sandbox":-1})"),
            R"("max_events_per_sandbox" must be at least 0)"));
  CHECK(has(why(R"({"image":"x","lifecycle":"reuse","max_events_per_sandbox":4294967296})"),
            "between 0 and 4294967295"));
  CHECK(has(why(R"({"image":"x","init_timeout_ms":0})"), R"("init_timeout_ms" must be between 1 and)"));
  CHECK(has(why(R"({"image":"x","init_timeout_ms":"5s"})"), "must be an integer, got a string"));
  CHECK(has(why(R"({"image":"x","lifecycel":"reuse"})"), "unknown field \"lifecycel\""));
  CHECK(has(why(R"({"image":"x","lifecycel":"reuse"})"), "init_timeout_ms"));  // the list names them
}

TEST_CASE("lifecycle defaults from fnexec.conf apply to fields a PUT leaves out") {
  auto settings = parse_config_text(
      "default_lifecycle = reuse\ndefault_max_events_per_sandbox = 50\ndefault_init_timeout = 3s\n"
      "default_idle_timeout = 2m\n",
      "t.conf");
  REQUIRE(settings);
  ServeConfig c;
  REQUIRE(apply_settings(c, *settings));
  CHECK(c.function_defaults.lifecycle == pool::Lifecycle::reuse);
  CHECK(c.function_defaults.max_events_per_sandbox == 50);
  CHECK(c.function_defaults.init_timeout.count() == 3000);
  CHECK(c.function_defaults.idle_timeout.count() == 120);
  CHECK(!is_restart_only("default_lifecycle"));

  auto d = parse_function_spec("f", R"({"image":"x"})", c.function_defaults);
  REQUIRE(d);
  CHECK(d->lifecycle == pool::Lifecycle::reuse);
  CHECK(d->max_events_per_sandbox == 50);
  CHECK(d->init_timeout.count() == 3000);
  CHECK(d->idle_timeout.count() == 120);
  // The default limit is for reuse functions; an explicit other lifecycle does not inherit it.
  auto fresh = parse_function_spec("f", R"({"image":"x","lifecycle":"fresh"})", c.function_defaults);
  REQUIRE(fresh);
  CHECK(fresh->max_events_per_sandbox == 0);
  auto given = parse_function_spec("f", R"({"image":"x","max_events_per_sandbox":7,"init_timeout_ms":9})",
                                   c.function_defaults);
  REQUIRE(given);
  CHECK(given->max_events_per_sandbox == 7);
  CHECK(given->init_timeout.count() == 9);

  auto bad = [](std::string key, std::string value) {
    ServeConfig c;
    auto r = apply_settings(c, {{std::move(key), std::move(value), "t:1"}});
    REQUIRE(!r);
    return r.error().message();
  };
  CHECK(has(bad("default_lifecycle", "hot"), "must be oneshot, fresh or reuse"));
  CHECK(has(bad("default_max_events_per_sandbox", "-3"), "not an unsigned integer"));
  CHECK(has(bad("default_init_timeout", "0"), "between 1ms and 1h"));
  CHECK(has(bad("default_init_timeout", "2h"), "between 1ms and 1h"));
  CHECK(has(bad("default_idle_timeout", "soon"), "default_idle_timeout = soon"));
}

TEST_CASE("state: a version 1 database migrates; its functions stay oneshot, running rows become lost") {
  TempDb t;
  REQUIRE(test::write_state_db_v1(t.path, {"old", "hello:latest"}).empty());
  auto s = State::open(t.path);
  REQUIRE(s);
  auto& state = **s;
  CHECK(*state.schema_version() == kSchemaVersion);
  auto f = state.get_function("old").value();
  REQUIRE(f);
  auto spec = parse_function_spec("old", f->spec_json);
  REQUIRE(spec);
  CHECK(spec->lifecycle == pool::Lifecycle::oneshot);
  CHECK(has(f->spec_json, R"("lifecycle":"oneshot","max_events_per_sandbox":0,"init_timeout_ms":10000)"));
  // A default_lifecycle of this daemon does not convert a stored function.
  FunctionDefaults reuse_default;
  reuse_default.lifecycle = pool::Lifecycle::reuse;
  CHECK(parse_function_spec("old", f->spec_json, reuse_default)->lifecycle == pool::Lifecycle::oneshot);

  auto done = state.get_invocation("v1-done").value();
  REQUIRE(done);
  CHECK(done->sandbox.lifecycle == "oneshot");
  CHECK(done->wall_us == 900);
  CHECK(!done->sandbox.sandbox_events);
  auto rec = state.recover(30).value();
  CHECK(rec.lost == 1);
  CHECK(state.get_invocation("v1-running").value()->status == "lost");

  // New records carry the sandbox facts.
  REQUIRE(state.insert_running("new1", "old", 40, "reuse"));
  InvocationEnd e;
  e.id = "new1";
  e.outcome = "error";
  e.sandbox = {"reuse", "sb-1", 3, std::nullopt, "error", "Function.Error", R"({"errorType":"E"})"};
  REQUIRE(state.finish(e, Retention{}));
  auto row = state.get_invocation("new1").value();
  REQUIRE(row);
  CHECK(row->sandbox.lifecycle == "reuse");
  CHECK(row->sandbox.sandbox_id == "sb-1");
  CHECK(row->sandbox.sandbox_events == 3);
  CHECK(!row->sandbox.init_us);
  CHECK(row->sandbox.retired == "error");
  CHECK(row->sandbox.error_type == "Function.Error");
  CHECK(*row->sandbox.error_body == R"({"errorType":"E"})");
  // A running row knows its lifecycle before the sandbox is known.
  REQUIRE(state.insert_running("new2", "old", 41, "fresh"));
  CHECK(state.get_invocation("new2").value()->sandbox.lifecycle == "fresh");

  // Opening again runs nothing twice.
  s->reset();
  auto reopened = State::open(t.path);
  REQUIRE(reopened);
  CHECK(*(*reopened)->schema_version() == kSchemaVersion);
  CHECK((*reopened)->get_invocation("new1").value()->sandbox.sandbox_id == "sb-1");
}

TEST_CASE("state: a batch is one transaction; a failing write leaves the others") {
  TempDb t;
  auto s = std::move(*State::open(t.path));
  std::vector<std::function<Result<>(State&)>> writes = {
      [](State& st) { return st.insert_running("a", "f", 1); },
      [](State& st) { return st.insert_running("a", "f", 2); },  // the id exists: fails alone
      [](State& st) {
        InvocationEnd e;
        e.id = "a";
        e.outcome = "success";
        return st.finish(e, Retention{});
      },
      [](State& st) { return st.append_log("f", "a", 3, "tail", Retention{}); },
      [](State& st) {
        InvocationEnd e;
        e.id = "nope";
        return st.finish(e, Retention{});
      },
  };
  auto results = s->batch(writes);
  REQUIRE(results);
  REQUIRE(results->size() == 5);
  CHECK((*results)[0]);
  CHECK(!(*results)[1]);
  CHECK((*results)[2]);
  CHECK((*results)[3]);
  CHECK((*results)[4].error().kind == ErrorKind::not_found);
  CHECK(s->get_invocation("a").value()->status == "done");
  CHECK(*s->log_of("a").value() == "tail");
}

TEST_CASE("record writer: concurrent callers share commits; flush shows every record") {
  TempDb t;
  auto s = std::move(*State::open(t.path));
  constexpr int kThreads = 8, kEach = 200;
  RecordWriter::Stats stats;
  {
    RecordWriter w(*s);
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int k = 0; k < kThreads; ++k)
      threads.emplace_back([&, k] {
        for (int i = 0; i < kEach; ++i) {
          auto id = fmt::format("t{}-{}", k, i);
          if (!w.commit([&](State& st) { return st.insert_running(id, "f", i); })) ++failures;
          w.submit([id](State& st) {
            InvocationEnd e;
            e.id = id;
            e.outcome = "success";
            return st.finish(e, Retention{});
          });
        }
      });
    for (auto& th : threads) th.join();
    CHECK(failures == 0);
    w.flush();
    auto rows = s->list_invocations("f", 0, 10000).value();
    CHECK(rows.size() == kThreads * kEach);
    CHECK(std::all_of(rows.begin(), rows.end(), [](const InvocationRow& r) { return r.status == "done"; }));
    // A write that fails is reported to its committer, and the batch around it still commits.
    auto dup = w.commit([](State& st) { return st.insert_running("t0-0", "f", 0); });
    CHECK(!dup);
    stats = w.stats();
    // Queued writes are committed when the writer goes, without a flush.
    w.submit([](State& st) { return st.insert_running("last", "f", 9); });
  }
  CHECK(stats.writes == 2 * kThreads * kEach + 1);
  CHECK(stats.transactions < stats.writes);
  CHECK(s->get_invocation("last").value());
}

TEST_CASE("metrics: lifecycle, init durations, events per sandbox, retirements") {
  Metrics m;
  auto first = reuse_result();
  m.observe_sandbox("r", first);  // init seen, sandbox lives on
  auto last = reuse_result();
  last.init_us.reset();
  last.sandbox_events = 100;
  last.retired = "max_events";
  m.observe_sandbox("r", last);
  auto fresh = reuse_result();
  fresh.lifecycle = pool::Lifecycle::fresh;
  fresh.retired = "fresh";
  m.observe_sandbox("f", fresh);
  m.observe_sandbox("o", pool::InvocationResult{});  // oneshot: nothing
  auto snap = m.snapshot();
  snap.lifecycles = {{"r", "reuse"}, {"f", "fresh"}, {"o", "oneshot"}};
  auto text = format_prometheus(snap);
  CHECK(has(text, "fnexec_function_lifecycle{function=\"r\",lifecycle=\"reuse\"} 1\n"));
  CHECK(has(text, "fnexec_function_lifecycle{function=\"o\",lifecycle=\"oneshot\"} 1\n"));
  CHECK(has(text, "fnexec_sandbox_init_duration_seconds_count{function=\"r\"} 1\n"));
  CHECK(has(text, "fnexec_sandbox_init_duration_seconds_bucket{function=\"r\",le=\"0.005\"} 1\n"));
  CHECK(has(text, "fnexec_sandbox_events_bucket{function=\"r\",le=\"10\"} 0\n"));
  CHECK(has(text, "fnexec_sandbox_events_bucket{function=\"r\",le=\"100\"} 1\n"));
  CHECK(has(text, "fnexec_sandbox_events_sum{function=\"r\"} 100\n"));
  CHECK(has(text, "fnexec_sandbox_events_count{function=\"f\"} 1\n"));
  CHECK(has(text, "fnexec_sandbox_retirements_total{function=\"r\",reason=\"max_events\"} 1\n"));
  CHECK(has(text, "fnexec_sandbox_retirements_total{function=\"f\",reason=\"fresh\"} 1\n"));
  CHECK(!has(text, "function=\"o\",reason"));
}
