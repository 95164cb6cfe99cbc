// Doctest suite "cluster" (meson suite cluster): three `fnexec serve` daemons behind one nats-server
// with JetStream, started by the test on loopback (an ephemeral port, its store in a tmpfs).
#include <sys/wait.h>

#include "test_serve_fixture.h"

namespace fnexec::test::serve {
namespace {

// nats-server -js on 127.0.0.1:PORT; stop() and start() again keep the port and the store.
class NatsServer {
 public:
  NatsServer() : port_(free_tcp_port()) { start(); }
  ~NatsServer() { stop(); }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  void start() {
    std::vector<std::string> args = {"nats-server", "-js", "-a", "127.0.0.1", "-p", std::to_string(port_),
                                     "-sd", (dir_ / "js").string(), "-l", (dir_ / "nats.log").string()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    REQUIRE(::posix_spawnp(&pid_, "nats-server", &fa, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    wait_until([&] { return accepts(); }, "nats-server to listen");
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  bool accepts() const {
    UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port_);
    return ::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  test::ScratchTmpfs dir_{"256m"};
  uint16_t port_;
  pid_t pid_ = -1;
};

std::string node_config(const NatsServer& nats, const std::string& node) {
  return "cluster_nats = " + nats.url() + "\ncluster_node = " + node + "\n";
}

std::string function_body(const std::string& script, const std::string& fields = "") {
  return R"({"image":"busybox:1","min_warm":0,"max_concurrency":4,"cmd":["/bin/sh","-c",)" +
         server::json_string(script) + "]" + (fields.empty() ? "" : "," + fields) + "}";
}

std::string field(const std::string& json, const std::string& name) {
  std::smatch m;
  std::regex re("\"" + name + R"re(":("([^"]*)"|[0-9a-z]+))re");
  if (!std::regex_search(json, m, re)) return "";
  return m[2].matched ? std::string(m[2]) : std::string(m[1]);
}

// Three nodes of one cluster, started in order.
struct Cluster {
  NatsServer nats;
  std::vector<std::unique_ptr<Daemon>> nodes;
  explicit Cluster(int n = 3) {
    for (int i = 0; i < n; ++i) {
      nodes.push_back(std::make_unique<Daemon>(node_config(nats, "node" + std::string(1, char('a' + i)))));
      nodes.back()->start();
    }
  }
  Daemon& operator[](size_t i) { return *nodes[i]; }
  // Waits until every node has the function (the registry watch is asynchronous).
  void wait_everywhere(const std::string& name) {
    for (auto& d : nodes)
      wait_until([&] { return d->curl("GET", "/v1/functions/" + name).status == 200; }, "the function on every node");
  }
  std::string enqueue(size_t node, const std::string& fn, const std::string& event, const std::string& query = "") {
    auto r = nodes[node]->curl("POST", "/v1/functions/" + fn + "/invoke?mode=async" + query, event);
    REQUIRE_MESSAGE(r.status == 202, r.body);
    return field(r.body, "id");
  }
  // The record as any node shows it, once it is done.
  std::string wait_done(size_t node, const std::string& id) {
    std::string body;
    wait_until([&] {
      auto r = nodes[node]->curl("GET", "/v1/invocations/" + id);
      body = r.body;
      return r.status == 200 && field(body, "status") == "done";
    }, "an async invocation to be done");
    return body;
  }
};

TEST_SUITE("cluster") {

TEST_CASE("a function created on node A runs on node C, and every node lists the cluster") {
  Cluster c;
  auto put = c[0].curl("PUT", "/v1/functions/echo", function_body("cat"));
  REQUIRE_MESSAGE(put.status == 201, put.body);
  c.wait_everywhere("echo");
  auto r = c[2].curl("POST", "/v1/functions/echo/invoke", "from-c");
  CHECK(r.status == 200);
  CHECK(r.body == "from-c");
  auto status = c[1].curl("GET", "/v1/cluster");
  REQUIRE(status.status == 200);
  wait_until([&] {
    auto s = c[1].curl("GET", "/v1/cluster").body;
    return contains(s, "\"node\":\"nodea\"") && contains(s, "\"node\":\"nodeb\"") && contains(s, "\"node\":\"nodec\"");
  }, "three nodes in GET /v1/cluster");
  auto cli = c[0].cli({"cluster", "status"});
  CHECK_MESSAGE(cli.exit_code == 0, cli.err);
  CHECK(contains(cli.out, "nodec"));
  // A delete on C removes it everywhere.
  CHECK(c[2].curl("DELETE", "/v1/functions/echo").status == 204);
  wait_until([&] { return c[0].curl("GET", "/v1/functions/echo").status == 404; }, "the delete to reach node A");
}

TEST_CASE("async events spread over the nodes and each completes once; a client's retry does not enqueue twice") {
  Cluster c;
  REQUIRE(c[0].curl("PUT", "/v1/functions/spread", function_body("sleep 0.05; cat")).status == 201);
  c.wait_everywhere("spread");
  // 150 here (the issue says 1,000): each oneshot event starts a sandbox, ~15 ms of CPU on 2 cores.
  constexpr int kEvents = 150;
  std::vector<std::string> ids;
  for (int i = 0; i < kEvents; ++i) ids.push_back(c.enqueue(i % 3, "spread", "event-" + std::to_string(i)));
  std::map<std::string, int> per_node;
  int redelivered = 0;
  for (int i = 0; i < kEvents; ++i) {
    auto rec = c.wait_done((i + 1) % 3, ids[i]);
    CHECK(field(rec, "outcome") == "success");
    CHECK(field(rec, "output") == "event-" + std::to_string(i));
    ++per_node[field(rec, "node")];
    if (field(rec, "delivery") != "1") ++redelivered;
  }
  MESSAGE("events per node: a=" << per_node["nodea"] << " b=" << per_node["nodeb"] << " c=" << per_node["nodec"]);
  CHECK(per_node.size() >= 2);
  CHECK(redelivered == 0);
  // Same id again: the record is found, nothing runs twice.
  auto first = c.enqueue(0, "spread", "once", "&id=client-key-1");
  CHECK(first == "client-key-1");
  c.wait_done(0, first);
  auto again = c[1].curl("POST", "/v1/functions/spread/invoke?mode=async&id=client-key-1", "once");
  CHECK(again.status == 202);
  CHECK(contains(again.body, "\"duplicate\":true"));
}

TEST_CASE("SIGKILL of a node mid-load: its unacked events are delivered again and all complete") {
  Cluster c;
  REQUIRE(c[0].curl("PUT", "/v1/functions/slow", function_body("sleep 0.3; cat", R"("timeout_ms":2000)")).status == 201);
  c.wait_everywhere("slow");
  constexpr int kEvents = 60;
  std::vector<std::string> ids;
  for (int i = 0; i < kEvents; ++i) ids.push_back(c.enqueue(i % 2, "slow", "e" + std::to_string(i)));
  // Once node C has run something, it holds more: kill it.
  wait_until([&] { return contains(c[2].log(), "cluster: function=slow consuming"); }, "node C consuming");
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  CHECK(c[2].stop(SIGKILL) == 128 + SIGKILL);
  int duplicates = 0;
  for (int i = 0; i < kEvents; ++i) {
    auto rec = c.wait_done(i % 2, ids[i]);
    CHECK(field(rec, "outcome") == "success");
    if (field(rec, "delivery") != "1") ++duplicates;
  }
  // Only what C had fetched and not acked comes again: at most its max_concurrency (4) batch.
  MESSAGE("events delivered more than once after the SIGKILL: " << duplicates);
  CHECK(duplicates <= 8);
}

TEST_CASE("a failing function lands in the dead-letter stream after its retries, with its last error") {
  Cluster c(2);
  REQUIRE(c[0].curl("PUT", "/v1/functions/fails", function_body("echo broken >&2; exit 3")).status == 201);
  c.wait_everywhere("fails");
  auto id = c.enqueue(1, "fails", "doomed");
  auto rec = c.wait_done(0, id);
  CHECK(field(rec, "delivery") == "3");  // retries 2 (the default): three deliveries
  CHECK(field(rec, "outcome") == "error");
  std::string dead;
  wait_until([&] {
    dead = c[1].curl("GET", "/v1/dead-letters").body;
    return contains(dead, id);
  }, "the dead letter");
  CHECK(contains(dead, "\"attempts\":3"));
  CHECK(contains(dead, "exited with code 3"));
  CHECK(contains(c[0].curl("GET", "/v1/dead-letters").body, id));  // on any node
}

TEST_CASE("NATS lost and back: sync invocations keep working, the daemon reconnects without a restart") {
  Cluster c(1);
  REQUIRE(c[0].curl("PUT", "/v1/functions/local", function_body("cat")).status == 201);
  c.nats.stop();
  wait_until([&] { return c[0].curl("GET", "/v1/cluster").status == 503; }, "the daemon to see NATS gone");
  auto r = c[0].curl("POST", "/v1/functions/local/invoke", "still-here");
  CHECK(r.status == 200);
  CHECK(r.body == "still-here");
  auto async = c[0].curl("POST", "/v1/functions/local/invoke?mode=async", "x");
  CHECK(async.status == 503);
  c.nats.start();
  wait_until([&] { return c[0].curl("GET", "/v1/cluster").status == 200; }, "the daemon to reconnect");
  auto id = c.enqueue(0, "local", "after");
  CHECK(field(c.wait_done(0, id), "output") == "after");
  CHECK(contains(c[0].log(), "reconnected to NATS"));
}

TEST_CASE("a node restarted catches up on functions changed while it was down") {
  Cluster c(2);
  REQUIRE(c[0].curl("PUT", "/v1/functions/old", function_body("cat")).status == 201);
  c.wait_everywhere("old");
  CHECK(c[1].stop(SIGTERM) == 0);
  REQUIRE(c[0].curl("DELETE", "/v1/functions/old").status == 204);
  REQUIRE(c[0].curl("PUT", "/v1/functions/new", function_body("cat")).status == 201);
  c[1].start();
  wait_until([&] { return c[1].curl("GET", "/v1/functions/new").status == 200; }, "node B to get the new function");
  wait_until([&] { return c[1].curl("GET", "/v1/functions/old").status == 404; }, "node B to drop the deleted one");
  CHECK(c[1].curl("POST", "/v1/functions/new/invoke", "hi").body == "hi");
}

}  // TEST_SUITE

}  // namespace
}  // namespace fnexec::test::serve
