// fnexec invoke NAME [--async] < event: stdout is the result, the exit code is the function's.
#include <fmt/format.h>
#include <simdjson.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>

#include "cli/commands.h"
#include "server/client.h"

namespace fnexec::cli {

namespace {

struct InvokeFlags {
  std::string name;
  bool async = false;
  bool verbose = false;
};

Result<std::string> read_stdin() {
  std::string data;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("read event from stdin");
    if (n == 0) return data;
    data.append(buf, static_cast<size_t>(n));
  }
}

int do_invoke(const EndpointOptions& e, const InvokeFlags& f) {
  std::string event;
  if (!::isatty(STDIN_FILENO)) {
    auto in = read_stdin();
    if (!in) return report(in.error());
    event = std::move(*in);
  }
  auto client = connect(e);
  if (!client) return report(client.error());
  auto target = fmt::format("/v1/functions/{}/invoke{}", f.name, f.async ? "?mode=async" : "");
  auto r = client->request("POST", target, event, "application/octet-stream");
  if (!r) return report(r.error());
  if (f.verbose)
    for (const char* h : {"fnexec-invocation-id", "fnexec-start", "fnexec-duration-us", "fnexec-billed-ms",
                          "fnexec-cpu-us", "fnexec-memory-peak-bytes", "fnexec-exit-code", "fnexec-lifecycle",
                          "fnexec-sandbox-id", "fnexec-sandbox-events", "fnexec-init-us", "fnexec-sandbox-retired",
                          "fnexec-error-type", "fnexec-function-error"})
      if (auto v = r->header(h); !v.empty()) std::fprintf(stderr, "%s: %s\n", h, v.c_str());
  if (f.async) {
    if (r->status != 202) return report(http_error(*r, "invoke " + f.name));
    std::printf("%s\n", r->header("fnexec-invocation-id").c_str());
    return 0;
  }
  if (r->status == 200) {
    std::fwrite(r->body.data(), 1, r->body.size(), stdout);
    // A fresh/reuse function answered with an ERROR frame: the body is its error JSON.
    if (!r->header("fnexec-function-error").empty()) {
      std::fprintf(stderr, "fnexec: function %s returned an error (%s)\n", f.name.c_str(),
                   r->header("fnexec-error-type").c_str());
      return 1;
    }
    return 0;
  }
  // 502/504 carry the function's exit and its stderr tail: print them like `fnexec run` would.
  simdjson::dom::parser parser;
  simdjson::padded_string padded(r->body);
  simdjson::dom::element doc;
  int64_t exit_code = 0;
  std::string_view tail;
  if ((r->status == 502 || r->status == 504) && !parser.parse(padded).get(doc) &&
      !doc["exit_code"].get(exit_code)) {
    server::read_member(doc["stderr_tail"], tail);
    std::fwrite(tail.data(), 1, tail.size(), stderr);
    std::fprintf(stderr, "fnexec: %s\n", server::error_message(*r).c_str());
    if (r->status == 504) return kExitTimeout;
    return exit_code != 0 ? static_cast<int>(exit_code) : kExitFnexecError;
  }
  return report(http_error(*r, "invoke " + f.name));
}

}  // namespace

void add_invoke_command(CLI::App& app, Globals& g) {
  auto f = std::make_shared<InvokeFlags>();
  auto e = std::make_shared<EndpointOptions>();
  auto* sub = app.add_subcommand("invoke", "invoke a function of the daemon with stdin as the event");
  sub->add_option("name", f->name, "function name")->required();
  sub->add_flag("--async", f->async, "queue it and print the invocation id");
  sub->add_flag("-v,--verbose", f->verbose, "print the Fnexec-* reply headers to stderr");
  add_endpoint_options(sub, *e);
  sub->callback([f, e, &g] { g.exit_code = do_invoke(*e, *f); });
}

}  // namespace fnexec::cli
