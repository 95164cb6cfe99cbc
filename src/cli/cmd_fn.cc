// fnexec fn create|ls|show|rm: the function registry of the daemon, over its API.
#include <fmt/format.h>
#include <simdjson.h>

#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <memory>

#include "cgroup/cgroup.h"
#include "cli/commands.h"
#include "server/client.h"
#include "server/config.h"
#include "server/json.h"
#include "util/fs.h"

namespace fnexec::cli {

void add_endpoint_options(CLI::App* sub, EndpointOptions& o) {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v ? v : "");
  };
  o.socket = env("FNEXEC_SOCKET");
  if (o.socket.empty()) o.socket = server::kDefaultSocket;
  o.host = env("FNEXEC_HOST");
  o.token_file = env("FNEXEC_TOKEN_FILE");
  sub->add_option("--socket", o.socket, "daemon socket (env FNEXEC_SOCKET)")->capture_default_str();
  sub->add_option("--host", o.host, "daemon over TCP: http://HOST:PORT (env FNEXEC_HOST)");
  sub->add_option("--token-file", o.token_file, "bearer token for --host (env FNEXEC_TOKEN_FILE)");
}

Result<server::Client> connect(const EndpointOptions& o) {
  server::Endpoint ep;
  ep.socket = o.socket;
  ep.url = o.host;
  if (!o.token_file.empty()) ep.token = FNEXEC_TRY(server::read_token_file(o.token_file));
  return server::Client::connect(ep);
}

// "HTTP 404: no function named x" as an Error, for report().
Error http_error(const server::HttpResponse& r, std::string what) {
  return Error{r.status == 404 ? ErrorKind::not_found : ErrorKind::invalid,
               0,
               std::move(what),
               {},
               fmt::format("{} (HTTP {})", server::error_message(r), r.status)};
}

std::string local_time(int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

namespace {

struct CreateFlags {
  std::string name, image, memory, cpus, timeout, idle_timeout, max_output, entrypoint, workdir, user;
  std::string lifecycle, init_timeout, seccomp_profile, protocol, handler;
  bool read_only = false;
  std::vector<std::string> cap_add, cap_drop;
  std::optional<uint64_t> nofile;
  std::optional<uint32_t> max_events_per_sandbox;
  std::optional<uint64_t> pids_limit;
  std::optional<uint32_t> min_warm, max_concurrency;
  std::vector<std::string> env, cmd;
  // Network, as `fnexec run`'s flags (the daemon checks them).
  std::string network, egress_default;
  std::vector<std::string> dns, add_hosts, egress_allow, egress_deny;
  // Async delivery: --retries, --retry-backoff INITIAL[:MULTIPLIER[:MAX]].
  std::optional<uint32_t> retries;
  std::string retry_backoff;
  std::optional<bool> userns;
  std::vector<std::string> volumes;
  std::vector<std::string> devices;
};

// "500ms:2:30s" → {"initial_ms":500,"multiplier":2,"max_ms":30000}; parts left out keep the daemon's defaults.
Result<> write_retry_backoff(server::JsonWriter& w, const std::string& text) {
  auto first = text.find(':');
  auto second = first == std::string::npos ? first : text.find(':', first + 1);
  w.key("retry_backoff").begin_object();
  w.field("initial_ms", static_cast<uint64_t>(FNEXEC_TRY(server::parse_millis(text.substr(0, first))).count()));
  if (first != std::string::npos) {
    auto m = text.substr(first + 1, second == std::string::npos ? std::string::npos : second - first - 1);
    char* end = nullptr;
    double multiplier = std::strtod(m.c_str(), &end);
    if (m.empty() || end != m.c_str() + m.size())
      return fail(ErrorKind::invalid, "use --retry-backoff", text,
                  "expected INITIAL[:MULTIPLIER[:MAX]], e.g. 1s:2:60s");
    w.field("multiplier", multiplier);
  }
  if (second != std::string::npos)
    w.field("max_ms", static_cast<uint64_t>(FNEXEC_TRY(server::parse_millis(text.substr(second + 1))).count()));
  w.end_object();
  return {};
}

Result<std::string> create_body(const CreateFlags& f) {
  server::JsonWriter w;
  w.begin_object().field("image", f.image);
  if (!f.entrypoint.empty()) w.key("entrypoint").begin_array().value(f.entrypoint).end_array();
  if (!f.cmd.empty()) w.field("cmd", f.cmd);
  if (!f.env.empty()) w.field("env", f.env);
  if (!f.workdir.empty()) w.field("workdir", f.workdir);
  if (!f.user.empty()) w.field("user", f.user);
  if (f.read_only) w.field("read_only_rootfs", true);
  if (!f.cap_add.empty()) w.field("cap_add", f.cap_add);
  if (!f.cap_drop.empty()) w.field("cap_drop", f.cap_drop);
  if (f.nofile) w.field("nofile", *f.nofile);
  if (f.userns) w.field("userns", *f.userns);
  if (!f.volumes.empty()) w.field("volumes", f.volumes);
  if (!f.devices.empty()) w.field("devices", f.devices);
  if (f.seccomp_profile.find('/') != std::string::npos || f.seccomp_profile.ends_with(".json")) {
    // A file is sent inline: the daemon may not see the client's files.
    auto text = FNEXEC_TRY(fs::read_file(f.seccomp_profile));
    auto start = text.find_first_not_of(" \t\r\n");
    if (start == std::string::npos || text[start] != '{')
      return fail(ErrorKind::invalid, "use --seccomp-profile", f.seccomp_profile, "expected a JSON object");
    w.key("seccomp_profile").raw(text.substr(start));
  } else if (!f.seccomp_profile.empty()) {
    w.field("seccomp_profile", f.seccomp_profile);
  }
  if (!f.memory.empty()) w.field("memory_mb", FNEXEC_TRY(cgroup::parse_size(f.memory)) >> 20);
  if (!f.cpus.empty()) w.field("cpus", FNEXEC_TRY(cgroup::parse_cpus(f.cpus)));
  if (f.pids_limit) w.field("pids_limit", *f.pids_limit);
  if (!f.timeout.empty())
    w.field("timeout_ms", static_cast<uint64_t>(FNEXEC_TRY(server::parse_millis(f.timeout)).count()));
  if (!f.idle_timeout.empty())
    w.field("idle_timeout_s",
            static_cast<uint64_t>(FNEXEC_TRY(server::parse_millis(f.idle_timeout)).count() / 1000));
  if (f.min_warm) w.field("min_warm", *f.min_warm);
  if (f.max_concurrency) w.field("max_concurrency", *f.max_concurrency);
  if (!f.max_output.empty()) w.field("max_output_bytes", FNEXEC_TRY(cgroup::parse_size(f.max_output)));
  // The daemon checks the values (and names the field); the CLI only converts units.
  if (!f.lifecycle.empty()) w.field("lifecycle", f.lifecycle);
  if (f.max_events_per_sandbox) w.field("max_events_per_sandbox", *f.max_events_per_sandbox);
  if (!f.init_timeout.empty())
    w.field("init_timeout_ms", static_cast<uint64_t>(FNEXEC_TRY(server::parse_millis(f.init_timeout)).count()));
  if (!f.protocol.empty()) w.field("protocol", f.protocol);
  if (!f.handler.empty()) w.field("handler", f.handler);
  if (!f.network.empty()) w.field("network", f.network);
  if (!f.dns.empty()) w.field("dns", f.dns);
  if (!f.add_hosts.empty()) w.field("add_hosts", f.add_hosts);
  if (!f.egress_allow.empty()) w.field("egress_allow", f.egress_allow);
  if (!f.egress_deny.empty()) w.field("egress_deny", f.egress_deny);
  if (!f.egress_default.empty()) w.field("egress_default", f.egress_default);
  if (f.retries) w.field("retries", *f.retries);
  if (!f.retry_backoff.empty()) FNEXEC_TRY(write_retry_backoff(w, f.retry_backoff));
  w.end_object();
  return w.take();
}

int do_create(const EndpointOptions& e, const CreateFlags& f) {
  auto body = create_body(f);
  if (!body) return report(body.error());
  auto client = connect(e);
  if (!client) return report(client.error());
  auto r = client->request("PUT", "/v1/functions/" + f.name, *body);
  if (!r) return report(r.error());
  if (r->status != 200 && r->status != 201) return report(http_error(*r, "create function " + f.name));
  std::printf("%s\n", f.name.c_str());
  return 0;
}

int do_ls(const EndpointOptions& e, bool quiet) {
  auto client = connect(e);
  if (!client) return report(client.error());
  auto r = client->request("GET", "/v1/functions");
  if (!r) return report(r.error());
  if (r->status != 200) return report(http_error(*r, "list functions"));
  simdjson::dom::parser parser;
  simdjson::padded_string padded(r->body);
  simdjson::dom::array list;
  if (parser.parse(padded)["functions"].get(list))
    return report(fail(ErrorKind::corrupt, "read function list", {}, "unexpected reply").error());
  if (!quiet)
    std::printf("%-24s %-28s %-9s %8s %5s %8s %8s %6s\n", "NAME", "IMAGE", "LIFECYCLE", "MEMORY", "CPUS",
                "TIMEOUT", "WARM", "MAX");
  for (auto f : list) {
    std::string_view name, image, lifecycle = "oneshot";
    uint64_t mem = 0, timeout = 0, min_warm = 0, max_conc = 0, warm = 0;
    double cpus = 0;
    server::read_member(f["name"], name);
    if (quiet) {
      std::printf("%.*s\n", static_cast<int>(name.size()), name.data());
      continue;
    }
    server::read_member(f["image"], image);
    server::read_member(f["lifecycle"], lifecycle);
    server::read_member(f["memory_mb"], mem);
    server::read_member(f["cpus"], cpus);
    server::read_member(f["timeout_ms"], timeout);
    server::read_member(f["min_warm"], min_warm);
    server::read_member(f["max_concurrency"], max_conc);
    server::read_member(f["pool"]["warm"], warm);
    std::printf("%-24.*s %-28.*s %-9.*s %6luMi %5g %7.1fs %3lu/%-4lu %6lu\n", static_cast<int>(name.size()),
                name.data(), static_cast<int>(image.size()), image.data(), static_cast<int>(lifecycle.size()),
                lifecycle.data(), mem, cpus,
                static_cast<double>(timeout) / 1000, warm, min_warm, max_conc);
  }
  return 0;
}

int do_simple(const EndpointOptions& e, const char* method, const std::string& name, bool print_body) {
  auto client = connect(e);
  if (!client) return report(client.error());
  auto r = client->request(method, "/v1/functions/" + name);
  if (!r) return report(r.error());
  if (r->status >= 300)
    return report(http_error(
        *r, std::string(method == std::string_view("GET") ? "show" : "delete") + " function " + name));
  if (print_body) std::printf("%s\n", r->body.c_str());
  return 0;
}

}  // namespace

void add_fn_commands(CLI::App& app, Globals& g) {
  auto* fn = app.add_subcommand("fn", "manage the daemon's functions");
  fn->require_subcommand(1);

  auto f = std::make_shared<CreateFlags>();
  auto ce = std::make_shared<EndpointOptions>();
  auto* create = fn->add_subcommand(
      "create", "register or update a function: fnexec fn create NAME --image REF [-- CMD...]");
  create->add_option("name", f->name, "function name")->required();
  create->add_option("--image", f->image, "image reference (name:tag or sha256:...)")->required();
  create->add_option("--memory", f->memory, "memory limit, e.g. 256m (default 256m)");
  create->add_option("--cpus", f->cpus, "CPU quota, e.g. 0.5 (default 1)");
  create->add_option("--pids-limit", f->pids_limit, "maximum number of processes (default 256)");
  create->add_option("--timeout", f->timeout, "per invocation, e.g. 30s, 500ms (default 30s)");
  create->add_option("--idle-timeout", f->idle_timeout,
                     "retire unused sandbox (reuse: idle processes) after this long, e.g. 10m");
  create->add_option("--lifecycle", f->lifecycle,
                     "oneshot (a process per event), fresh (pre-initialized, one event) or reuse (one "
                     "process answers many events); man 7 fnexec-protocol (default oneshot)");
  create->add_option("--max-events-per-sandbox", f->max_events_per_sandbox,
                     "reuse: events a process answers before it is replaced (default 0: no limit)");
  create->add_option("--init-timeout", f->init_timeout, "fresh/reuse: READY must come within it (default 10s)");
  create->add_option("--protocol", f->protocol,
                     "fnexec (fnexec/1 frames on stdio) or lambda (the Lambda Runtime API on 127.0.0.1:9001 "
                     "in the sandbox; lifecycle reuse unless given); man 7 fnexec-protocol (default fnexec)");
  create->add_option("--handler", f->handler,
                     "lambda: _HANDLER, and the CMD of an image with an entrypoint (default: the CMD's first word)");
  create->add_option("--retries", f->retries,
                     "async: deliveries after a failed one before the event is dead-lettered (0-10, default 2)");
  create->add_option("--retry-backoff", f->retry_backoff,
                     "async: INITIAL[:MULTIPLIER[:MAX]] wait before a retry, e.g. 1s:2:60s (the default)");
  create->add_option("--min-warm", f->min_warm, "sandboxes kept parked (default 1)");
  create->add_option("--max-concurrency", f->max_concurrency, "invocations at once (default 16)");
  create->add_option("--max-output", f->max_output, "stdout cap, e.g. 6m");
  create->add_option("-e,--env", f->env, "KEY=VALUE added to the image's environment")->take_all();
  create->add_option("--entrypoint", f->entrypoint, "program to run instead of the image's entrypoint");
  create->add_option("-w,--workdir", f->workdir, "working directory inside the image");
  create->add_option("-u,--user", f->user, "UID[:GID] or NAME[:GROUP] from the image to run as");
  create->add_flag("--read-only", f->read_only, "mount the rootfs read-only (tmpfs on /tmp, /var/tmp, /run)");
  create->add_option("--cap-add", f->cap_add, "add a capability")->allow_extra_args(false);
  create->add_option("--cap-drop", f->cap_drop, "drop a capability (ALL for all)")->allow_extra_args(false);
  create->add_option("--seccomp-profile", f->seccomp_profile,
                     "default, unconfined, NAME (the daemon's seccomp_profile_dir/NAME.json) or a JSON file "
                     "sent inline");
  create->add_option("--nofile", f->nofile, "RLIMIT_NOFILE, soft and hard (default 1024)");
  create->add_option("--network", f->network,
                     "none: loopback only (default); bridge: a veth on the daemon's NATed bridge");
  create->add_option("--dns", f->dns, "bridge: a nameserver for the sandbox's /etc/resolv.conf")
      ->allow_extra_args(false);
  create->add_option("--add-host", f->add_hosts, "bridge: NAME:IP added to the sandbox's /etc/hosts")
      ->allow_extra_args(false);
  create->add_option("--egress-allow", f->egress_allow, "bridge: CIDR[:PORT] the sandbox may reach")
      ->allow_extra_args(false);
  create->add_option("--egress-deny", f->egress_deny, "bridge: CIDR[:PORT] the sandbox may not reach")
      ->allow_extra_args(false);
  create->add_option("--egress-default", f->egress_default,
                     "bridge: allow or deny what no rule names (default: fnexec.conf default_egress)");
  create->add_option("--userns", f->userns,
                     "true: root inside is the function's own unprivileged id range (the daemon's default); "
                     "false: host ids");
  create->add_option("-v,--volume", f->volumes,
                     "SRC:DST[:ro|:rw] host path below the daemon's volume_allow (read-only unless :rw)")
      ->allow_extra_args(false);
  create->add_option("--device", f->devices,
                     "HOST[:CONTAINER][:PERMS] a host device listed in the daemon's device_allow (podman's flag)")
      ->allow_extra_args(false);
  create->add_option("cmd", f->cmd, "arguments (after --), replacing the image's cmd");
  add_endpoint_options(create, *ce);
  create->callback([f, ce, &g] { g.exit_code = do_create(*ce, *f); });

  auto le = std::make_shared<EndpointOptions>();
  auto quiet = std::make_shared<bool>(false);
  auto* ls = fn->add_subcommand("ls", "list functions");
  ls->add_flag("-q,--quiet", *quiet, "names only");
  add_endpoint_options(ls, *le);
  ls->callback([le, quiet, &g] { g.exit_code = do_ls(*le, *quiet); });

  auto se = std::make_shared<EndpointOptions>();
  auto show_name = std::make_shared<std::string>();
  auto* show = fn->add_subcommand("show", "print a function's definition and pool state as JSON");
  show->add_option("name", *show_name, "function name")->required();
  add_endpoint_options(show, *se);
  show->callback([se, show_name, &g] { g.exit_code = do_simple(*se, "GET", *show_name, true); });

  auto re = std::make_shared<EndpointOptions>();
  auto rm_names = std::make_shared<std::vector<std::string>>();
  auto* rm = fn->add_subcommand("rm", "delete functions and drain their pools");
  rm->add_option("names", *rm_names, "function names")->required();
  add_endpoint_options(rm, *re);
  rm->callback([re, rm_names, &g] {
    for (const auto& n : *rm_names) {
      int rc = do_simple(*re, "DELETE", n, false);
      if (rc != 0) g.exit_code = rc;
    }
  });
}

}  // namespace fnexec::cli
