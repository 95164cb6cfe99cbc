#include "bench/peers.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <memory>
#include <sstream>

#include "bench/functions.h"
#include "invoke/frames.h"
#include "util/fs.h"
#include "util/unique_fd.h"

extern char** environ;

namespace fnexec::bench {

namespace stdfs = std::filesystem;

namespace {

struct SpawnArgs {
  const char* path;
  char* const* argv;
  char* const* envp;
  int in, out, err, mntns;
  const char* cgroup_procs;  // nullptr, or a cgroup.procs file to write "0" to
  int death_signal;
};

// Runs on the parent's memory until execve (CLONE_VM|CLONE_VFORK): syscalls only.
int spawn_child(void* p) {
  auto* a = static_cast<SpawnArgs*>(p);
  if (a->mntns >= 0 && ::setns(a->mntns, CLONE_NEWNS) != 0) _exit(125);
  if (a->death_signal && ::prctl(PR_SET_PDEATHSIG, a->death_signal) != 0) _exit(125);
  if (a->cgroup_procs) {
    int fd = ::open(a->cgroup_procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, "0", 1) != 1) _exit(125);
    ::close(fd);
  }
  if (::dup2(a->in, 0) < 0 || ::dup2(a->out, 1) < 0 || ::dup2(a->err, 2) < 0) _exit(125);
  ::execve(a->path, a->argv, a->envp);
  _exit(127);
}

struct Pipe {
  UniqueFd read, write;
  static Result<Pipe> make() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return fail_errno("create a pipe");
    return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
  }
};

}  // namespace

Result<pid_t> start_command(const Command& cmd, int in, int out, int err, const StartOptions& options) {
  std::vector<char*> argv;
  for (const auto& a : cmd.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : options.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  std::string procs = options.join_cgroup.empty() ? std::string() : options.join_cgroup + "/cgroup.procs";
  SpawnArgs args{cmd.path.c_str(),
                 argv.data(),
                 options.env.empty() ? environ : envp.data(),
                 in,
                 out,
                 err,
                 cmd.mntns_fd,
                 procs.empty() ? nullptr : procs.c_str(),
                 options.parent_death_signal};
  // Allocated on first use: a 64 KB thread_local array sat in every thread's TLS block, which ld.so
  // zeroes at every start of fnexec (16 page faults, ~0.4 ms here) whether or not it benches.
  constexpr size_t kStack = 64 * 1024;
  static thread_local std::unique_ptr<char[]> stack;
  if (!stack) stack = std::make_unique_for_overwrite<char[]>(kStack);
  pid_t pid = ::clone(spawn_child, stack.get() + kStack, CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
  if (pid < 0) return fail_errno("start", cmd.path);
  return pid;
}

Result<> run_command(const Command& cmd, std::string_view input, std::string& output) {
  output.clear();
  auto in = FNEXEC_TRY(Pipe::make());
  auto out = FNEXEC_TRY(Pipe::make());
  auto err = FNEXEC_TRY(Pipe::make());
  pid_t pid = FNEXEC_TRY(start_command(cmd, in.read.get(), out.write.get(), err.write.get()));
  in.read.reset();
  out.write.reset();
  err.write.reset();

  // Feed stdin and drain stdout/stderr together: a large event through cat would otherwise fill
  // one pipe while we block on the other.
  if (input.empty())
    in.write.reset();
  else
    ::fcntl(in.write.get(), F_SETFL, O_NONBLOCK);
  std::string errtext;
  size_t written = 0;
  char buf[65536];
  while (out.read || err.read) {
    pollfd p[3];
    int n = 0;
    int iout = -1, ierr = -1, iin = -1;
    if (out.read) {
      iout = n;
      p[n++] = {out.read.get(), POLLIN, 0};
    }
    if (err.read) {
      ierr = n;
      p[n++] = {err.read.get(), POLLIN, 0};
    }
    if (in.write) {
      iin = n;
      p[n++] = {in.write.get(), POLLOUT, 0};
    }
    if (::poll(p, static_cast<nfds_t>(n), -1) < 0) {
      if (errno == EINTR) continue;
      return fail_errno("poll the pipes of", cmd.path);
    }
    if (iin >= 0 && p[iin].revents) {
      ssize_t w = ::write(in.write.get(), input.data() + written, input.size() - written);
      if (w > 0) written += static_cast<size_t>(w);
      // EPIPE: the function exited without reading its event (true does); that is its right.
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == input.size()) in.write.reset();
    }
    for (auto [idx, fd, sink] :
         {std::tuple{iout, &out.read, &output}, std::tuple{ierr, &err.read, &errtext}}) {
      if (idx < 0 || !p[idx].revents) continue;
      ssize_t r = ::read(fd->get(), buf, sizeof buf);
      if (r > 0)
        sink->append(buf, static_cast<size_t>(r));
      else if (r == 0 || (errno != EAGAIN && errno != EINTR))
        fd->reset();
    }
    if (errtext.size() > 8192) errtext.erase(0, errtext.size() - 4096);
  }
  in.write.reset();
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return fail_errno("wait for", cmd.path);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
  while (!errtext.empty() && (errtext.back() == '\n' || errtext.back() == ' ')) errtext.pop_back();
  if (auto nl = errtext.rfind('\n'); nl != std::string::npos) errtext.erase(0, nl + 1);
  std::string how = WIFEXITED(status) ? fmt::format("exit status {}", WEXITSTATUS(status))
                                      : fmt::format("signal {}", WTERMSIG(status));
  return fail(ErrorKind::internal, "run", cmd.argv.empty() ? cmd.path : cmd.argv[0],
              errtext.empty() ? how : how + ": " + errtext);
}

std::optional<std::string> common_own_cgroup(std::string_view proc_self_cgroup) {
  std::string longest = "/";
  std::vector<std::string> paths;
  std::istringstream in{std::string(proc_self_cgroup)};
  for (std::string line; std::getline(in, line);) {
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    if (b == a + 1) continue;  // "0::/path": the v2 hierarchy, which crun and runc leave alone on v1
    std::string path = line.substr(b + 1);
    if (path.empty() || path[0] != '/') continue;
    paths.push_back(path);
    if (path.size() > longest.size()) longest = path;
  }
  for (const auto& p : paths) {
    bool prefix = p == "/" || (longest.compare(0, p.size(), p) == 0 &&
                               (longest.size() == p.size() || longest[p.size()] == '/'));
    if (!prefix) return std::nullopt;
  }
  return longest;
}

namespace {

// /bin/cat inside root, following symlinks as the sandbox would see them (absolute ones are
// relative to root), so the floor runs the image's binary and never the host's.
Result<stdfs::path> resolve_in_root(const stdfs::path& root, std::string rel) {
  for (int hops = 0; hops < 16; ++hops) {
    stdfs::path host = root / stdfs::path(rel).relative_path();
    std::error_code ec;
    auto st = stdfs::symlink_status(host, ec);
    if (ec || !stdfs::exists(st)) return fail(ErrorKind::not_found, "find", rel, "not in the image's rootfs");
    if (!stdfs::is_symlink(st)) return host;
    auto target = stdfs::read_symlink(host, ec);
    if (ec) return fail_errno("read symlink", host.string(), ec.value());
    rel = target.is_absolute() ? target.string() : (stdfs::path(rel).parent_path() / target).string();
  }
  return fail(ErrorKind::invalid, "resolve", rel, "too many symlinks");
}

// Holds what the crun/runc entries share, and removes the cgroup directories they made.
struct OciResources {
  UniqueFd mntns;                        // crun's mount namespace without the v2 mount
  std::vector<stdfs::path> remove_dirs;  // deepest first; rmdir only, so a busy one stays
  ~OciResources() {
    for (const auto& d : remove_dirs) ::rmdir(d.c_str());
  }
};

// A mount namespace like ours with /sys/fs/cgroup/unified unmounted: crun 1.8 refuses hybrid hosts.
Result<UniqueFd> hidden_cgroup2_namespace() {
  int sync[2];
  if (::pipe2(sync, O_CLOEXEC) != 0) return fail_errno("create a pipe");
  UniqueFd rd(sync[0]), wr(sync[1]);
  pid_t pid = ::fork();
  if (pid < 0) return fail_errno("fork the mount namespace holder");
  if (pid == 0) {
    char ok = 0;
    if (::unshare(CLONE_NEWNS) == 0 && ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
        ::umount2("/sys/fs/cgroup/unified", MNT_DETACH) == 0)
      ok = 1;
    if (::write(sync[1], &ok, 1) != 1) _exit(1);
    ::pause();
    _exit(0);
  }
  wr.reset();
  char ok = 0;
  ssize_t r = ::read(rd.get(), &ok, 1);
  UniqueFd ns;
  if (r == 1 && ok) ns.reset(::open(fmt::format("/proc/{}/ns/mnt", pid).c_str(), O_RDONLY | O_CLOEXEC));
  int saved = errno;
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  if (!ns)
    return fail_errno("make a mount namespace without /sys/fs/cgroup/unified for crun", {},
                      saved ? saved : EPERM);
  return ns;
}

bool is_hybrid_with_cgroup2() {
  struct statfs root, unified;
  return ::statfs("/sys/fs/cgroup", &root) == 0 && root.f_type != 0x63677270 /* CGROUP2_SUPER_MAGIC */ &&
         ::statfs("/sys/fs/cgroup/unified", &unified) == 0 && unified.f_type == 0x63677270;
}

std::string json_list(const std::vector<std::string>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", \"" : "\"") + json_escape(v[i]) + "\"";
  return s + "]";
}

// An OCI runtime config as `crun spec` writes it, plus a cgroup namespace (fnexec makes one too),
// the rootfs read-only, stdio passed through, and a cgroup below our own.
std::string oci_config(const stdfs::path& rootfs, const std::string& binary,
                       const std::string& cgroups_path) {
  const std::string caps = R"(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])";
  return fmt::format(R"({{
  "ociVersion": "1.0.0",
  "process": {{
    "terminal": false, "user": {{"uid": 0, "gid": 0}}, "args": {}, "cwd": "/",
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "capabilities": {{"bounding": {caps}, "effective": {caps}, "inheritable": [], "permitted": {caps}, "ambient": {caps}}},
    "rlimits": [{{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}}],
    "noNewPrivileges": true
  }},
  "root": {{"path": "{}", "readonly": true}},
  "hostname": "bench",
  "mounts": [
    {{"destination": "/proc", "type": "proc", "source": "proc"}},
    {{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}},
    {{"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}},
    {{"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}},
    {{"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}},
    {{"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}},
    {{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}}
  ],
  "linux": {{
    "cgroupsPath": "{}",
    "resources": {{"devices": [{{"allow": false, "access": "rwm"}}]}},
    "namespaces": [{{"type": "pid"}}, {{"type": "network"}}, {{"type": "ipc"}}, {{"type": "uts"}}, {{"type": "mount"}}, {{"type": "cgroup"}}],
    "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
    "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
  }}
}}
)",
                     json_list({binary}), json_escape(rootfs.string()), json_escape(cgroups_path),
                     fmt::arg("caps", caps));
}

class CommandTarget final : public Target {
 public:
  // per_slot[slot] is the command for that thread (crun/runc: a bundle per thread, so two
  // containers never share a cgroup path); "{id}" in an argument becomes a fresh container id.
  CommandTarget(std::vector<Command> per_slot, std::shared_ptr<OciResources> keep)
      : per_slot_(std::move(per_slot)), keep_(std::move(keep)) {}

  Result<> invoke(std::string_view event, std::string& output, unsigned slot) override {
    Command cmd = per_slot_[slot % per_slot_.size()];
    for (auto& a : cmd.argv)
      if (a == "{id}") a = fmt::format("fnexec-bench-{}-{}", ::getpid(), next_id_++);
    return run_command(cmd, event, output);
  }

 private:
  std::vector<Command> per_slot_;
  std::shared_ptr<OciResources> keep_;
  static inline std::atomic<uint64_t> next_id_{0};
};

class FramedPipeTarget final : public Target {
 public:
  FramedPipeTarget(Command cmd, std::string function_name, unsigned slots)
      : cmd_(std::move(cmd)), function_name_(std::move(function_name)), slots_(slots) {}
  ~FramedPipeTarget() override {
    for (auto& p : slots_) stop(p);
  }

  // Untimed: every slot's process started and READY before the batch (a failure to start is
  // tried again, and reported, by the slot's first invoke).
  void before_batch() override {
    for (auto& p : slots_)
      if (p.pid <= 0) (void)start(p);
  }

  Result<> invoke(std::string_view event, std::string& output, unsigned slot) override {
    output.clear();
    Process& p = slots_[slot % slots_.size()];
    if (p.pid <= 0) FNEXEC_TRY(start(p));
    std::string id = std::to_string(++p.events);
    auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(30);
    p.frame.clear();
    invoke::frames::append_event(
        p.frame, id,
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline.time_since_epoch()).count(), event);
    if (auto w = fs::write_all(p.in.get(), p.frame, "an event to " + cmd_.argv[0]); !w) {
      stop(p);
      return std::unexpected(w.error());
    }
    auto reply = read_reply(p);
    if (!reply) {
      stop(p);
      return std::unexpected(reply.error());
    }
    if (reply->kind != invoke::frames::ReplyKind::ok || reply->id != id)
      return fail(ErrorKind::protocol, "invoke over a pipe", cmd_.argv[0],
                  fmt::format("expected OK {}, got {} {}: {}", id, invoke::frames::to_string(reply->kind),
                              reply->id, reply->body));
    output = std::move(reply->body);
    return {};
  }

 private:
  struct Process {
    pid_t pid = -1;
    UniqueFd in, out;
    invoke::frames::ReplyParser parser{uint64_t{1} << 32};
    std::string frame;
    uint64_t events = 0;
  };

  Result<> start(Process& p) {
    auto in = FNEXEC_TRY(Pipe::make());
    auto out = FNEXEC_TRY(Pipe::make());
    UniqueFd null_err(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    if (!null_err) return fail_errno("open /dev/null");
    StartOptions so;
    for (char** e = environ; *e; ++e)
      if (!std::string_view(*e).starts_with("FNEXEC_")) so.env.emplace_back(*e);
    so.env.insert(so.env.end(), {"FNEXEC_PROTOCOL=fnexec/1", "FNEXEC_LIFECYCLE=reuse",
                                 "FNEXEC_FUNCTION_NAME=" + function_name_});
    so.parent_death_signal = SIGKILL;
    p.pid = FNEXEC_TRY(start_command(cmd_, in.read.get(), out.write.get(), null_err.get(), so));
    p.in = std::move(in.write);
    p.out = std::move(out.read);
    p.parser = invoke::frames::ReplyParser(uint64_t{1} << 32);
    auto ready = read_reply(p);
    if (!ready || ready->kind != invoke::frames::ReplyKind::ready) {
      stop(p);
      return fail(ErrorKind::protocol, "start", cmd_.argv[0],
                  ready ? fmt::format("expected READY, got {}: {}", invoke::frames::to_string(ready->kind),
                                      ready->body)
                        : ready.error().message());
    }
    return {};
  }

  Result<invoke::frames::Reply> read_reply(Process& p) {
    char buf[65536];
    for (;;) {
      auto next = FNEXEC_TRY(p.parser.next());
      if (next) return std::move(*next);
      ssize_t n = ::read(p.out.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail_errno("read the reply of", cmd_.argv[0]);
      if (n == 0) return fail(ErrorKind::protocol, "read the reply of", cmd_.argv[0], "it closed stdout (exited?)");
      p.parser.feed({buf, static_cast<size_t>(n)});
    }
  }

  static void stop(Process& p) {
    p.in.reset();
    p.out.reset();
    if (p.pid > 0) {
      ::kill(p.pid, SIGKILL);
      ::waitpid(p.pid, nullptr, 0);
    }
    p.pid = -1;
  }

  Command cmd_;
  std::string function_name_;
  std::vector<Process> slots_;
};

// The cgroup directories below base that do not exist yet in any hierarchy, deepest first.
std::vector<stdfs::path> dirs_to_remove(const std::string& base, const std::vector<std::string>& leaves) {
  std::vector<stdfs::path> out;
  std::error_code ec;
  std::vector<stdfs::path> seen;
  std::vector<stdfs::path> mounts{"/sys/fs/cgroup"};  // itself on a pure v2 host
  for (const auto& entry : stdfs::directory_iterator("/sys/fs/cgroup", ec))
    if (entry.is_directory(ec)) mounts.push_back(entry.path());
  for (const auto& candidate : mounts) {
    auto mount = stdfs::canonical(candidate, ec);
    if (ec || std::find(seen.begin(), seen.end(), mount) != seen.end()) continue;
    seen.push_back(mount);
    struct statfs st;
    // runc on a hybrid host also places its containers in the v2 hierarchy (0x63677270).
    if (::statfs(mount.c_str(), &st) != 0 || (st.f_type != 0x27e0eb && st.f_type != 0x63677270)) continue;
    for (const auto& leaf : leaves) out.push_back(mount / stdfs::path(base).relative_path() / leaf);
    // The base and every missing component above it, deepest first.
    std::vector<stdfs::path> missing;
    for (stdfs::path p = mount / stdfs::path(base).relative_path(); p != mount; p = p.parent_path()) {
      if (stdfs::exists(p, ec)) break;
      missing.push_back(p);
    }
    out.insert(out.end(), missing.begin(), missing.end());
  }
  return out;
}

}  // namespace

std::shared_ptr<Target> framed_pipe_target(Command cmd, std::string function_name, unsigned slots) {
  return std::make_shared<FramedPipeTarget>(std::move(cmd), std::move(function_name), std::max(slots, 1u));
}

std::shared_ptr<Target> command_target(std::vector<Command> per_slot) {
  return std::make_shared<CommandTarget>(std::move(per_slot), nullptr);
}

Result<PeerSet> prepare_peers(const PeerOptions& o) {
  PeerSet set;
  auto want = [&](std::string_view name) {
    return std::find(o.peers.begin(), o.peers.end(), name) != o.peers.end();
  };
  for (const auto& p : o.peers)
    if (p != "floor" && p != "pipe" && p != "bwrap" && p != "crun" && p != "runc")
      return fail(ErrorKind::invalid, "use --peers", p, "expected floor, pipe, bwrap, crun or runc");

  // The runtime functions as host processes: once per event (floor) and long-lived (pipe).
  std::vector<std::string> applets;
  for (const auto& fn : o.functions) {
    if (!speaks_frames(fn)) {
      applets.push_back(fn);
      continue;
    }
    auto host = host_command(fn, o.rootfs);
    if (!host) return std::unexpected(host.error());
    Command c{host->path, host->argv, -1};
    if (want("floor"))
      set.entries.push_back(
          {"floor", "process", fn, std::make_shared<CommandTarget>(std::vector{c}, nullptr), {}});
    if (want("pipe"))
      set.entries.push_back({"floor", "pipe", fn, framed_pipe_target(c, "bench-" + fn, o.max_concurrency), {}});
  }

  if (want("floor")) {
    for (const auto& fn : applets) {
      auto bin = resolve_in_root(o.rootfs, "/bin/" + fn);
      if (!bin) {
        set.skipped.push_back({"floor " + fn, bin.error().message()});
        continue;
      }
      Command c{bin->string(), {fn}, -1};
      set.entries.push_back(
          {"floor", "process", fn, std::make_shared<CommandTarget>(std::vector{c}, nullptr), {}});
    }
  }
  if (want("bwrap") && !applets.empty()) {
    if (auto bwrap = fs::find_in_path("bwrap")) {
      for (const auto& fn : applets) {
        Command c{bwrap->string(),
                  {"bwrap", "--unshare-all", "--ro-bind", o.rootfs.string(), "/", "--proc", "/proc", "--dev",
                   "/dev", "--tmpfs", "/tmp", "/bin/" + fn},
                  -1};
        set.entries.push_back(
            {"bwrap", "process", fn, std::make_shared<CommandTarget>(std::vector{c}, nullptr), {}});
      }
    } else {
      set.skipped.push_back({"bwrap", "not installed (no bwrap in PATH; Debian package bubblewrap)"});
    }
  }
  for (std::string runtime : {"crun", "runc"}) {
    if (!want(runtime) || applets.empty()) continue;
    auto bin = fs::find_in_path(runtime);
    if (!bin) {
      set.skipped.push_back(
          {runtime, fmt::format("not installed (no {} in PATH; Debian package {})", runtime, runtime)});
      continue;
    }
    auto own = fs::read_file("/proc/self/cgroup");
    auto parent = own ? common_own_cgroup(*own) : std::nullopt;
    if (!parent) {
      set.skipped.push_back(
          {runtime, "no cgroup path lies below ours in every v1 hierarchy (see /proc/self/cgroup)"});
      continue;
    }
    auto res = std::make_shared<OciResources>();
    if (runtime == "crun" && is_hybrid_with_cgroup2()) {
      auto ns = hidden_cgroup2_namespace();
      if (!ns) {
        set.skipped.push_back({runtime, ns.error().message()});
        continue;
      }
      res->mntns = std::move(*ns);
      set.notes.push_back(
          "crun runs in a private mount namespace with /sys/fs/cgroup/unified unmounted: crun refuses hybrid "
          "cgroup hosts; joining that namespace costs one setns(2) per run");
    }
    std::string base =
        (*parent == "/" ? "" : *parent) + fmt::format("/fnexec-bench-{}-{}", ::getpid(), runtime);
    std::vector<std::string> leaves;
    for (const auto& fn : applets)
      for (unsigned slot = 0; slot < o.max_concurrency; ++slot)
        leaves.push_back(fmt::format("{}-{}", fn, slot));
    res->remove_dirs = dirs_to_remove(base, leaves);
    for (const auto& fn : applets) {
      std::vector<Command> per_slot;
      for (unsigned slot = 0; slot < o.max_concurrency; ++slot) {
        auto bundle = o.work / fmt::format("{}-{}-{}", runtime, fn, slot);
        std::error_code ec;
        stdfs::create_directories(bundle, ec);
        if (ec) return fail_errno("create bundle", bundle.string(), ec.value());
        FNEXEC_TRY(fs::write_file_atomic(
            bundle / "config.json",
            oci_config(o.rootfs, "/bin/" + fn, fmt::format("{}/{}-{}", base, fn, slot))));
        per_slot.push_back(
            {bin->string(), {runtime, "run", "--bundle", bundle.string(), "{id}"}, res->mntns.get()});
      }
      set.entries.push_back(
          {runtime, "process", fn, std::make_shared<CommandTarget>(std::move(per_slot), res), {}});
    }
  }
  if (!set.entries.empty())
    set.notes.push_back(fmt::format(
        "peers run on a read-only copy of the image's rootfs; crun and runc get the namespaces fnexec makes "
        "(pid, net, ipc, uts, mount, cgroup) and a cgroup below the bench's own"));
  return set;
}

}  // namespace fnexec::bench
