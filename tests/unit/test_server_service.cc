// The API's invocation path without a network: Service over a real SQLite state and a scripted
// PoolSet (a stand-in only because the warm pools are not on main yet; the end-to-end versions are
// in tests/integration/test_serve_invoke.cc).
#include <doctest/doctest.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "server/json.h"
#include "server/service.h"
#include "util/fs.h"

using namespace fnexec;
using namespace fnexec::server;

namespace {

// No subordinate-id files here: functions run without per-function user namespaces (the
// allocation itself is tested in test_server_state.cc and the serve suites).
ServiceLimits host_ids_limits() {
  ServiceLimits l;
  l.function_defaults.userns = false;
  return l;
}

class ScriptedPools : public pool::PoolSet {
 public:
  Result<> configure(const pool::FunctionSpec& spec) override {
    std::lock_guard lock(mu_);
    if (spec.image == "missing:1") return fail(ErrorKind::not_found, "resolve image", spec.image);
    configured.push_back(spec.name);
    return {};
  }
  void remove(std::string_view name) override {
    std::lock_guard lock(mu_);
    removed.emplace_back(name);
  }
  bool id_range_in_use(uid_t) const override { return false; }
  Result<pool::InvocationResult> invoke(std::string_view name, std::string_view event,
                                        const invoke::EventContext& = {}) override {
    std::unique_lock lock(mu_);
    events.emplace_back(event);
    ++running;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !hold; });
    --running;
    if (unavailable) return fail(ErrorKind::unavailable, "take a sandbox", std::string(name), "global cap");
    return next;
  }
  std::vector<pool::PoolStats> stats() const override { return {{"f", 2, 0, 1}}; }
  void shutdown(std::chrono::milliseconds) override {}

  void wait_running(int n) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return running == n; });
  }
  void release() {
    std::lock_guard lock(mu_);
    hold = false;
    cv_.notify_all();
  }

  pool::InvocationResult next;
  bool hold = false;
  bool unavailable = false;
  int running = 0;
  std::vector<std::string> configured, removed, events;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
};

struct Fixture {
  fs::TempDir dir = *fs::TempDir::make("/tmp", "fnexec-unit-service");
  std::unique_ptr<State> state = std::move(*State::open(dir.path() / "server.db"));
  ScriptedPools pools;
  std::vector<std::thread> threads;
  std::unique_ptr<Service> service;

  explicit Fixture(bool threaded = false) {
    spdlog::set_level(spdlog::level::warn);  // the service logs every function change at info
    Executor inline_exec = [](std::function<void()> job) { job(); };
    Executor thread_exec = [this](std::function<void()> job) { threads.emplace_back(std::move(job)); };
    service = std::make_unique<Service>(*state, &pools, nullptr, "v1", threaded ? thread_exec : inline_exec,
                                        inline_exec, host_ids_limits());
    REQUIRE(service->start());
  }
  ~Fixture() {
    for (auto& t : threads) t.join();
  }

  Reply call(const std::string& method, const std::string& target, std::string body = "") {
    Reply out;
    bool done = false;
    Request r{method, target, route(method, target), std::move(body), {}};
    service->handle(std::move(r), [&](Reply reply) {
      out = std::move(reply);
      done = true;
    });
    REQUIRE(done);
    return out;
  }
  std::string header(const Reply& r, const std::string& name) {
    for (const auto& [k, v] : r.headers)
      if (k == name) return v;
    return {};
  }
};

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("service: sync invoke answers with stdout, headers, and a finished record") {
  Fixture f;
  REQUIRE(f.call("PUT", "/v1/functions/f", R"({"image":"x:1"})").status == 201);
  CHECK(f.pools.configured == std::vector<std::string>{"f"});
  f.pools.next.start = pool::StartKind::warm;
  f.pools.next.output = "result";
  f.pools.next.log = "a log line\n";
  f.pools.next.record.wall_us = 1234;
  f.pools.next.record.cpu_user_us = 300;
  f.pools.next.record.cpu_system_us = 100;
  f.pools.next.record.memory_peak_bytes = 4096;
  auto r = f.call("POST", "/v1/functions/f/invoke", "the event");
  CHECK(r.status == 200);
  CHECK(r.body == "result");
  CHECK(r.content_type == "application/octet-stream");
  CHECK(f.pools.events == std::vector<std::string>{"the event"});
  CHECK(f.header(r, "Fnexec-Start") == "warm");
  CHECK(f.header(r, "Fnexec-Duration-Us") == "1234");
  CHECK(f.header(r, "Fnexec-Billed-Ms") == "2");
  CHECK(f.header(r, "Fnexec-Cpu-Us") == "400");
  CHECK(f.header(r, "Fnexec-Memory-Peak-Bytes") == "4096");
  CHECK(f.header(r, "Fnexec-Exit-Code") == "0");
  auto id = f.header(r, "Fnexec-Invocation-Id");
  auto rec = f.call("GET", "/v1/invocations/" + id);
  CHECK(contains(rec.body, R"("status":"done")"));
  CHECK(contains(rec.body, R"("outcome":"success")"));
  CHECK(contains(rec.body, R"("billed_ms":2)"));
  CHECK(contains(rec.body, R"("stderr_tail":"a log line\n")"));
  auto logs = f.call("GET", "/v1/functions/f/logs");
  CHECK(contains(logs.body, R"("text":"a log line\n")"));
  auto metrics = f.call("GET", "/metrics");
  CHECK(contains(metrics.body, R"(fnexec_invocations_total{function="f",outcome="success"} 1)"));
  CHECK(contains(metrics.body, R"(fnexec_pool_sandboxes{function="f",state="warm"} 2)"));
  CHECK(contains(metrics.body, R"(fnexec_cgroup_mode{mode="v1"} 1)"));
}

TEST_CASE("service: failures map to 502/504 with the exit and stderr tail") {
  Fixture f;
  REQUIRE(f.call("PUT", "/v1/functions/f", R"({"image":"x:1","timeout_ms":250,"memory_mb":16})").status ==
          201);
  f.pools.next.record.exit_code = 3;
  f.pools.next.log = "boom";
  auto r = f.call("POST", "/v1/functions/f/invoke");
  CHECK(r.status == 502);
  CHECK(contains(r.body, R"("exit_code":3)"));
  CHECK(contains(r.body, R"("stderr_tail":"boom")"));
  CHECK(contains(r.body, "function f exited with code 3"));
  f.pools.next.record.timed_out = true;
  auto t = f.call("POST", "/v1/functions/f/invoke");
  CHECK(t.status == 504);
  CHECK(contains(t.body, "timed out after 250 ms"));
  f.pools.next.record.timed_out = false;
  f.pools.next.record.oom_killed = true;
  auto o = f.call("POST", "/v1/functions/f/invoke");
  CHECK(o.status == 502);
  CHECK(contains(o.body, R"("oom_killed":true)"));
  CHECK(contains(o.body, "OOM killer (memory_mb 16)"));
  f.pools.unavailable = true;
  auto u = f.call("POST", "/v1/functions/f/invoke");
  CHECK(u.status == 429);
  CHECK(f.header(u, "Retry-After") == "1");
  auto list = f.call("GET", "/v1/invocations?function=f").body;
  for (const char* outcome : {"error", "timeout", "oom", "rejected"})
    CHECK_MESSAGE(contains(list, std::string(R"("outcome":")") + outcome + "\""), outcome);
}

TEST_CASE("service: image the store lacks is 400 on PUT, nothing stored") {
  Fixture f;
  auto r = f.call("PUT", "/v1/functions/f", R"({"image":"missing:1"})");
  CHECK(r.status == 400);
  CHECK(contains(r.body, "missing:1"));
  CHECK(f.call("GET", "/v1/functions/f").status == 404);
  REQUIRE(f.call("PUT", "/v1/functions/g", R"({"image":"x:1"})").status == 201);
  CHECK(f.call("DELETE", "/v1/functions/g").status == 204);
  CHECK(f.pools.removed == std::vector<std::string>{"g"});
}

TEST_CASE("service: the record is running while the sandbox runs; 429 beyond max_concurrency") {
  Fixture f(true);
  REQUIRE(f.call("PUT", "/v1/functions/f", R"({"image":"x:1","max_concurrency":1,"min_warm":0})").status ==
          201);
  f.pools.hold = true;
  Reply first;
  std::mutex mu;
  std::condition_variable cv;
  bool answered = false;
  Request req{"POST", "/v1/functions/f/invoke", route("POST", "/v1/functions/f/invoke"), "e1", {}};
  f.service->handle(std::move(req), [&](Reply r) {
    std::lock_guard lock(mu);
    first = std::move(r);
    answered = true;
    cv.notify_all();
  });
  f.pools.wait_running(1);
  CHECK(contains(f.call("GET", "/v1/invocations?function=f").body, R"("status":"running")"));
  auto second = f.call("POST", "/v1/functions/f/invoke", "e2");
  CHECK(second.status == 429);
  CHECK(contains(second.body, "max_concurrency (1)"));
  f.pools.release();
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return answered; });
  CHECK(first.status == 200);
}

TEST_CASE(
    "service: async invocations queue, run in order, keep the output; shutdown leaves the rest queued") {
  Fixture f;
  REQUIRE(f.call("PUT", "/v1/functions/f", R"({"image":"x:1"})").status == 201);
  f.pools.next.output = "async out";
  auto a = f.call("POST", "/v1/functions/f/invoke?mode=async", "ev-a");
  CHECK(a.status == 202);
  auto id = f.header(a, "Fnexec-Invocation-Id");
  CHECK(f.header(a, "Location") == "/v1/invocations/" + id);
  auto rec = f.call("GET", "/v1/invocations/" + id);
  CHECK(contains(rec.body, R"("status":"done")"));
  CHECK(contains(rec.body, R"("output":"async out")"));
  CHECK(contains(rec.body, R"("mode":"async")"));
  CHECK(f.pools.events == std::vector<std::string>{"ev-a"});

  // No capacity in the pool set: the invocation goes back to the queue and runs on a later pump.
  f.pools.unavailable = true;
  auto b = f.call("POST", "/v1/functions/f/invoke?mode=async", "ev-b");
  auto bid = f.header(b, "Fnexec-Invocation-Id");
  CHECK(contains(f.call("GET", "/v1/invocations/" + bid).body, R"("status":"queued")"));
  f.pools.unavailable = false;
  f.service->pump();
  CHECK(contains(f.call("GET", "/v1/invocations/" + bid).body, R"("status":"done")"));

  f.service->begin_shutdown();
  CHECK(f.call("GET", "/healthz").status == 503);
  CHECK(f.call("POST", "/v1/functions/f/invoke", "x").status == 503);
}

TEST_CASE("service: a deleted function's queued invocations fail with a reason") {
  Fixture f;
  REQUIRE(f.call("PUT", "/v1/functions/f", R"({"image":"x:1"})").status == 201);
  f.pools.unavailable = true;
  auto q = f.call("POST", "/v1/functions/f/invoke?mode=async", "e");
  auto id = f.header(q, "Fnexec-Invocation-Id");
  REQUIRE(f.call("DELETE", "/v1/functions/f").status == 204);
  auto rec = f.call("GET", "/v1/invocations/" + id).body;
  CHECK(contains(rec, R"("outcome":"failed")"));
  CHECK(contains(rec, "was deleted before this invocation ran"));
}

TEST_CASE("service: an async result that is not UTF-8 comes back byte for byte, as base64") {
  Fixture f;
  REQUIRE(f.call("PUT", "/v1/functions/f", R"({"image":"x:1"})").status == 201);
  std::string bytes;
  uint32_t x = 12345;  // a fixed xorshift sequence: every byte value, invalid UTF-8 among them
  for (int i = 0; i < 4096; ++i) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    bytes.push_back(static_cast<char>(i < 256 ? i : x & 0xFF));
  }
  REQUIRE(!is_valid_utf8(bytes));
  auto read_output = [&](const std::string& body) {
    simdjson::dom::parser parser;
    simdjson::padded_string padded(body);
    simdjson::dom::element doc;
    REQUIRE(!parser.parse(padded).get(doc));
    std::string_view output, encoding;
    REQUIRE(!doc["output"].get(output));
    REQUIRE(!doc["output_encoding"].get(encoding));
    return std::pair{std::string(output), std::string(encoding)};
  };

  f.pools.next.output = bytes;
  auto id = f.header(f.call("POST", "/v1/functions/f/invoke?mode=async", "e"), "Fnexec-Invocation-Id");
  auto [output, encoding] = read_output(f.call("GET", "/v1/invocations/" + id).body);
  CHECK(encoding == "base64");
  auto decoded = base64_decode(output);
  REQUIRE(decoded);
  CHECK(*decoded == bytes);

  // Text stays a plain JSON string, as clients of the API always read it; NUL and controls included.
  f.pools.next.output = std::string("h\xC3\xA9llo\0\x01\n", 9);
  id = f.header(f.call("POST", "/v1/functions/f/invoke?mode=async", "e"), "Fnexec-Invocation-Id");
  auto [text, text_encoding] = read_output(f.call("GET", "/v1/invocations/" + id).body);
  CHECK(text_encoding == "utf-8");
  CHECK(text == std::string("h\xC3\xA9llo\0\x01\n", 9));
}

TEST_CASE("service: reuse results: headers and records carry the sandbox; Function.Error is 200") {
  Fixture f;
  REQUIRE(f.call("PUT", "/v1/functions/f", R"({"image":"x:1","lifecycle":"reuse"})").status == 201);
  CHECK(contains(f.call("GET", "/v1/functions/f").body, R"("lifecycle":"reuse")"));
  pool::InvocationResult ok;
  ok.lifecycle = pool::Lifecycle::reuse;
  ok.sandbox_id = "sb-1";
  ok.sandbox_events = 1;
  ok.init_us = 1500;
  ok.output = "r1";
  f.pools.next = ok;
  auto a = f.call("POST", "/v1/functions/f/invoke", "e1");
  CHECK(a.status == 200);
  CHECK(a.body == "r1");
  CHECK(f.header(a, "Fnexec-Lifecycle") == "reuse");
  CHECK(f.header(a, "Fnexec-Sandbox-Id") == "sb-1");
  CHECK(f.header(a, "Fnexec-Sandbox-Events") == "1");
  CHECK(f.header(a, "Fnexec-Init-Us") == "1500");
  CHECK(f.header(a, "Fnexec-Error-Type").empty());
  CHECK(f.header(a, "Fnexec-Function-Error").empty());
  auto rec = f.call("GET", "/v1/invocations/" + f.header(a, "Fnexec-Invocation-Id")).body;
  CHECK(contains(rec, R"("lifecycle":"reuse","sandbox_id":"sb-1","sandbox_events":1,"init_us":1500,)"
                      R"("retired":null,"error_type":null,"error_body":null)"));

  pool::InvocationResult err = ok;
  err.init_us.reset();
  err.sandbox_events = 2;
  err.output.clear();
  err.error_type = "Function.Error";
  err.error_body = R"({"errorType":"ValueError","errorMessage":"bad","stackTrace":[]})";
  f.pools.next = err;
  auto b = f.call("POST", "/v1/functions/f/invoke", "e2");
  CHECK(b.status == 200);
  CHECK(b.content_type == "application/json");
  CHECK(b.body == *err.error_body);
  CHECK(f.header(b, "Fnexec-Function-Error") == "Unhandled");
  CHECK(f.header(b, "Fnexec-Error-Type") == "Function.Error");
  CHECK(f.header(b, "Fnexec-Sandbox-Events") == "2");
  CHECK(f.header(b, "Fnexec-Init-Us").empty());
  rec = f.call("GET", "/v1/invocations/" + f.header(b, "Fnexec-Invocation-Id")).body;
  CHECK(contains(rec, R"("outcome":"error")"));
  CHECK(contains(rec, R"("error_type":"Function.Error","error_body":{"errorType":"ValueError")"));

  // A crash mid-event retires the sandbox: 502 with the type; a body that is not JSON stays a string.
  pool::InvocationResult crash = ok;
  crash.init_us.reset();
  crash.record.exit_code = 3;
  crash.retired = "exit";
  crash.error_type = "Runtime.ExitError";
  crash.error_body = "not json";
  f.pools.next = crash;
  auto c = f.call("POST", "/v1/functions/f/invoke", "e3");
  CHECK(c.status == 502);
  CHECK(f.header(c, "Fnexec-Sandbox-Retired") == "exit");
  CHECK(f.header(c, "Fnexec-Error-Type") == "Runtime.ExitError");
  CHECK(contains(c.body, "function f exited with code 3 while handling the event (Runtime.ExitError)"));
  CHECK(contains(c.body, R"("error_type":"Runtime.ExitError","error_body":"not json")"));
  auto list = f.call("GET", "/v1/invocations?function=f").body;
  CHECK(contains(list, R"("retired":"exit")"));

  auto metrics = f.call("GET", "/metrics").body;
  CHECK(contains(metrics, "fnexec_function_lifecycle{function=\"f\",lifecycle=\"reuse\"} 1"));
  CHECK(contains(metrics, "fnexec_sandbox_retirements_total{function=\"f\",reason=\"exit\"} 1"));
  CHECK(contains(metrics, "fnexec_sandbox_init_duration_seconds_count{function=\"f\"} 1"));
}
