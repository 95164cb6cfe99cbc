// fnexec run [OPTIONS] IMAGE [-- ARG...]: one function run in a fresh sandbox, podman-like options.
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "cgroup/cgroup.h"
#include "cli/commands.h"
#include "image/store.h"
#include "invoke/invocation.h"
#include "sandbox/launcher.h"
#include "sandbox/userns.h"
#include "util/fs.h"

namespace fnexec::cli {

namespace {

namespace stdfs = std::filesystem;

struct RunOptions {
  std::vector<std::string> env, env_files, tmpfs, volumes, cap_add, cap_drop, ulimits;
  std::optional<std::string> workdir, user, entrypoint, timeout, report, memory, cpus, pids_limit;
  std::string cgroups = "auto";
  std::string hostname, userns = "host", net = "none", seccomp = "default";
  bool read_only = false, init = true, no_init = false, rootfs = false;
};

std::optional<unsigned> parse_id(std::string_view s) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// The topmost layer's copy of a file (a 0/0 character device there is an overlay whiteout).
std::optional<std::string> read_image_file(const image::ResolvedImage& img, const std::string& rel) {
  for (auto it = img.layers.rbegin(); it != img.layers.rend(); ++it) {
    struct stat st;
    auto p = *it / rel;
    if (::lstat(p.c_str(), &st) != 0) continue;
    if (!S_ISREG(st.st_mode)) return std::nullopt;
    auto text = fs::read_file(p);
    return text ? std::optional(*text) : std::nullopt;
  }
  return std::nullopt;
}

// Finds NAME-or-ID in field 0 or 2 of a passwd/group style file; returns fields.
std::optional<std::vector<std::string>> find_entry(const std::optional<std::string>& file,
                                                   std::string_view key, bool by_id) {
  if (!file) return std::nullopt;
  size_t pos = 0;
  while (pos < file->size()) {
    size_t nl = file->find('\n', pos);
    std::string line = file->substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? file->size() : nl + 1;
    std::vector<std::string> f;
    size_t s = 0;
    for (;;) {
      size_t c = line.find(':', s);
      f.push_back(line.substr(s, c == std::string::npos ? std::string::npos : c - s));
      if (c == std::string::npos) break;
      s = c + 1;
    }
    if (f.size() >= 3 && f[by_id ? 2 : 0] == key) return f;
  }
  return std::nullopt;
}

// "uid[:gid]" numeric or names from the image's /etc/passwd and /etc/group, as Docker resolves them.
Result<std::pair<uid_t, gid_t>> resolve_user(const image::ResolvedImage& img, const std::string& spec,
                                             std::string* home) {
  std::string u = spec.substr(0, spec.find(':'));
  std::optional<std::string> g;
  if (auto c = spec.find(':'); c != std::string::npos) g = spec.substr(c + 1);
  auto passwd = read_image_file(img, "etc/passwd");
  uid_t uid = 0;
  gid_t gid = 0;
  std::optional<std::vector<std::string>> entry;
  if (auto id = parse_id(u)) {
    uid = *id;
    entry = find_entry(passwd, u, true);
  } else {
    entry = find_entry(passwd, u, false);
    if (!entry || entry->size() < 4 || !parse_id((*entry)[2]))
      return fail(ErrorKind::not_found, "find user", u, "not in the image's /etc/passwd (use a numeric UID)");
    uid = *parse_id((*entry)[2]);
  }
  if (entry && entry->size() >= 4) {
    if (auto pg = parse_id((*entry)[3])) gid = *pg;
    if (entry->size() >= 6) *home = (*entry)[5];
  }
  if (g) {
    if (auto id = parse_id(*g)) {
      gid = *id;
    } else {
      auto group = find_entry(read_image_file(img, "etc/group"), *g, false);
      if (!group || !parse_id((*group)[2]))
        return fail(ErrorKind::not_found, "find group", *g,
                    "not in the image's /etc/group (use a numeric GID)");
      gid = *parse_id((*group)[2]);
    }
  }
  return std::pair{uid, gid};
}

void set_env(std::vector<std::string>& env, const std::string& kv) {
  auto key = kv.substr(0, kv.find('=') + 1);
  for (auto& e : env) {
    if (e.compare(0, key.size(), key) == 0) {
      e = kv;
      return;
    }
  }
  env.push_back(kv);
}

bool has_env(const std::vector<std::string>& env, const std::string& key) {
  for (auto& e : env)
    if (e.compare(0, key.size() + 1, key + "=") == 0) return true;
  return false;
}

// -e K=V sets; -e K copies our own value when we have one (Docker skips it otherwise).
void add_user_env(std::vector<std::string>& env, const std::string& item) {
  if (item.find('=') != std::string::npos) return set_env(env, item);
  if (const char* v = std::getenv(item.c_str())) set_env(env, item + "=" + v);
}

Result<image::ResolvedImage> resolve_image(const Globals& g, const std::string& ref, bool rootfs) {
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

Result<sandbox::SandboxSpec> build_spec(const Globals& g, RunOptions& o,
                                        const std::vector<std::string>& rest) {
  if (rest.empty())
    return fail(ErrorKind::invalid, "run", {}, "IMAGE is required: fnexec run [OPTIONS] IMAGE [-- ARG...]");
  std::vector<std::string> args(rest.begin() + 1, rest.end());
  if (!args.empty() && args.front() == "--") args.erase(args.begin());

  auto img = FNEXEC_TRY(resolve_image(g, rest.front(), o.rootfs));
  sandbox::SandboxSpec spec;
  spec.image_name = img.reference.empty() ? rest.front() : img.reference;
  spec.layers = img.layers;

  // Docker's merge: --entrypoint replaces Entrypoint and drops the image's Cmd; ARGs replace Cmd.
  std::vector<std::string> entry = img.config.entrypoint, cmd = img.config.cmd;
  if (o.entrypoint) {
    entry = o.entrypoint->empty() ? std::vector<std::string>{} : std::vector<std::string>{*o.entrypoint};
    cmd.clear();
  }
  if (!args.empty()) cmd = args;
  spec.argv = entry;
  spec.argv.insert(spec.argv.end(), cmd.begin(), cmd.end());
  if (spec.argv.empty())
    return fail(ErrorKind::invalid, "run image", spec.image_name,
                "it has no Entrypoint or Cmd: give a command after IMAGE");

  spec.hostname = o.hostname.empty() ? "fnexec" : o.hostname;
  std::vector<std::string> env = img.config.env;
  if (!has_env(env, "PATH"))
    env.insert(env.begin(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
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
      add_user_env(env, line);
    }
  }
  for (const auto& e : o.env) add_user_env(env, e);
  set_env(env, "HOSTNAME=" + spec.hostname);

  spec.cwd = o.workdir ? *o.workdir : (img.config.working_dir.empty() ? "/" : img.config.working_dir);
  if (spec.cwd.empty() || spec.cwd[0] != '/')
    return fail(ErrorKind::invalid, "use working directory", spec.cwd, "must be an absolute path");

  sandbox::PrivilegeSpec ps;
  std::string user = o.user ? *o.user : img.config.user;
  std::string home = "/";
  if (!user.empty()) {
    auto [uid, gid] = FNEXEC_TRY(resolve_user(img, user, &home));
    ps.uid = uid;
    ps.gid = gid;
  } else {
    home = "/root";
  }
  if (!has_env(env, "HOME")) env.push_back("HOME=" + home);
  spec.env = env;

  ps.cap_add = o.cap_add;
  ps.cap_drop = o.cap_drop;
  ps.ulimits = o.ulimits;
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
  if (o.userns == "auto") {
    spec.userns = sandbox::UserNamespace::automatic;
    spec.id_range = FNEXEC_TRY(sandbox::default_id_range());
  } else if (o.userns != "host") {
    return fail(ErrorKind::invalid, "use --userns", o.userns, "expected host or auto");
  }
  if (o.net != "none")
    return fail(ErrorKind::invalid, "use --net", o.net,
                "only none (a private network namespace with lo) is supported");
  spec.network = sandbox::Network::loopback;
  spec.mount_dir = stdfs::path(g.root) / "mnt";
  return spec;
}

// The sandbox's cgroup: limits and accounting. nullptr with --cgroups=disabled.
Result<std::unique_ptr<cgroup::SandboxCgroup>> make_cgroup(const RunOptions& o, cgroup::Mode* mode) {
  cgroup::Limits limits;
  if (o.memory) limits.memory_bytes = FNEXEC_TRY(cgroup::parse_size(*o.memory));
  if (o.cpus) limits.cpus = FNEXEC_TRY(cgroup::parse_cpus(*o.cpus));
  if (o.pids_limit) {
    auto n = parse_id(*o.pids_limit);
    if (!n || *n == 0)
      return fail(ErrorKind::invalid, "use --pids-limit", *o.pids_limit, "expected a positive number");
    limits.pids = *n;
  }
  // auto: a cgroup only when limits or the report need one; creating and removing a v1 sandbox
  // cgroup (five hierarchies) costs about as much as the rest of the run.
  bool wanted = limits.memory_bytes || limits.cpus || limits.pids || o.report;
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

int run_command(Globals& g, RunOptions& o, const std::vector<std::string>& rest) {
  auto spec = build_spec(g, o, rest);
  if (!spec) return report(spec.error());
  invoke::WaitOptions wait;
  wait.forward_signals = true;
  if (o.timeout) {
    auto t = invoke::parse_duration(*o.timeout);
    if (!t) return report(t.error());
    wait.timeout = *t;
  }
  cgroup::Mode mode = cgroup::Mode::disabled;
  auto cg = make_cgroup(o, &mode);
  if (!cg) return report(cg.error());
  spec->cgroup = cg->get();

  auto sb = sandbox::Sandbox::launch(*spec);
  if (!sb) return report(sb.error());
  auto rec = invoke::run_invocation(*sb, cg->get(), wait);
  if (*cg) {
    if (auto d = (*cg)->destroy(); !d) report(d.error());
  }
  if (!rec) return report(rec.error());
  rec->cgroup_mode = std::string(cgroup::to_string(mode));
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
    } else if (auto w = fs::write_file_atomic(*o.report, json); !w) {
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
  sub->add_option("--net,--network", o->net, "none: private network namespace with lo up (default)");
  sub->add_option("--seccomp", o->seccomp, "default, unconfined or a JSON profile file");
  sub->add_option("--cap-add", o->cap_add, "add a capability")->allow_extra_args(false);
  sub->add_option("--cap-drop", o->cap_drop, "drop a capability (ALL for all)")->allow_extra_args(false);
  sub->add_option("--ulimit", o->ulimits, "NAME=SOFT[:HARD], e.g. nofile=1024:2048")->allow_extra_args(false);
  sub->add_option("--timeout", o->timeout, "kill the sandbox after DURATION (500ms, 2s, 1m): exit 124");
  sub->add_flag("--init,!--no-init", o->init, "fnexec's init as PID 1 (default), or the function itself");
  sub->add_flag("--rootfs", o->rootfs, "IMAGE is an unpacked root filesystem directory");
  sub->add_option("--memory,-m", o->memory, "memory limit (512m, 1g); swap is limited to 0 where possible");
  sub->add_option("--cpus", o->cpus, "CPU quota in CPUs (0.5, 2)");
  sub->add_option("--pids-limit", o->pids_limit, "maximum number of processes in the sandbox");
  sub->add_option("--cgroups", o->cgroups,
                  "auto: a cgroup when --memory, --cpus, --pids-limit or --report need one (default); "
                  "enabled: always; disabled: never");
  sub->add_option("--report", o->report, "write the invocation record as JSON to FILE, or - for stderr");
  sub->callback([&g, o, sub] {
    o->no_init = !o->init;
    g.exit_code = run_command(g, *o, sub->remaining());
  });
}

}  // namespace fnexec::cli
