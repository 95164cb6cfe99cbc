// fnexec run [OPTIONS] IMAGE [-- ARG...]: one function run in a fresh sandbox, podman-like options.
// --lifecycle fresh|reuse: the function speaks fnexec/1 and answers the event on stdin (fresh), or
// every line of --events (reuse), one after another in the same process. --protocol lambda: the
// function is a Lambda runtime, served the Lambda Runtime API inside its sandbox instead.
#include <linux/capability.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "cgroup/cgroup.h"
#include "cli/commands.h"
#include "image/store.h"
#include "invoke/invocation.h"
#include "invoke/session.h"
#include "net/attachment.h"
#include "lambda/runtime_api.h"
#include "lambda/session.h"
#include "pool/pool.h"
#include "registry/reference.h"
#include "sandbox/devices.h"
#include "sandbox/image_config.h"
#include "sandbox/launcher.h"
#include "sandbox/userns.h"
#include "util/fs.h"

namespace fnexec::cli {

namespace {

namespace stdfs = std::filesystem;

struct RunOptions {
  std::vector<std::string> env, env_files, tmpfs, volumes, cap_add, cap_drop, ulimits, security_opts;
  std::vector<std::string> devices;
  std::vector<std::string> dns, add_hosts, egress_allow, egress_deny;
  std::string egress_default = "allow", bridge = "fnexec0", bridge_subnet = "10.87.0.0/16";
  std::string bridge_subnet6 = net::kNoSubnet6;
  std::optional<std::string> workdir, user, entrypoint, timeout, report, memory, cpus, pids_limit, events;
  std::string lifecycle = "oneshot", init_timeout = "10s", protocol = "fnexec";
  std::optional<std::string> handler;
  std::string cgroups = "auto";
  std::string hostname, userns = "host", net = "none", seccomp = "default";
  bool read_only = false, init = true, no_init = false, rootfs = false;
  PullFlags pull;
};

// -e K=V sets; -e K copies our own value when we have one (Docker skips it otherwise).
void add_user_env(std::vector<std::string>& env, const std::string& item) {
  if (item.find('=') != std::string::npos) return sandbox::set_env(env, item);
  if (const char* v = std::getenv(item.c_str())) sandbox::set_env(env, item + "=" + v);
}

Result<image::ResolvedImage> resolve_image(const Globals& g, const std::string& ref, bool rootfs,
                                           const PullFlags& pull_flags) {
  if (rootfs) {
    // podman's --rootfs: IMAGE is an unpacked root filesystem, used as the only layer.
    std::error_code ec;
    auto dir = stdfs::canonical(ref, ec);
    if (ec || !stdfs::is_directory(dir))
      return fail(ErrorKind::not_found, "use rootfs", ref, "not a directory");
    image::ResolvedImage img;
    img.reference = ref;
    img.layers.push_back(dir);
    return img;
  }
  auto store = FNEXEC_TRY(image::Store::open(g.root));
  if (registry::has_docker_transport(ref)) {
    // As podman's default pull policy: pulled only when the store does not have it yet.
    auto parsed = FNEXEC_TRY(registry::parse_reference(ref));
    auto stored = store.resolve(parsed.digest.empty() ? parsed.store_name() : parsed.digest);
    if (stored || stored.error().kind != ErrorKind::not_found) return stored;
    return registry::pull(store, pull_flags.request(ref));
  }
  // A transport or a path is imported on the fly (the store keeps blobs and layers once, so
  // importing again is cheap); a name or digest is looked up, and imported only if it is not
  // stored but names something importable.
  bool looks_like_source = ref.find(':') != std::string::npos && ref.find('/') != std::string::npos;
  if ((looks_like_source || ref.starts_with("/") || ref.starts_with(".")) && image::is_importable_source(ref))
    return store.import(ref, {});
  auto resolved = store.resolve(ref);
  if (!resolved && resolved.error().kind == ErrorKind::not_found && image::is_importable_source(ref))
    return store.import(ref, {});
  return resolved;
}

// podman's --security-opt: seccomp=FILE|unconfined|default, and no-new-privileges (always on).
Result<> apply_security_opt(RunOptions& o, std::string_view opt) {
  auto eq = opt.find_first_of("=:");
  std::string_view key = opt.substr(0, eq), value = eq == std::string_view::npos ? "" : opt.substr(eq + 1);
  if (key == "seccomp") {
    if (value.empty())
      return fail(ErrorKind::invalid, "use --security-opt", std::string(opt),
                  "expected seccomp=FILE, seccomp=unconfined or seccomp=default");
    o.seccomp = value;
    return {};
  }
  if (key == "no-new-privileges") {
    if (value.empty() || value == "true") return {};
    return fail(ErrorKind::invalid, "use --security-opt", std::string(opt),
                "fnexec always sets no_new_privs; only no-new-privileges[=true] is accepted");
  }
  return fail(ErrorKind::invalid, "use --security-opt", std::string(opt),
              "fnexec takes seccomp=FILE|unconfined|default and no-new-privileges (no SELinux or AppArmor labels)");
}

Result<sandbox::SandboxSpec> build_spec(const Globals& g, RunOptions& o,
                                        const std::vector<std::string>& rest) {
  if (rest.empty())
    return fail(ErrorKind::invalid, "run", {}, "IMAGE is required: fnexec run [OPTIONS] IMAGE [-- ARG...]");
  std::vector<std::string> args(rest.begin() + 1, rest.end());
  if (!args.empty() && args.front() == "--") args.erase(args.begin());

  auto img = FNEXEC_TRY(resolve_image(g, rest.front(), o.rootfs, o.pull));
  sandbox::SandboxSpec spec;
  spec.image_name = img.reference.empty() ? rest.front() : img.reference;
  spec.layers = img.layers;

  spec.hostname = o.hostname.empty() ? "fnexec" : o.hostname;
  sandbox::ProcessOverrides overrides;
  // --entrypoint "" clears the image's Entrypoint (and, as any --entrypoint, its Cmd).
  if (o.entrypoint)
    overrides.entrypoint =
        o.entrypoint->empty() ? std::vector<std::string>{} : std::vector<std::string>{*o.entrypoint};
  if (!args.empty()) overrides.cmd = args;
  for (const auto& file : o.env_files) {
    auto text = fs::read_file(file);
    if (!text) return std::unexpected(text.error().context("read --env-file"));
    size_t pos = 0;
    while (pos < text->size()) {
      size_t nl = text->find('\n', pos);
      std::string line = text->substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      pos = nl == std::string::npos ? text->size() : nl + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line[0] == '#') continue;
      add_user_env(overrides.env, line);
    }
  }
  for (const auto& e : o.env) add_user_env(overrides.env, e);
  overrides.workdir = o.workdir;
  overrides.user = o.user;
  sandbox::PrivilegeSpec ps;
  FNEXEC_TRY(sandbox::apply_image_config(img, overrides, spec, ps));

  ps.cap_add = o.cap_add;
  ps.cap_drop = o.cap_drop;
  ps.ulimits = o.ulimits;
  for (const auto& opt : o.security_opts) FNEXEC_TRY(apply_security_opt(o, opt));
  if (o.seccomp == "default")
    ps.seccomp = sandbox::SeccompMode::default_profile;
  else if (o.seccomp == "unconfined")
    ps.seccomp = sandbox::SeccompMode::unconfined;
  else {
    ps.seccomp = sandbox::SeccompMode::file;
    ps.seccomp_file = o.seccomp;
  }
  spec.privileges = FNEXEC_TRY(sandbox::prepare_privileges(ps));

  spec.read_only = o.read_only;
  spec.init = !o.no_init;
  for (const auto& t : o.tmpfs) {
    auto c = t.find(':');
    sandbox::TmpfsMount m{t.substr(0, c), {}};
    if (c != std::string::npos) {
      std::string opts = t.substr(c + 1);
      // A bare size ("64m") is the common case; anything else is tmpfs options as podman takes them.
      bool bare = !opts.empty() && opts.find_first_of("=,") == std::string::npos;
      m.options = bare ? "mode=1777,size=" + opts : opts;
    }
    spec.tmpfs.push_back(std::move(m));
  }
  for (const auto& v : o.volumes) {
    auto a = v.find(':');
    if (a == std::string::npos)
      return fail(ErrorKind::invalid, "parse --volume", v, "expected HOSTDIR:DIR[:ro]");
    auto b = v.find(':', a + 1);
    sandbox::Volume vol{v.substr(0, a),
                        v.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1)};
    if (b != std::string::npos) {
      std::string mode = v.substr(b + 1);
      if (mode == "ro")
        vol.read_only = true;
      else if (mode != "rw")
        return fail(ErrorKind::invalid, "parse --volume", v, "mode must be ro or rw");
    }
    if (!vol.source.is_absolute())
      return fail(ErrorKind::invalid, "use volume source", vol.source.string(),
                  "must be an absolute host path");
    spec.volumes.push_back(std::move(vol));
  }
  for (const auto& d : o.devices) {
    auto node = FNEXEC_TRY(sandbox::parse_device(d, "--device"));
    FNEXEC_TRY(sandbox::read_host_device(node));
    spec.devices.push_back(std::move(node));
  }
  if (o.userns == "auto") {
    spec.userns = sandbox::UserNamespace::automatic;
    spec.id_range = FNEXEC_TRY(sandbox::default_id_range());
  } else if (o.userns != "host") {
    return fail(ErrorKind::invalid, "use --userns", o.userns, "expected host or auto");
  }
  if (o.net != "none" && o.net != "bridge")
    return fail(ErrorKind::invalid, "use --network", o.net,
                "expected none (a private network namespace with lo) or bridge (a veth on a NATed bridge)");
  spec.network = sandbox::Network::loopback;
  spec.mount_dir = stdfs::path(g.root) / "mnt";
  return spec;
}

// --network bridge: the sandbox's lease, /etc files and (after launch) veth and egress chain.
Result<std::optional<net::Attachment>> make_network(const RunOptions& o, sandbox::SandboxSpec& spec) {
  bool has_net_options = !o.dns.empty() || !o.add_hosts.empty() || !o.egress_allow.empty() ||
                         !o.egress_deny.empty() || o.egress_default != "allow";
  if (o.net != "bridge") {
    if (has_net_options)
      return fail(ErrorKind::invalid, "use --dns, --add-host or --egress-*", {}, "they need --network bridge");
    return std::optional<net::Attachment>{};
  }
  net::BridgeConfig config;
  config.bridge = o.bridge;
  config.subnet = FNEXEC_TRY(net::parse_ipv4_net(o.bridge_subnet));
  config.subnet6 = FNEXEC_TRY(net::parse_bridge_subnet6(o.bridge_subnet6));
  for (const auto& d : o.dns) config.dns.push_back(FNEXEC_TRY(net::parse_ip_text(d)));
  for (const auto& h : o.add_hosts) config.extra_hosts.push_back(FNEXEC_TRY(net::parse_host_entry(h)));
  for (const auto& r : o.egress_allow) config.egress.allow.push_back(FNEXEC_TRY(net::parse_egress_rule(r)));
  for (const auto& r : o.egress_deny) config.egress.deny.push_back(FNEXEC_TRY(net::parse_egress_rule(r)));
  config.egress.fallback = FNEXEC_TRY(net::parse_egress_default(o.egress_default));
  auto attachment = FNEXEC_TRY(net::Attachment::prepare(config, spec.hostname));
  for (auto& v : attachment.volumes()) spec.volumes.push_back(std::move(v));
  return std::optional<net::Attachment>(std::move(attachment));
}

// The traffic of a bridge sandbox into its record; a failed read is reported, not fatal.
// Connects the sandbox to its bridge. A sandbox whose setup failed (an image the init refused) exits
// meanwhile: setns and its /proc then answer ESRCH or ENOENT, and the init's own report, read by
// reap() once PID 1 is gone, is the error that names the cause.
Result<> connect_network(net::Attachment& network, sandbox::Sandbox& sb) {
  auto up = network.connect(sb.pid(), sb.pidfd());
  if (up || (up.error().err != ESRCH && up.error().err != ENOENT)) return up;
  pollfd exited{sb.pidfd(), POLLIN, 0};
  if (::poll(&exited, 1, 1000) != 1) return up;  // still running: the connect's error stands
  auto exit = sb.reap();
  if (!exit) return std::unexpected(exit.error());
  if (exit->setup_error) return std::unexpected(*exit->setup_error);
  return up;
}

void record_traffic(const RunOptions& o, std::optional<net::Attachment>& network, invoke::InvocationRecord& rec) {
  if (!network || !o.report) return;  // two nftables round trips only when someone reads them
  auto c = network->counters();
  if (!c) {
    report(c.error());
    return;
  }
  rec.network = invoke::InvocationRecord::Traffic{c->bytes_out, c->packets_out, c->bytes_in, c->packets_in};
}

// The sandbox's cgroup: limits and accounting. nullptr with --cgroups=disabled.
Result<std::unique_ptr<cgroup::SandboxCgroup>> make_cgroup(const RunOptions& o, const sandbox::SandboxSpec& spec,
                                                          cgroup::Mode* mode) {
  cgroup::Limits limits;
  for (const auto& d : spec.devices) limits.devices.push_back(sandbox::device_rule(d));
  if (o.memory) limits.memory_bytes = FNEXEC_TRY(cgroup::parse_size(*o.memory));
  if (o.cpus) limits.cpus = FNEXEC_TRY(cgroup::parse_cpus(*o.cpus));
  if (o.pids_limit) {
    const std::string& text = *o.pids_limit;
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc{} || end != text.data() + text.size() || n == 0)
      return fail(ErrorKind::invalid, "use --pids-limit", text, "expected a positive number");
    limits.pids = n;
  }
  // auto: a cgroup only when limits or the report need one; creating and removing a v1 sandbox
  // cgroup (five hierarchies) costs about as much as the rest of the run.
  // A function that could make device nodes (MKNOD, or SYS_ADMIN's mounts) or is given one needs the
  // kernel's device policy, which lives in the cgroup.
  constexpr uint64_t kDeviceCaps = (1ULL << CAP_MKNOD) | (1ULL << CAP_SYS_ADMIN);
  bool device_policy = !spec.devices.empty() || (spec.privileges.bounding & kDeviceCaps) != 0;
  bool wanted = limits.memory_bytes || limits.cpus || limits.pids || o.report || device_policy;
  if (o.cgroups == "auto" && !wanted) return std::unique_ptr<cgroup::SandboxCgroup>{};
  if (o.cgroups != "auto" && o.cgroups != "enabled" && o.cgroups != "disabled")
    return fail(ErrorKind::invalid, "use --cgroups=" + o.cgroups, {}, "expected auto, enabled or disabled");
  auto options = FNEXEC_TRY(cgroup::options_from_flag(o.cgroups == "disabled" ? "disabled" : "auto"));
  auto hierarchy = FNEXEC_TRY(cgroup::Hierarchy::detect(options));
  *mode = hierarchy->mode();
  if (*mode == cgroup::Mode::disabled) {
    if (limits.memory_bytes || limits.cpus || limits.pids)
      return fail(ErrorKind::invalid, "apply --memory, --cpus or --pids-limit", {},
                  "they need --cgroups=auto");
    return std::unique_ptr<cgroup::SandboxCgroup>{};
  }
  static unsigned counter = 0;
  std::string id = "run-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  return hierarchy->create(id, limits);
}

// The record of one event of a fresh/reuse run: the invocation record plus the lifecycle's fields.
std::string framed_record_json(const invoke::EventOutcome& e, pool::Lifecycle lifecycle, uint64_t events,
                               std::optional<uint64_t> init_us) {
  std::string j = invoke::to_json(e.record);
  j.pop_back();
  j += ",\"lifecycle\":\"" + std::string(pool::to_string(lifecycle)) + "\"";
  j += ",\"sandbox_events\":" + std::to_string(events);
  j += ",\"init_us\":" + (init_us ? std::to_string(*init_us) : std::string("null"));
  j += ",\"error_type\":\"" + e.error_type + "\",\"retired\":\"" + e.retired + "\"}";
  return j;
}

// fresh: the one event is stdin, its result goes to stdout byte for byte. reuse: each line of
// --events (- for stdin; without it, stdin is one event) is one event, each result one line.
// What a Lambda runtime is told about the function `fnexec run` plays: named after its image.
lambda::FunctionFacts run_lambda_facts(const RunOptions& o, const sandbox::SandboxSpec& spec) {
  lambda::FunctionFacts facts;
  for (char ch : spec.image_name) facts.name += std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' ? ch : '-';
  facts.handler = o.handler ? *o.handler : lambda::default_handler({}, spec.argv);
  facts.task_root = spec.cwd == "/" ? "/var/task" : spec.cwd;
  facts.memory_mb = 10240;
  if (o.memory)
    if (auto bytes = cgroup::parse_size(*o.memory)) facts.memory_mb = *bytes >> 20;
  return facts;
}

// go, and the session that drives the function's init and events.
Result<std::unique_ptr<invoke::EventSession>> start_session(sandbox::Sandbox& sb, cgroup::SandboxCgroup* cg,
                                                           pool::Protocol protocol, const lambda::FunctionFacts& facts) {
  if (protocol == pool::Protocol::lambda) {
    // Listening before the runtime starts: its client gives up connecting after about a second.
    auto listener = FNEXEC_TRY(lambda::listen_in_sandbox(sb.pidfd()));
    FNEXEC_TRY(sb.go());
    return lambda::RuntimeApiSession::attach(&sb, cg, {}, std::move(listener), facts);
  }
  FNEXEC_TRY(sb.go());
  auto framed = FNEXEC_TRY(invoke::FramedSession::attach(&sb, cg, {}));
  return std::unique_ptr<invoke::EventSession>(std::make_unique<invoke::FramedSession>(std::move(framed)));
}

int run_framed(RunOptions& o, sandbox::SandboxSpec& spec, std::optional<net::Attachment>& network,
               pool::Lifecycle lifecycle, pool::Protocol protocol) {
  if (lifecycle == pool::Lifecycle::fresh && o.events)
    return report(Error{ErrorKind::invalid, 0, "use --events", {}, "fresh answers one event (stdin); use --lifecycle reuse"});
  auto init_timeout = invoke::parse_duration(o.init_timeout);
  if (!init_timeout) return report(init_timeout.error());
  // Without --timeout an event has no deadline worth the name: a year.
  std::chrono::nanoseconds timeout = std::chrono::hours(24 * 365);
  if (o.timeout) {
    auto t = invoke::parse_duration(*o.timeout);
    if (!t) return report(t.error());
    timeout = *t;
  }
  std::unique_ptr<std::ifstream> file;
  std::istream* events = nullptr;
  if (o.events && *o.events != "-") {
    file = std::make_unique<std::ifstream>(*o.events, std::ios::binary);
    if (!*file) return report(Error{ErrorKind::not_found, errno, "open --events", *o.events, {}});
    events = file.get();
  } else if (o.events) {
    events = &std::cin;
  }
  spec.stdio = sandbox::Stdio::pipes;
  lambda::FunctionFacts facts;
  if (protocol == pool::Protocol::lambda) {
    if (spec.network != sandbox::Network::loopback)
      return report(Error{ErrorKind::invalid, 0, "use --protocol lambda", {},
                          "its Runtime API listens on the sandbox's lo; use --net none"});
    facts = run_lambda_facts(o, spec);
    lambda::set_runtime_env(spec.env, facts);
  } else {
    pool::set_protocol_env(spec.env, lifecycle, spec.image_name);
  }
  cgroup::Mode mode = cgroup::Mode::disabled;
  auto cg = make_cgroup(o, spec, &mode);
  if (!cg) return report(cg.error());
  spec.cgroup = cg->get();

  int exit_code = 0;
  std::string reports;
  {
    auto sb = sandbox::Sandbox::launch(spec);
    if (!sb) return report(sb.error());
    if (network) {
      if (auto up = connect_network(*network, *sb); !up) return report(up.error());
    }
    auto started = start_session(*sb, cg->get(), protocol, facts);
    if (!started) return report(started.error());
    auto& session = *started;
    auto init = session->wait_ready(std::chrono::duration_cast<std::chrono::milliseconds>(*init_timeout));
    if (!init.ready) {
      std::fputs(init.log.c_str(), stderr);
      std::fprintf(stderr, "fnexec: the init of %s failed: %s%s%s\n", spec.image_name.c_str(), init.detail.c_str(),
                   init.error_body ? " " : "", init.error_body ? init.error_body->c_str() : "");
      return 1;
    }
    std::optional<uint64_t> init_us = init.init_us;
    std::string event;
    for (uint64_t n = 1;; ++n) {
      if (events) {
        if (!std::getline(*events, event)) break;
      } else if (n == 1) {
        event.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
      } else {
        break;
      }
      if (!session->usable()) {
        std::fprintf(stderr, "fnexec: event %llu and later not sent: the function process was retired\n",
                     static_cast<unsigned long long>(n));
        break;
      }
      auto out = session->run_event(std::to_string(n), event, timeout, {});
      if (!out) return report(out.error());
      out->record.cgroup_mode = std::string(cgroup::to_string(mode));
      record_traffic(o, network, out->record);
      std::fputs(out->log.c_str(), stderr);
      std::fwrite(out->output.data(), 1, out->output.size(), stdout);
      if (events) std::fputc('\n', stdout);
      std::fflush(stdout);
      if (!out->error_type.empty()) {
        exit_code = out->record.exit_code;
        std::fprintf(stderr, "fnexec: event %llu: %s%s%s%s\n", static_cast<unsigned long long>(n),
                     out->error_type.c_str(), out->error_body ? " " : "", out->error_body ? out->error_body->c_str() : "",
                     out->detail.empty() ? "" : (" (" + out->detail + ")").c_str());
      }
      if (o.report) reports += framed_record_json(*out, lifecycle, n, std::exchange(init_us, std::nullopt)) + "\n";
    }
  }
  if (*cg) {
    if (auto d = (*cg)->destroy(); !d) report(d.error());
  }
  if (o.report) {
    if (*o.report == "-") {
      std::fputs(reports.c_str(), stderr);
    } else if (auto w = fs::write_output_file(*o.report, reports); !w) {
      report(w.error());
    }
  }
  return exit_code;
}

int run_command(Globals& g, RunOptions& o, const std::vector<std::string>& rest) {
  auto lifecycle = pool::parse_lifecycle(o.lifecycle);
  if (!lifecycle)
    return report(Error{ErrorKind::invalid, 0, "use --lifecycle", o.lifecycle, "expected oneshot, fresh or reuse"});
  auto protocol = pool::parse_protocol(o.protocol);
  if (!protocol)
    return report(Error{ErrorKind::invalid, 0, "use --protocol", o.protocol, "expected fnexec or lambda"});
  if (*protocol == pool::Protocol::lambda && *lifecycle == pool::Lifecycle::oneshot)
    return report(Error{ErrorKind::invalid, 0, "use --protocol lambda", {}, "it needs --lifecycle reuse or fresh"});
  if (o.handler && *protocol != pool::Protocol::lambda)
    return report(Error{ErrorKind::invalid, 0, "use --handler", {}, "it needs --protocol lambda"});
  if (*lifecycle == pool::Lifecycle::oneshot && o.events)
    return report(Error{ErrorKind::invalid, 0, "use --events", {}, "it needs --lifecycle reuse"});
  auto spec = build_spec(g, o, rest);
  if (!spec) return report(spec.error());
  // Before the sandbox: its destructor tears the network down after the sandbox is gone.
  auto network = make_network(o, *spec);
  if (!network) return report(network.error());
  if (*lifecycle != pool::Lifecycle::oneshot) {
    if (o.no_init)
      return report(Error{ErrorKind::invalid, 0, "use --no-init", {}, "fresh and reuse need fnexec's init"});
    return run_framed(o, *spec, *network, *lifecycle, *protocol);
  }
  invoke::WaitOptions wait;
  wait.forward_signals = true;
  if (o.timeout) {
    auto t = invoke::parse_duration(*o.timeout);
    if (!t) return report(t.error());
    wait.timeout = *t;
  }
  cgroup::Mode mode = cgroup::Mode::disabled;
  auto cg = make_cgroup(o, *spec, &mode);
  if (!cg) return report(cg.error());
  spec->cgroup = cg->get();

  auto sb = sandbox::Sandbox::launch(*spec);
  if (!sb) return report(sb.error());
  if (*network) {
    if (auto up = connect_network(**network, *sb); !up) return report(up.error());
  }
  // Without a cgroup to remove or a veth to take down, nothing of ours waits for PID 1's exit:
  // answer when init reports (the mount, pid and network namespaces go after, measured 0.7-37 ms
  // depending on load) and leave PID 1 to our parent's reaper.
  if (!*cg && !*network) {
    wait.answer_on_status = true;
    sb->leave_to_reaper_once_reported();
  }
  auto rec = invoke::run_invocation(*sb, cg->get(), wait);
  if (*cg) {
    if (auto d = (*cg)->destroy(); !d) report(d.error());
  }
  if (!rec) return report(rec.error());
  rec->cgroup_mode = std::string(cgroup::to_string(mode));
  record_traffic(o, *network, *rec);
  if (rec->setup_error) std::fprintf(stderr, "fnexec: %s\n", rec->setup_error->message().c_str());
  if (rec->timed_out)
    std::fprintf(stderr, "fnexec: %s timed out after %s\n", spec->image_name.c_str(), o.timeout->c_str());
  else if (rec->oom_killed)
    std::fprintf(stderr, "fnexec: %s was killed: out of memory (--memory %s)\n", spec->image_name.c_str(),
                 o.memory ? o.memory->c_str() : "unset");
  if (o.report) {
    std::string json = invoke::to_json(*rec) + "\n";
    if (*o.report == "-") {
      std::fputs(json.c_str(), stderr);
    } else if (auto w = fs::write_output_file(*o.report, json); !w) {
      report(w.error());
    }
  }
  return rec->exit_code;
}

}  // namespace

void add_run_command(CLI::App& app, Globals& g) {
  auto* sub = app.add_subcommand("run", "run a function from an image in a fresh sandbox");
  auto o = std::make_shared<RunOptions>();
  // Repeatable options take one value per occurrence, so `-e A=1 IMAGE` never swallows IMAGE.
  sub->prefix_command();  // IMAGE and everything after it are ours, not options of fnexec
  sub->add_option("-e,--env", o->env, "set K=V in the function's environment (K alone: take our value)")
      ->allow_extra_args(false);
  sub->add_option("--env-file", o->env_files, "read K=V lines from a file")->allow_extra_args(false);
  sub->add_option("-w,--workdir", o->workdir, "working directory inside the sandbox");
  sub->add_option("-u,--user", o->user, "UID[:GID] or NAME[:GROUP] from the image");
  sub->add_option("--entrypoint", o->entrypoint, "override the image's entrypoint (clears its Cmd)");
  sub->add_option("--hostname", o->hostname, "hostname inside the sandbox (default fnexec)");
  sub->add_flag("--read-only", o->read_only, "mount the rootfs read-only (tmpfs on /tmp, /var/tmp, /run)");
  sub->add_option("--tmpfs", o->tmpfs, "PATH[:SIZE|:OPTIONS] mount a tmpfs")->allow_extra_args(false);
  sub->add_option("-v,--volume", o->volumes, "HOSTDIR:DIR[:ro] bind a host path")->allow_extra_args(false);
  sub->add_option("--userns", o->userns, "host, or auto: root inside maps to an unprivileged host range");
  sub->add_option("--net,--network", o->net,
                  "none: private network namespace with lo up (default); bridge: a veth on a NATed bridge");
  sub->add_option("--bridge", o->bridge, "bridge mode: the bridge to attach to (default fnexec0)");
  sub->add_option("--bridge-subnet", o->bridge_subnet, "bridge mode: the bridge's IPv4 subnet (default 10.87.0.0/16)");
  sub->add_option("--bridge-subnet6", o->bridge_subnet6,
                  "bridge mode: an IPv6 subnet for the bridge, /96 or larger (e.g. fd87:6e78:1f00::/64; default none: IPv4 only)");
  sub->add_option("--dns", o->dns, "bridge mode: a nameserver for the sandbox's /etc/resolv.conf")
      ->allow_extra_args(false);
  sub->add_option("--add-host", o->add_hosts, "bridge mode: NAME:IP added to the sandbox's /etc/hosts")
      ->allow_extra_args(false);
  sub->add_option("--egress-allow", o->egress_allow, "bridge mode: CIDR[:PORT] the sandbox may reach")
      ->allow_extra_args(false);
  sub->add_option("--egress-deny", o->egress_deny, "bridge mode: CIDR[:PORT] the sandbox may not reach")
      ->allow_extra_args(false);
  sub->add_option("--egress-default", o->egress_default, "bridge mode: allow (default) or deny what no rule names");
  sub->add_option("--seccomp", o->seccomp, "default, unconfined or a JSON profile file");
  sub->add_option("--security-opt", o->security_opts,
                  "seccomp=FILE|unconfined|default, or no-new-privileges (podman's flag)")
      ->allow_extra_args(false);
  sub->add_option("--cap-add", o->cap_add, "add a capability")->allow_extra_args(false);
  sub->add_option("--device", o->devices, "HOST[:CONTAINER][:PERMS] make a host device usable (podman's flag)")
      ->allow_extra_args(false);
  sub->add_option("--cap-drop", o->cap_drop, "drop a capability (ALL for all)")->allow_extra_args(false);
  sub->add_option("--ulimit", o->ulimits, "NAME=SOFT[:HARD], e.g. nofile=1024:2048")->allow_extra_args(false);
  sub->add_option("--timeout", o->timeout, "kill the sandbox after DURATION (500ms, 2s, 1m): exit 124");
  sub->add_flag("--init,!--no-init", o->init, "fnexec's init as PID 1 (default), or the function itself");
  sub->add_flag("--rootfs", o->rootfs, "IMAGE is an unpacked root filesystem directory");
  o->pull.add_to(sub);
  sub->add_option("--memory,-m", o->memory, "memory limit (512m, 1g); swap is limited to 0 where possible");
  sub->add_option("--cpus", o->cpus, "CPU quota in CPUs (0.5, 2)");
  sub->add_option("--pids-limit", o->pids_limit, "maximum number of processes in the sandbox");
  sub->add_option("--cgroups", o->cgroups,
                  "auto: a cgroup when --memory, --cpus, --pids-limit or --report need one (default); "
                  "enabled: always; disabled: never");
  sub->add_option("--report", o->report,
                  "write the invocation record as JSON to FILE, or - for stderr (fresh/reuse: one line per event)");
  sub->add_option("--lifecycle", o->lifecycle,
                  "oneshot (default): event on stdin, result = stdout until exit; fresh or reuse: the function "
                  "speaks fnexec/1 (man 7 fnexec-protocol)");
  sub->add_option("--events", o->events, "reuse: one event per line of FILE (- for stdin), each result one line");
  sub->add_option("--init-timeout", o->init_timeout, "fresh/reuse: READY must come within DURATION (default 10s)");
  sub->add_option("--protocol", o->protocol,
                  "fresh/reuse: fnexec (fnexec/1 frames, default) or lambda (an unmodified Lambda runtime, served "
                  "the Lambda Runtime API on 127.0.0.1:9001 inside the sandbox)");
  sub->add_option("--handler", o->handler, "lambda: _HANDLER (default: the last argument of the command)");
  sub->callback([&g, o, sub] {
    o->no_init = !o->init;
    g.exit_code = run_command(g, *o, sub->remaining());
  });
}

}  // namespace fnexec::cli
