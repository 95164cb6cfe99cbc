// Doctest suite "cluster" (meson suite cluster): sync invocations forwarded to a node with a free
// slot over NATS request-reply, and JetStream on a 3-server NATS cluster losing one server.
#include <simdjson.h>

#include "cluster_fixture.h"
#include "lambda_images.h"

namespace fnexec::test::serve {
namespace {

// Holds its slot while the event starts with "hold" (for as many seconds as the event says after it).
// "big": 1.5 MB of output, over NATS's 1 MiB max_payload (the result comes back in parts).
const char* kHolding = R"(e=$(cat); case $e in hold*) sleep ${e#hold};; big) head -c 1500000 /dev/zero; exit;; esac; printf %s "$e")";

// The holding function with one slot per node.
std::string one_slot(const std::string& fields = "") {
  auto body = function_body(kHolding, fields);
  body.replace(body.find("\"max_concurrency\":4"), 19, "\"max_concurrency\":1");
  return body;
}

// A sync invocation on its own thread, for a call that must hold a slot while the test goes on.
struct Background {
  Http reply;
  std::thread thread;
  Background(Daemon& d, const std::string& fn, const std::string& event)
      : thread([this, &d, fn, event] { reply = d.curl("POST", "/v1/functions/" + fn + "/invoke", event); }) {}
  ~Background() {
    if (thread.joinable()) thread.join();
  }
  Http& join() {
    thread.join();
    return reply;
  }
};

// Waits until the node runs n invocations of the function (its pool's busy sandboxes).
void wait_busy(Daemon& d, const std::string& fn, int n) {
  wait_until([&] { return field(d.curl("GET", "/v1/functions/" + fn).body, "busy") == std::to_string(n); },
             "the function's slot to be taken");
}

TEST_SUITE("cluster") {

TEST_CASE("a sync invocation on a node at max_concurrency runs on another node; all busy: 429") {
  Cluster c(2);
  REQUIRE(c[0].curl("PUT", "/v1/functions/one", one_slot()).status == 201);
  c.wait_everywhere("one");
  Background hold_a(c[0], "one", "hold6");
  wait_busy(c[0], "one", 1);

  // A is full: the call to A runs on B and answers as a local run would, with B's record.
  auto r = c[0].curl("POST", "/v1/functions/one/invoke", "ran-elsewhere");
  CHECK_MESSAGE(r.status == 200, r.body);
  CHECK(r.body == "ran-elsewhere");
  CHECK(r.header("Fnexec-Node") == "nodeb");
  CHECK(r.header("Fnexec-Exit-Code") == "0");
  CHECK(!r.header("Fnexec-Start").empty());
  auto id = r.header("Fnexec-Invocation-Id");
  REQUIRE(!id.empty());
  wait_until([&] { return c[1].curl("GET", "/v1/invocations/" + id).status == 200; }, "the record on node B");
  // The caller finds it too, in the results bucket: B puts it there after its reply.
  std::string on_a;
  wait_until([&] {
    auto g = c[0].curl("GET", "/v1/invocations/" + id);
    on_a = g.body;
    return g.status == 200;
  }, "the forwarded call's record on node A");
  CHECK(field(on_a, "mode") == "sync");
  CHECK(field(on_a, "status") == "done");
  CHECK(field(on_a, "outcome") == "success");
  CHECK(field(on_a, "node") == "nodeb");
  CHECK(field(on_a, "exit_code") == "0");
  CHECK(field(on_a, "started_ms") == field(c[1].curl("GET", "/v1/invocations/" + id).body, "started_ms"));
  auto big = c[0].curl("POST", "/v1/functions/one/invoke", "big");
  CHECK(big.status == 200);
  CHECK(big.body == std::string(1500000, '\0'));
  CHECK(big.header("Fnexec-Node") == "nodeb");
  // The Lambda API's RequestResponse shares the path: forwarded too, answered in Lambda's terms.
  auto lambda = c[0].curl("POST", "/2015-03-31/functions/one/invocations", R"("via-lambda")");
  CHECK_MESSAGE(lambda.status == 200, lambda.body);
  CHECK(lambda.body == R"("via-lambda")");
  CHECK(!lambda.header("x-amzn-RequestId").empty());

  // B full as well: nobody can take it within the wait, 429 as without a cluster.
  Background hold_b(c[1], "one", "hold3");
  wait_busy(c[1], "one", 1);
  auto busy = c[0].curl("POST", "/v1/functions/one/invoke", "nowhere");
  CHECK(busy.status == 429);
  CHECK(busy.header("Retry-After") == "1");
  CHECK_MESSAGE(contains(busy.body, "no node of the cluster had a free slot"), busy.body);
  CHECK(hold_a.join().body == "hold6");
  CHECK(hold_b.join().body == "hold3");
}

TEST_CASE("a Lambda caller's context reaches the runtime of a forwarded sync call and of an Event in the stream") {
  if (python_missing()) return;
  Cluster c(2);
  c.upload_image_everywhere("lpy", "1", python_lambda_archive());
  REQUIRE(c[0].curl("PUT", "/v1/functions/ctx",
                    R"({"image":"lpy:1","protocol":"lambda","min_warm":1,"max_concurrency":1,"timeout_ms":6000})")
              .status == 201);
  c.wait_everywhere("ctx");
  // B must be able to take the forwarded call: its pool configured and its runtime up.
  for (size_t n = 0; n < 2; ++n)
    wait_until([&] { return field(c[n].curl("GET", "/v1/functions/ctx").body, "warm") == "1"; },
               "the Lambda runtime to be warm on every node");
  const std::string client_context = R"({"client":{"app_title":"cluster"},"custom":{"k":"v"}})";
  const std::vector<std::string> context_headers = {
      "-H", "X-Amz-Client-Context: " + server::base64_encode(client_context), "-H",
      "X-Amzn-Trace-Id: Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1", "-H",
      R"(Fnexec-Cognito-Identity: {"cognitoIdentityId":"id-c","cognitoIdentityPoolId":"pool-c"})"};
  auto check_context = [](const std::string& output) {
    CHECK(contains(output, R"("client_context": {"client": {"app_title": "cluster"}, "custom": {"k": "v"}})"));
    CHECK(contains(output, R"("trace_id": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")"));
    CHECK(contains(output, R"("identity": {"cognitoIdentityId": "id-c", "cognitoIdentityPoolId": "pool-c"})"));
  };

  // A's one slot is taken: the RequestResponse call to A runs on B, its context in the request's headers.
  Background hold_a(c[0], "ctx", R"({"action":"sleep"})");
  wait_busy(c[0], "ctx", 1);
  auto forwarded = c[0].curl("POST", "/2015-03-31/functions/ctx/invocations", R"({"action":"context"})", context_headers);
  INFO(forwarded.body);
  CHECK(forwarded.status == 200);
  CHECK(forwarded.header("X-Amz-Function-Error").empty());
  check_context(forwarded.body);
  auto id = forwarded.header("x-amzn-RequestId");
  std::erase(id, '-');
  CHECK(c[1].curl("GET", "/v1/invocations/" + id).status == 200);  // B ran it
  hold_a.join();  // the sleep ends at the function's timeout

  // An Event: its context goes with it through JetStream (message headers) to the node that runs it.
  auto event_headers = context_headers;
  event_headers.insert(event_headers.end(), {"-H", "X-Amz-Invocation-Type: Event"});
  auto ev = c[0].curl("POST", "/2015-03-31/functions/ctx/invocations", R"({"action":"context"})", event_headers);
  REQUIRE_MESSAGE(ev.status == 202, ev.body);
  auto ev_id = ev.header("x-amzn-RequestId");
  std::erase(ev_id, '-');
  auto record = c.wait_done(1, ev_id);
  simdjson::dom::parser parser;
  std::string_view output;
  REQUIRE_MESSAGE(!parser.parse(record).get_object()["output"].get(output), record);
  check_context(std::string(output));
}

TEST_CASE("the node running a forwarded invocation is killed: the caller gets a clear error, not a hang") {
  Cluster c(2);
  REQUIRE(c[0].curl("PUT", "/v1/functions/one", one_slot(R"("timeout_ms":60000)")).status ==
          201);
  c.wait_everywhere("one");
  Background hold_a(c[0], "one", "hold5");
  wait_busy(c[0], "one", 1);
  Background forwarded(c[0], "one", "hold50");
  wait_busy(c[1], "one", 1);
  CHECK(c[1].stop(SIGKILL) == 128 + SIGKILL);
  auto& r = forwarded.join();
  CHECK(r.status == 502);
  CHECK_MESSAGE(contains(r.body, "stopped answering"), r.body);
  CHECK(contains(r.body, "nodeb"));
  CHECK(hold_a.join().status == 200);
}

TEST_CASE("one NATS server of three killed mid-load: the service goes on and every async event completes") {
  NatsCluster nats;
  Nodes c(3, nats.urls(), "cluster_replicas = 3\n");
  REQUIRE(c[0].curl("PUT", "/v1/functions/work", function_body("sleep 0.05; cat")).status == 201);
  c.wait_everywhere("work");
  // cluster_replicas = 3: the invocation stream lives on every server, so any one may go.
  auto streams = nats.servers[1]->monitor("/jsz?accounts=true&streams=true&config=true");
  CHECK_MESSAGE(contains(streams, "\"num_replicas\": 3"), streams);
  constexpr int kEvents = 90;
  // The client's own id: an enqueue that fails while JetStream elects new leaders is sent again
  // with the same id, so it is enqueued once.
  auto enqueue = [&](int i) {
    std::string id = "ev-" + std::to_string(i);
    wait_until([&] {
      return c[i % 3].curl("POST", "/v1/functions/work/invoke?mode=async&id=" + id, "e" + std::to_string(i)).status ==
             202;
    }, "an enqueue to be accepted");
    return id;
  };
  std::vector<std::string> ids;
  for (int i = 0; i < kEvents / 3; ++i) ids.push_back(enqueue(i));
  // The server that dies leads the results bucket: every result write fails until another one is
  // elected, seconds in which events run, and nodes connected to it lose what was in flight.
  auto dead = nats.leader_of("KV_fnexec-results");
  nats.servers[dead]->stop();
  for (int i = kEvents / 3; i < kEvents; ++i) ids.push_back(enqueue(i));
  // An event the server died with while delivering it comes again after AckWait (the default
  // timeout 30 s + 5 s), well within the minute wait_done gives each.
  int redelivered = 0;
  std::map<std::string, int> per_node;
  for (int i = 0; i < kEvents; ++i) {
    auto rec = c.wait_done((i + 1) % 3, ids[i]);
    CHECK(field(rec, "outcome") == "success");
    CHECK(field(rec, "output") == "e" + std::to_string(i));
    ++per_node[field(rec, "node")];
    if (field(rec, "delivery") != "1") ++redelivered;
  }
  int runs = c.runs("work", {0, 1, 2});
  MESSAGE("after one NATS server of three died: " << runs << " runs of " << kEvents << " events; " << redelivered
          << " stored from a later delivery; per node a=" << per_node["nodea"] << " b=" << per_node["nodeb"]
          << " c=" << per_node["nodec"]);
  // No node died, so no event ran twice (docs/ARCHITECTURE.md, Cluster: delivery): a delivery
  // lost with the server had not run; an ack lost with it brings the event again, and the node
  // that gets it finds its result stored and acks it unrun; a result write refused while the
  // results bucket elects a leader is sent again until shortly before AckWait.
  CHECK(runs == kEvents);
  // Sync invocations keep working on every node.
  for (size_t n = 0; n < 3; ++n) CHECK(c[n].curl("POST", "/v1/functions/work/invoke", "sync").body == "sync");
}

TEST_CASE("the server leading the dead-letter stream dies during an event's last delivery: its dead letter is stored") {
  NatsCluster nats;
  Nodes c(1, nats.urls(), "cluster_replicas = 3\n");
  // No retries: the first delivery is the last; it fails 2 s in, while the stream elects a leader.
  REQUIRE(c[0].curl("PUT", "/v1/functions/dies",
                    function_body("sleep 2; echo broken >&2; exit 3", R"("retries":0,"timeout_ms":20000)"))
              .status == 201);
  auto id = c.enqueue(0, "dies", "keep me");
  wait_busy(c[0], "dies", 1);
  nats.servers[nats.leader_of("FNEXEC_DEAD_LETTERS")]->stop();
  auto rec = c.wait_done(0, id);
  CHECK(field(rec, "dead_letter") == "true");
  std::string dead;
  wait_until([&] {
    auto r = c[0].curl("GET", "/v1/dead-letters?function=dies");
    dead = r.body;
    return r.status == 200 && contains(dead, id);
  }, "the dead letter");
  CHECK(contains(dead, "\"attempts\":1"));
  CHECK(contains(dead, "exited with code 3"));
  CHECK(c[0].curl("GET", "/v1/dead-letters/" + id).status == 200);
  // Acked once both were stored: nothing of it stays in the invocation stream.
  wait_until([&] { return field(c[0].curl("GET", "/v1/cluster").body, "async_pending") == "0"; },
             "the event to leave the stream");
  CHECK(c.runs("dies", {0}) == 1);
}

}  // TEST_SUITE

}  // namespace
}  // namespace fnexec::test::serve
