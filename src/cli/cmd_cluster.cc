// fnexec cluster status: the nodes of the daemon's cluster (GET /v1/cluster, cluster_nats).
#include <fmt/format.h>
#include <simdjson.h>

#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "server/client.h"
#include "server/json.h"

namespace fnexec::cli {

namespace {

int do_status(const EndpointOptions& e, bool json) {
  auto client = connect(e);
  if (!client) return report(client.error());
  auto r = client->request("GET", "/v1/cluster");
  if (!r) return report(r.error());
  if (r->status != 200) return report(http_error(*r, "show the cluster"));
  if (json) {
    std::printf("%s\n", r->body.c_str());
    return 0;
  }
  simdjson::dom::parser parser;
  simdjson::padded_string padded(r->body);
  simdjson::dom::element doc;
  if (parser.parse(padded).get(doc))
    return report(fail(ErrorKind::corrupt, "read cluster status", {}, "unexpected reply").error());
  std::string_view self, url;
  uint64_t pending = 0;
  server::read_member(doc["node"], self);
  server::read_member(doc["nats_url"], url);
  bool have_pending = server::read_member(doc["async_pending"], pending);
  std::printf("this node: %s, NATS %s, async events waiting: %s\n", std::string(self).c_str(),
              std::string(url).c_str(), have_pending ? std::to_string(pending).c_str() : "-");
  std::printf("%-24s %9s %13s %9s %s\n", "NODE", "IN_FLIGHT", "MAX_IN_FLIGHT", "FUNCTIONS", "LAST_SEEN_MS_AGO");
  simdjson::dom::array nodes;
  if (doc["nodes"].get(nodes)) return 0;
  int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  for (auto n : nodes) {
    std::string_view name;
    int64_t time_ms = 0;
    uint64_t in_flight = 0, max_in_flight = 0;
    server::read_member(n["node"], name);
    server::read_member(n["time_ms"], time_ms);
    server::read_member(n["local"]["in_flight"], in_flight);
    server::read_member(n["local"]["max_in_flight"], max_in_flight);
    simdjson::dom::object functions;
    size_t nf = n["local"]["functions"].get(functions) ? 0 : functions.size();
    std::printf("%-24s %9lu %13lu %9zu %lld\n", std::string(name).c_str(), in_flight, max_in_flight, nf,
                static_cast<long long>(now - time_ms));
  }
  return 0;
}

}  // namespace

void add_cluster_command(CLI::App& app, Globals& g) {
  auto e = std::make_shared<EndpointOptions>();
  auto json = std::make_shared<bool>(false);
  auto* sub = app.add_subcommand("cluster", "the daemon's cluster (cluster_nats in fnexec.conf)");
  sub->require_subcommand(1);
  auto* status = sub->add_subcommand("status", "list the nodes that sent a heartbeat lately");
  status->add_flag("--json", *json, "print the API's JSON");
  add_endpoint_options(status, *e);
  status->callback([e, json, &g] { g.exit_code = do_status(*e, *json); });
}

}  // namespace fnexec::cli
