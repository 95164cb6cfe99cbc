// Fixture of the doctest suite "cluster": nats-server processes with JetStream (one alone, or three
// with routes as one NATS cluster) and `fnexec serve` daemons joined through them, all on loopback
// with ephemeral ports, each store and daemon root on its own tmpfs.
#pragma once

#include <simdjson.h>
#include <sys/wait.h>

#include "test_serve_fixture.h"

namespace fnexec::test::serve {

// nats-server -js on 127.0.0.1; stop() and start() again keep the ports and the store.
class NatsServer {
 public:
  // One server alone; config: the text of a nats-server configuration file (-c), e.g. users and
  // their permissions.
  explicit NatsServer(std::string config = "") : port_(free_tcp_port()), config_(std::move(config)) { start(); }
  // A member of a NATS cluster: its name, its route port and every member's route port; not started
  // (the members start together, see NatsCluster).
  NatsServer(std::string name, uint16_t route_port, std::vector<uint16_t> routes)
      : port_(free_tcp_port()), name_(std::move(name)), route_port_(route_port), monitor_port_(free_tcp_port()),
        routes_(std::move(routes)) {}
  ~NatsServer() { stop(); }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  void start() {
    std::vector<std::string> args = {"nats-server", "-js", "-a", "127.0.0.1", "-p", std::to_string(port_),
                                     "-sd", (dir_ / "js").string(), "-l", (dir_ / "nats.log").string()};
    if (!config_.empty()) {
      auto path = dir_ / "nats.conf";
      write_file(path, config_);
      args.insert(args.end(), {"-c", path.string()});
    }
    if (!name_.empty()) {
      std::string routes;
      for (auto p : routes_)
        if (p != route_port_) routes += (routes.empty() ? "" : ",") + ("nats://127.0.0.1:" + std::to_string(p));
      // The cluster name is unique per test process, so two test runs' clusters never join.
      args.insert(args.end(), {"-n", name_, "--cluster_name", "fnexec-test-" + std::to_string(::getpid()),
                               "--cluster", "nats://127.0.0.1:" + std::to_string(route_port_), "--routes", routes,
                               "-m", std::to_string(monitor_port_)});
    }
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
  // A cluster member's monitoring endpoint, e.g. "/healthz", "/jsz?accounts=true&streams=true&config=true".
  std::string monitor(const std::string& path) const {
    return test::run({"curl", "-s", "-m", "2", "http://127.0.0.1:" + std::to_string(monitor_port_) + path}).out;
  }
  // A cluster member: JetStream has its meta leader and this server is current.
  bool jetstream_ready() const { return contains(monitor("/healthz"), "\"ok\""); }

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
  std::string config_;
  std::string name_;  // "" for a server alone
  uint16_t route_port_ = 0, monitor_port_ = 0;
  std::vector<uint16_t> routes_;
  pid_t pid_ = -1;
};

// Three nats-servers with routes between them: one NATS cluster whose JetStream keeps 3 replicas.
struct NatsCluster {
  std::vector<std::unique_ptr<NatsServer>> servers;
  NatsCluster() {
    std::vector<uint16_t> routes = {free_tcp_port(), free_tcp_port(), free_tcp_port()};
    for (size_t i = 0; i < routes.size(); ++i)
      servers.push_back(std::make_unique<NatsServer>("n" + std::to_string(i), routes[i], routes));
    for (auto& s : servers) s->start();
    for (auto& s : servers) wait_until([&] { return s->jetstream_ready(); }, "JetStream of the NATS cluster");
  }
  std::string urls() const {
    std::string out;
    for (const auto& s : servers) out += (out.empty() ? "" : ",") + s->url();
    return out;
  }
  // The member that leads a stream now (from member `ask`'s /jsz), e.g. "KV_fnexec-results".
  size_t leader_of(const std::string& stream, size_t ask = 0) const {
    auto jsz = simdjson::padded_string(servers[ask]->monitor("/jsz?accounts=true&streams=true"));
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    REQUIRE_MESSAGE(!parser.parse(jsz).get(doc), "no /jsz from nats-server n" << ask);
    simdjson::dom::array accounts, streams;
    REQUIRE(!doc["account_details"].get(accounts));
    for (auto account : accounts) {
      if (account["stream_detail"].get(streams)) continue;
      for (auto s : streams) {
        std::string_view name, leader;
        if (s["name"].get(name) || name != stream || s["cluster"]["leader"].get(leader)) continue;
        for (size_t i = 0; i < servers.size(); ++i)
          if (leader == "n" + std::to_string(i)) return i;
      }
    }
    FAIL("no leader of stream " << stream << " in /jsz");
    return 0;
  }
};

inline std::string node_config(const std::string& nats_urls, const std::string& node) {
  return "cluster_nats = " + nats_urls + "\ncluster_node = " + node + "\n";
}

inline std::string function_body(const std::string& script, const std::string& fields = "") {
  return R"({"image":"busybox:1","min_warm":0,"max_concurrency":4,"cmd":["/bin/sh","-c",)" +
         server::json_string(script) + "]" + (fields.empty() ? "" : "," + fields) + "}";
}

inline std::string field(const std::string& json, const std::string& name) {
  std::smatch m;
  std::regex re("\"" + name + R"re(":("([^"]*)"|[0-9a-z]+))re");
  if (!std::regex_search(json, m, re)) return "";
  return m[2].matched ? std::string(m[2]) : std::string(m[1]);
}

// Daemons of one cluster, started in order, named nodea, nodeb, ...
struct Nodes {
  std::vector<std::unique_ptr<Daemon>> nodes;
  Nodes(int n, const std::string& nats_urls, const std::string& extra_config = "") {
    for (int i = 0; i < n; ++i) {
      nodes.push_back(std::make_unique<Daemon>(node_config(nats_urls, "node" + std::string(1, char('a' + i))) +
                                               extra_config));
      nodes.back()->start();
    }
  }
  Daemon& operator[](size_t i) { return *nodes[i]; }
  // Waits until every node has the function (the registry watch is asynchronous).
  void wait_everywhere(const std::string& name) {
    for (auto& d : nodes)
      wait_until([&] { return d->curl("GET", "/v1/functions/" + name).status == 200; }, "the function on every node");
  }
  // Uploads an image archive to every node (each node has its own store) as REPO:TAG.
  void upload_image_everywhere(const std::string& repo, const std::string& tag, const std::filesystem::path& archive) {
    for (auto& d : nodes) {
      auto up = d->curl("POST", "/v1/images?name=" + repo + "%3A" + tag, std::nullopt,
                        {"--data-binary", "@" + archive.string()});
      REQUIRE_MESSAGE(up.status == 201, up.body);
    }
  }
  std::string enqueue(size_t node, const std::string& fn, const std::string& event, const std::string& query = "") {
    auto r = nodes[node]->curl("POST", "/v1/functions/" + fn + "/invoke?mode=async" + query, event);
    REQUIRE_MESSAGE(r.status == 202, r.body);
    return field(r.body, "id");
  }
  // Runs of the function the given nodes finished, any outcome (their fnexec_invocations_total).
  int runs(const std::string& fn, const std::vector<size_t>& which) {
    double n = 0;
    for (auto i : which)
      for (const auto& [sample, value] : parse_metrics(nodes[i]->curl("GET", "/metrics").body))
        if (sample.starts_with("fnexec_invocations_total{function=\"" + fn + "\",")) n += value;
    return static_cast<int>(n);
  }
  // The record as the node shows it, once it is done.
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

// The server comes before the nodes (a base constructed first).
struct OneNatsServer {
  NatsServer nats;
};

// Three nodes (by default) behind one nats-server.
struct Cluster : OneNatsServer, Nodes {
  explicit Cluster(int n = 3, const std::string& extra_config = "") : Nodes(n, nats.url(), extra_config) {}
};

}  // namespace fnexec::test::serve
