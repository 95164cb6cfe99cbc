// fnexec logs NAME [--follow]: the stderr tails the daemon kept for a function.
#include <fmt/format.h>
#include <simdjson.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>

#include "cli/commands.h"
#include "server/client.h"

namespace fnexec::cli {

namespace {

struct LogsFlags {
  std::string name;
  bool follow = false;
  uint64_t limit = 100;
};

// Prints entries and returns the cursor for the next request.
Result<int64_t> print_entries(const std::string& body, int64_t after) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(body);
  simdjson::dom::element doc;
  simdjson::dom::array entries;
  if (parser.parse(padded).get(doc) || doc["entries"].get(entries))
    return fail(ErrorKind::corrupt, "read logs", {}, "unexpected reply");
  for (auto entry : entries) {
    std::string_view text, id;
    server::read_member(entry["text"], text);
    server::read_member(entry["invocation_id"], id);
    std::fwrite(text.data(), 1, text.size(), stdout);
    if (!text.empty() && text.back() != '\n') std::fputc('\n', stdout);
  }
  int64_t next = after;
  server::read_member(doc["next"], next);
  std::fflush(stdout);
  return next;
}

int do_logs(const EndpointOptions& e, const LogsFlags& f) {
  auto client = connect(e);
  if (!client) return report(client.error());
  int64_t after = 0;
  uint64_t limit = f.limit;
  for (;;) {
    auto r =
        client->request("GET", fmt::format("/v1/functions/{}/logs?after={}&limit={}", f.name, after, limit));
    if (!r) return report(r.error());
    if (r->status != 200) return report(http_error(*r, "read logs of " + f.name));
    auto next = print_entries(r->body, after);
    if (!next) return report(next.error());
    after = *next;
    if (!f.follow) return 0;
    limit = 1000;  // following: everything new since the cursor
    // Polling keeps the API stateless; half a second is what `tail -f` users expect.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

}  // namespace

void add_logs_command(CLI::App& app, Globals& g) {
  auto f = std::make_shared<LogsFlags>();
  auto e = std::make_shared<EndpointOptions>();
  auto* sub = app.add_subcommand("logs", "print a function's logs (stderr of its invocations)");
  sub->add_option("name", f->name, "function name")->required();
  sub->add_flag("-f,--follow", f->follow, "keep printing new entries");
  sub->add_option("-n,--limit", f->limit, "newest entries to print first")->capture_default_str();
  add_endpoint_options(sub, *e);
  sub->callback([f, e, &g] { g.exit_code = do_logs(*e, *f); });
}

}  // namespace fnexec::cli
