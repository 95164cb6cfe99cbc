// protocol lambda through the daemon: a Lambda custom runtime in stdlib Python (the way AWS documents
// custom runtimes, urllib against AWS_LAMBDA_RUNTIME_API) runs unmodified in a sandbox built by
// mkimage from the host's python3; its results and errors reach callers and records exactly like a
// fnexec/1 function's. Runtimes that break the Runtime API get named errors and leave nothing behind.
#include <set>

#include "lambda_images.h"

using namespace fnexec;
using namespace fnexec::test::serve;
using namespace std::chrono_literals;

namespace {

// A daemon with the Python Lambda image imported as lpy:1.
struct LambdaDaemon : Daemon {
  LambdaDaemon() {
    start();
    auto up = curl("POST", "/v1/images?name=lpy%3A1", std::nullopt,
                   {"--data-binary", "@" + python_lambda_archive().string()});
    REQUIRE_MESSAGE(up.status == 201, up.body);
  }
  Http put(const std::string& name, const std::string& fields) {
    return curl("PUT", "/v1/functions/" + name, R"({"image":"lpy:1",)" + fields + "}");
  }
  Http invoke(const std::string& name, const std::string& event) {
    return curl("POST", "/v1/functions/" + name + "/invoke", event);
  }
  std::string record_of(const Http& reply) {
    auto r = curl("GET", "/v1/invocations/" + reply.header("Fnexec-Invocation-Id"));
    REQUIRE(r.status == 200);
    return r.body;
  }
};

}  // namespace

TEST_SUITE("serve") {
  TEST_CASE("protocol lambda: fields round trip; mistakes are named and nothing is stored") {
    if (python_missing()) return;
    LambdaDaemon d;
    auto r = d.put("lam", R"("protocol":"lambda","min_warm":0)");
    REQUIRE_MESSAGE(r.status == 201, r.body);
    auto got = d.curl("GET", "/v1/functions/lam").body;
    // Lambda's model is reuse when no lifecycle is given.
    CHECK(contains(got, R"("lifecycle":"reuse")"));
    CHECK(contains(got, R"("protocol":"lambda","handler":"")"));

    auto bad = d.put("bad", R"("protocol":"grpc")");
    CHECK(bad.status == 400);
    CHECK(contains(bad.body, R"(field \"protocol\" must be fnexec or lambda, got \"grpc\")"));
    bad = d.put("bad", R"("protocol":"lambda","lifecycle":"oneshot")");
    CHECK(bad.status == 400);
    CHECK(contains(bad.body, "protocol lambda needs reuse"));
    bad = d.put("bad", R"("handler":"app.handler","lifecycle":"reuse")");
    CHECK(bad.status == 400);
    CHECK(contains(bad.body, "applies to protocol lambda only"));
    CHECK(d.curl("GET", "/v1/functions/bad").status == 404);

    // fresh: each event gets a runtime that ran its init and never served another event. The pool
    // parks runtimes that already asked for their first event, so the event finds one warm.
    r = d.put("fresh", R"("protocol":"lambda","lifecycle":"fresh","min_warm":1,"max_concurrency":2)");
    REQUIRE_MESSAGE(r.status == 201, r.body);
    std::set<std::string> sandboxes;
    for (int i = 0; i < 3; ++i) {
      wait_until(
          [&] {
            return d.curl("GET", "/v1/functions/fresh").body.find(R"("pool":{"warm":1)") != std::string::npos;
          },
          "a fresh Lambda runtime parked after its init");
      auto f = d.invoke("fresh", R"({"action":"env"})");
      REQUIRE_MESSAGE(f.status == 200, f.body);
      CHECK(f.header("Fnexec-Start") == "warm");
      CHECK(f.header("Fnexec-Lifecycle") == "fresh");
      CHECK(f.header("Fnexec-Sandbox-Events") == "1");
      CHECK(f.header("Fnexec-Sandbox-Retired") == "fresh");
      CHECK(!f.header("Fnexec-Init-Us").empty());
      CHECK(contains(f.body, R"("AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001")"));
      auto count = d.invoke("fresh", "{}");
      REQUIRE_MESSAGE(count.status == 200, count.body);
      CHECK(contains(count.body, R"("count": 1)"));  // its module state never saw the event before
      sandboxes.insert(f.header("Fnexec-Sandbox-Id"));
      sandboxes.insert(count.header("Fnexec-Sandbox-Id"));
    }
    CHECK(sandboxes.size() == 6);

    // The CLI sends both fields.
    std::vector<std::string> create = {
        "fn",         "create", "cli-lam",   "--socket",    d.socket().string(), "--image", "lpy:1",
        "--protocol", "lambda", "--handler", "app.handler", "--min-warm",        "0"};
    auto cli = test::fnexec(create);
    REQUIRE_MESSAGE(cli.exit_code == 0, cli.err);
    CHECK(contains(d.curl("GET", "/v1/functions/cli-lam").body,
                   R"("protocol":"lambda","handler":"app.handler")"));
  }

  TEST_CASE(
      "protocol lambda: a stdlib Python runtime serves warm events; errors, exits and timeouts are "
      "recorded") {
    if (python_missing()) return;
    LambdaDaemon d;
    auto r = d.put(
        "py", R"("protocol":"lambda","min_warm":1,"max_concurrency":1,"memory_mb":128,"timeout_ms":3000,)"
              R"("env":["AWS_REGION=eu-west-1"])");
    REQUIRE_MESSAGE(r.status == 201, r.body);
    wait_until(
        [&] {
          return d.curl("GET", "/v1/functions/py").body.find(R"("pool":{"warm":1)") != std::string::npos;
        },
        "a Lambda runtime that asked for its first event");

    // Warm: one runtime process answers event after event, its module state carried over.
    std::vector<Http> replies;
    for (int i = 1; i <= 3; ++i) {
      replies.push_back(d.invoke("py", R"({"n":)" + std::to_string(i) + "}"));
      REQUIRE_MESSAGE(replies.back().status == 200, replies.back().body);
      CHECK(contains(replies.back().body, R"("count": )" + std::to_string(i)));
      CHECK(contains(replies.back().body, R"("echo": {"n": )" + std::to_string(i) + "}"));
      CHECK(replies.back().header("Fnexec-Sandbox-Id") == replies[0].header("Fnexec-Sandbox-Id"));
      CHECK(replies.back().header("Fnexec-Lifecycle") == "reuse");
    }
    // The deadline it was given is the function's timeout, less what already passed.
    std::smatch m;
    REQUIRE(std::regex_search(replies[0].body, m, std::regex(R"("remaining_ms": (\d+))")));
    CHECK(std::stoi(m[1]) <= 3000);
    CHECK(std::stoi(m[1]) > 0);

    // What Lambda runtimes read from their environment and from the next event's headers.
    auto env = d.invoke("py", R"({"action":"env"})");
    REQUIRE(env.status == 200);
    for (const char* want :
         {R"("_HANDLER": "app.handler")", R"("LAMBDA_TASK_ROOT": "/var/task")",
          R"("AWS_LAMBDA_FUNCTION_NAME": "py")", R"("AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128")",
          R"("AWS_REGION": "eu-west-1")", R"("AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001")",
          R"("AWS_LAMBDA_FUNCTION_VERSION": "$LATEST")",
          R"("arn": "arn:aws:lambda:eu-west-1:000000000000:function:py")", R"("cwd": "/var/task")"})
      CHECK_MESSAGE(contains(env.body, want), want << " in " << env.body);

    // START/END/REPORT per event in the record's log, like Lambda's log stream.
    auto first = d.record_of(replies[0]);
    CHECK(std::regex_search(
        first,
        std::regex(R"re("stderr_tail":"START RequestId: [0-9a-f-]{36} Version: \$LATEST\\nhandling )re")));
    CHECK(std::regex_search(
        first,
        std::regex(
            R"(REPORT RequestId: [0-9a-f-]{36}\\tDuration: [0-9.]+ ms\\tBilled Duration: \d+ ms\\tMemory Size: 128 MB\\tMax Memory Used: \d+ MB\\tInit Duration: [0-9.]+ ms)")));
    CHECK(!contains(d.record_of(replies[1]), "Init Duration"));

    // A thrown error is the function's answer: 200, Fnexec-Function-Error, the error document as
    // the body; recorded as Function.Error; the runtime lives on.
    auto err = d.invoke("py", R"({"action":"fail"})");
    CHECK(err.status == 200);
    CHECK(err.header("Fnexec-Function-Error") == "Unhandled");
    CHECK(err.header("Fnexec-Error-Type") == "Function.Error");
    CHECK(contains(err.body, R"("errorType": "ValueError", "errorMessage": "asked to fail")"));
    auto rec = d.record_of(err);
    CHECK(contains(rec, R"("outcome":"error")"));
    CHECK(contains(rec, R"("error_type":"Function.Error","error_body":{"errorType": "ValueError")"));
    auto after = d.invoke("py", "{}");
    CHECK(after.status == 200);
    CHECK(contains(after.body, R"("count": 6)"));
    CHECK(after.header("Fnexec-Sandbox-Id") == replies[0].header("Fnexec-Sandbox-Id"));

    // The runtime exits mid-event: Runtime.ExitError, the sandbox retired; a new one answers next.
    auto exit = d.invoke("py", R"({"action":"exit"})");
    CHECK(exit.status == 502);
    CHECK(exit.header("Fnexec-Error-Type") == "Runtime.ExitError");
    CHECK(exit.header("Fnexec-Sandbox-Retired") == "exit");
    CHECK(contains(d.record_of(exit), "Runtime exited with status 3"));
    auto fresh = d.invoke("py", "{}");
    CHECK(fresh.status == 200);
    CHECK(contains(fresh.body, R"("count": 1)"));

    // Past its deadline: the sandbox is killed (the runtime clients enforce nothing themselves).
    auto slow = d.invoke("py", R"({"action":"sleep"})");
    CHECK(slow.status == 504);
    CHECK(slow.header("Fnexec-Error-Type") == "Runtime.Timeout");
    auto slow_rec = d.record_of(slow);
    CHECK(contains(slow_rec, R"("timed_out":true)"));
    CHECK(contains(slow_rec, "Task timed out after 3.00 seconds"));

    // Async: queued, run by the same warm runtime, result and error kept in the record.
    auto queued = d.curl("POST", "/v1/functions/py/invoke?mode=async", R"({"q":1})");
    REQUIRE(queued.status == 202);
    auto queued_error = d.curl("POST", "/v1/functions/py/invoke?mode=async", R"({"action":"fail"})");
    REQUIRE(queued_error.status == 202);
    for (auto* q : {&queued, &queued_error}) {
      Http done;
      wait_until(
          [&] {
            done = d.curl("GET", "/v1/invocations/" + q->header("Fnexec-Invocation-Id"));
            return contains(done.body, R"("status":"done")");
          },
          "the async lambda invocation to finish");
      if (q == &queued) {
        CHECK(contains(done.body, R"("outcome":"success")"));
        CHECK(contains(done.body, R"(\"echo\": {\"q\": 1})"));
      } else {
        CHECK(
            contains(done.body, R"("error_type":"Function.Error","error_body":{"errorType": "ValueError")"));
      }
    }

    // A result over max_output_bytes (6 MiB) is refused with 413 and reported.
    auto big = d.invoke("py", R"({"action":"big"})");
    CHECK(big.header("Fnexec-Error-Type") == "Runtime.OutputTooLarge");
    CHECK(contains(big.body, R"("output_too_large":true)"));
    CHECK(d.invoke("py", "{}").status == 200);
  }

  TEST_CASE("protocol lambda: hostile runtimes get named errors, are retired and leave nothing behind") {
    if (python_missing()) return;
    LambdaDaemon d;
    auto before = test::ResourceSnapshot::take();
    struct Case {
      std::string mode, error_type, says;
    };
    const std::vector<Case> cases = {
        {"never", "Runtime.InitError", "no GET .../invocation/next within init_timeout (1500 ms)"},
        {"flood", "Runtime.InitError", "no GET .../invocation/next within init_timeout"},
        {"garbage", "Runtime.InitError", "malformed HTTP from the runtime"},
        {"init-error", "Runtime.InitError", "Runtime.ImportModuleError"},
        {"wrong-id", "Runtime.ProtocolError", "answers no event; the event in flight is"},
        {"double", "Runtime.ProtocolError", "answered twice"},
        {"unknown-path", "Runtime.ProtocolError", "unknown path"},
        {"big-length", "Runtime.OutputTooLarge", R"("output_too_large":true)"},
        {"die", "Runtime.ExitError", "Runtime exited with status 7"},
    };
    for (const auto& c : cases) {
      CAPTURE(c.mode);
      auto r =
          d.put("h-" + c.mode, R"("protocol":"lambda","min_warm":0,"init_timeout_ms":1500,"timeout_ms":5000,)"
                               R"("entrypoint":["python3","/var/runtime/hostile.py"],"handler":")" +
                                   c.mode + "\"");
      REQUIRE_MESSAGE(r.status == 201, r.body);
      auto reply = d.invoke("h-" + c.mode, "{}");
      CHECK(reply.status >= 500);
      CHECK(reply.header("Fnexec-Error-Type") == c.error_type);
      auto rec = d.record_of(reply);
      CHECK_MESSAGE(contains(rec + reply.body + d.log(), c.says), rec);
    }
    // Not hostile: a client that sends Expect: 100-continue gets its 100 before it sends the body.
    auto r = d.put(
        "expect",
        R"("protocol":"lambda","lifecycle":"fresh","min_warm":0,"entrypoint":["python3","/var/runtime/hostile.py"],)"
        R"("handler":"expect-continue")");
    REQUIRE_MESSAGE(r.status == 201, r.body);
    auto expect = d.invoke("expect", "{}");
    CHECK_MESSAGE(expect.status == 200, expect.body);
    CHECK(expect.body == R"("ok")");

    // Every sandbox was killed and reaped, its cgroup removed, no mount left.
    wait_until(
        [&] {
          auto now = test::ResourceSnapshot::take();
          return now.processes <= before.processes && now.cgroups <= before.cgroups && now.fds <= before.fds;
        },
        "the hostile runtimes' sandboxes to be gone");
    CHECK(test::count_mounts_below(d.scratch().path()) <= 1);
  }
}
