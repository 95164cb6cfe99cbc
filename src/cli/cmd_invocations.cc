// fnexec invocations [NAME] and fnexec invocations show ID: the daemon's invocation records.
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

struct InvocationsFlags {
  std::string name;
  std::string id;
  uint64_t limit = 20;
  bool json = false;
  bool output = false;
};

// --id ID --output: the async invocation's stdout, byte for byte (the API sends non-UTF-8 output as base64).
int print_output(const std::string& id, const std::string& body) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(body);
  simdjson::dom::element doc;
  std::string_view output, encoding = "utf-8", status;
  if (parser.parse(padded).get(doc))
    return report(fail(ErrorKind::corrupt, "read invocation", id, "unexpected reply").error());
  server::read_member(doc["status"], status);
  if (!server::read_member(doc["output"], output))
    return report(fail(ErrorKind::not_found, "show output of invocation", id,
                       status == "done" ? "it has no output kept (only async invocations keep theirs)"
                                        : fmt::format("it is {}; try again when it is done", status))
                      .error());
  server::read_member(doc["output_encoding"], encoding);
  std::string bytes(output);
  if (encoding == "base64") {
    auto decoded = server::base64_decode(output);
    if (!decoded)
      return report(fail(ErrorKind::corrupt, "decode output of invocation", id, "bad base64").error());
    bytes = std::move(*decoded);
  } else if (encoding != "utf-8") {
    return report(fail(ErrorKind::corrupt, "decode output of invocation", id,
                       fmt::format("unknown output_encoding {}", encoding))
                      .error());
  }
  std::fwrite(bytes.data(), 1, bytes.size(), stdout);
  return 0;
}

int do_list(const EndpointOptions& e, const InvocationsFlags& f) {
  auto client = connect(e);
  if (!client) return report(client.error());
  std::string target = f.id.empty() ? fmt::format("/v1/invocations?limit={}{}", f.limit,
                                                  f.name.empty() ? "" : "&function=" + f.name)
                                    : "/v1/invocations/" + f.id;
  auto r = client->request("GET", target);
  if (!r) return report(r.error());
  if (r->status != 200) return report(http_error(*r, "list invocations"));
  if (f.output) return print_output(f.id, r->body);
  if (f.json || !f.id.empty()) {
    std::printf("%s\n", r->body.c_str());
    return 0;
  }
  simdjson::dom::parser parser;
  simdjson::padded_string padded(r->body);
  simdjson::dom::array list;
  if (parser.parse(padded)["invocations"].get(list))
    return report(fail(ErrorKind::corrupt, "read invocation list", {}, "unexpected reply").error());
  std::printf("%-32s %-20s %-5s %-7s %-16s %-5s %-9s %-16s %6s %8s %-10s %10s %7s %s\n", "ID", "FUNCTION", "MODE",
              "STATUS", "OUTCOME", "START", "LIFECYCLE", "SANDBOX", "EVENTS", "INIT_MS", "RETIRED", "WALL_MS",
              "BILLED", "QUEUED");
  for (auto row : list) {
    std::string_view id, fn, mode, status, outcome = "-", start = "-", lifecycle = "-", sandbox = "-",
                                               retired = "-";
    uint64_t events = 0, init_us = 0;
    int64_t queued = 0;
    uint64_t wall = 0, billed = 0;
    server::read_member(row["id"], id);
    server::read_member(row["function"], fn);
    server::read_member(row["mode"], mode);
    server::read_member(row["status"], status);
    server::read_member(row["outcome"], outcome);
    server::read_member(row["start"], start);
    server::read_member(row["queued_ms"], queued);
    bool have_wall = server::read_member(row["wall_us"], wall);
    server::read_member(row["billed_ms"], billed);
    server::read_member(row["lifecycle"], lifecycle);
    server::read_member(row["sandbox_id"], sandbox);
    server::read_member(row["retired"], retired);
    bool have_events = server::read_member(row["sandbox_events"], events);
    bool have_init = server::read_member(row["init_us"], init_us);
    auto s = [](std::string_view v) { return std::string(v); };
    std::printf("%-32s %-20s %-5s %-7s %-16s %-5s %-9s %-16s %6s %8s %-10s %10s %7s %s\n", s(id).c_str(),
                s(fn).c_str(), s(mode).c_str(), s(status).c_str(), s(outcome).c_str(), s(start).c_str(),
                s(lifecycle).c_str(), s(sandbox).c_str(), have_events ? std::to_string(events).c_str() : "-",
                have_init ? fmt::format("{:.3f}", static_cast<double>(init_us) / 1000).c_str() : "-",
                s(retired).c_str(),
                have_wall ? fmt::format("{:.3f}", static_cast<double>(wall) / 1000).c_str() : "-",
                have_wall ? fmt::format("{}", billed).c_str() : "-", local_time(queued).c_str());
  }
  return 0;
}

}  // namespace

void add_invocations_command(CLI::App& app, Globals& g) {
  auto f = std::make_shared<InvocationsFlags>();
  auto e = std::make_shared<EndpointOptions>();
  auto* sub = app.add_subcommand("invocations", "list the daemon's invocation records, newest first");
  sub->add_option("name", f->name, "only this function");
  sub->add_option("--id", f->id, "show one invocation as JSON (with an async invocation's output)");
  sub->add_option("-n,--limit", f->limit, "how many")->capture_default_str();
  sub->add_flag("--json", f->json, "print the API's JSON");
  sub->add_flag("--output", f->output, "with --id: print only the async invocation's output, byte for byte")
      ->needs("--id");
  add_endpoint_options(sub, *e);
  sub->callback([f, e, &g] { g.exit_code = do_list(*e, *f); });
}

}  // namespace fnexec::cli
