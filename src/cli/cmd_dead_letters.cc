// fnexec dead-letters ls|show|replay|rm: async events whose every delivery failed (GET/POST/DELETE
// /v1/dead-letters), over the daemon's API.
#include <fmt/format.h>
#include <simdjson.h>

#include <cstdio>
#include <ctime>
#include <memory>

#include "cli/commands.h"
#include "server/client.h"
#include "server/json.h"

namespace fnexec::cli {

namespace {

struct DeadLetterFlags {
  std::string name;  // ls: only this function
  std::string id;    // show, replay, rm
  uint64_t limit = 50;
  uint64_t after = 0;
  bool json = false;
};

Result<server::HttpResponse> call(const EndpointOptions& e, const char* method, const std::string& target,
                                  const std::string& what) {
  auto client = FNEXEC_TRY(connect(e));
  auto r = FNEXEC_TRY(client.request(method, target));
  if (r.status >= 300) return std::unexpected(http_error(r, what));
  return r;
}

int do_ls(const EndpointOptions& e, const DeadLetterFlags& f) {
  auto target = fmt::format("/v1/dead-letters?limit={}&after={}{}", f.limit, f.after,
                            f.name.empty() ? "" : "&function=" + f.name);
  auto r = call(e, "GET", target, "list dead letters");
  if (!r) return report(r.error());
  if (f.json) {
    std::printf("%s\n", r->body.c_str());
    return 0;
  }
  simdjson::dom::parser parser;
  simdjson::padded_string padded(r->body);
  simdjson::dom::array list;
  if (parser.parse(padded)["dead_letters"].get(list))
    return report(fail(ErrorKind::corrupt, "read dead-letter list", {}, "unexpected reply").error());
  std::printf("%-32s %-20s %8s %-16s %-19s %-32s %s\n", "ID", "FUNCTION", "ATTEMPTS", "OUTCOME", "TIME",
              "REPLAYED_AS", "ERROR");
  for (auto d : list) {
    std::string_view id, fn, outcome, error, replayed = "-";
    uint64_t attempts = 0;
    int64_t time = 0;
    server::read_member(d["id"], id);
    server::read_member(d["function"], fn);
    server::read_member(d["attempts"], attempts);
    server::read_member(d["outcome"], outcome);
    server::read_member(d["error"], error);
    server::read_member(d["time_ms"], time);
    server::read_member(d["replayed_as"], replayed);
    auto s = [](std::string_view v) { return std::string(v); };
    std::printf("%-32s %-20s %8lu %-16s %-19s %-32s %s\n", s(id).c_str(), s(fn).c_str(), attempts,
                s(outcome).c_str(), local_time(time).c_str(), s(replayed).c_str(), s(error).c_str());
  }
  return 0;
}

}  // namespace

void add_dead_letters_command(CLI::App& app, Globals& g) {
  auto* dl = app.add_subcommand("dead-letters", "async events whose every delivery failed: list, show, replay, remove");
  dl->require_subcommand(1);

  auto f = std::make_shared<DeadLetterFlags>();
  auto le = std::make_shared<EndpointOptions>();
  auto* ls = dl->add_subcommand("ls", "list dead letters, oldest first");
  ls->add_option("name", f->name, "only this function");
  ls->add_option("-n,--limit", f->limit, "how many")->capture_default_str();
  ls->add_option("--after", f->after, "only entries after this seq (the reply's next, for paging)");
  ls->add_flag("--json", f->json, "print the API's JSON");
  add_endpoint_options(ls, *le);
  ls->callback([f, le, &g] { g.exit_code = do_ls(*le, *f); });

  // show/replay/rm ID: one request each; show and replay print the reply's JSON.
  struct One {
    const char* name;
    const char* help;
    const char* method;
    const char* suffix;
    const char* what;
  };
  for (auto one : {One{"show", "print one dead letter as JSON, with its event", "GET", "", "show dead letter"},
                   One{"replay", "queue the event again as a new invocation (prints its id)", "POST", "/replay",
                       "replay dead letter"},
                   One{"rm", "remove a dead letter", "DELETE", "", "remove dead letter"}}) {
    auto id = std::make_shared<std::string>();
    auto e = std::make_shared<EndpointOptions>();
    auto* sub = dl->add_subcommand(one.name, one.help);
    sub->add_option("id", *id, "dead letter id (the invocation id)")->required();
    add_endpoint_options(sub, *e);
    sub->callback([one, id, e, &g] {
      auto r = call(*e, one.method, "/v1/dead-letters/" + *id + one.suffix, fmt::format("{} {}", one.what, *id));
      if (!r) {
        g.exit_code = report(r.error());
        return;
      }
      if (one.suffix[0] != '\0') {  // replay: the new invocation's id, as `fnexec invoke --async` prints it
        simdjson::dom::parser parser;
        simdjson::padded_string padded(r->body);
        std::string_view new_id;
        simdjson::dom::element doc;
        if (!parser.parse(padded).get(doc) && server::read_member(doc["id"], new_id)) {
          std::printf("%.*s\n", static_cast<int>(new_id.size()), new_id.data());
          return;
        }
      }
      if (!r->body.empty()) std::printf("%s\n", r->body.c_str());
    });
  }
}

}  // namespace fnexec::cli
