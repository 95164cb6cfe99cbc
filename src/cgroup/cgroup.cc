// Detection, the disabled backend, and filesystem helpers both backends share.
#include "cgroup/cgroup.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "cgroup/backend.h"
#include "util/fs.h"

namespace fnexec::cgroup {

std::string_view to_string(Mode m) {
  switch (m) {
    case Mode::v2:
      return "v2";
    case Mode::v1:
      return "v1";
    case Mode::disabled:
      return "disabled";
  }
  return "?";
}

Result<Options> options_from_flag(std::string_view value) {
  Options o;
  if (value == "auto") return o;
  if (value == "disabled") {
    o.force_disabled = true;
    o.allow_disabled = true;
    return o;
  }
  return fail(ErrorKind::invalid, "use --cgroups=" + std::string(value), {}, "expected auto or disabled");
}

namespace detail {

namespace {

std::optional<OwnCgroup> join(const CgroupMount& m, const std::string& path) {
  // In a cgroup namespace or a bind-mounted subtree, the mount's root is a prefix of our path.
  std::string_view rel = path;
  if (m.root != "/") {
    if (!rel.starts_with(m.root) || (rel.size() > m.root.size() && rel[m.root.size()] != '/'))
      return std::nullopt;
    rel.remove_prefix(m.root.size());
  }
  while (!rel.empty() && rel.front() == '/') rel.remove_prefix(1);
  OwnCgroup o{m.mount_point, rel.empty() ? stdfs::path(m.mount_point) : stdfs::path(m.mount_point) / rel};
  return o;
}

}  // namespace

std::optional<OwnCgroup> own_v2(const std::vector<ProcCgroupEntry>& self,
                                const std::vector<CgroupMount>& mounts) {
  const ProcCgroupEntry* entry = nullptr;
  for (auto& e : self)
    if (e.hierarchy_id == 0 && e.controllers.empty()) entry = &e;
  if (!entry) return std::nullopt;
  for (auto& m : mounts)
    if (m.v2)
      if (auto o = join(m, entry->path)) return o;
  return std::nullopt;
}

std::optional<OwnCgroup> own_v1(const std::vector<ProcCgroupEntry>& self,
                                const std::vector<CgroupMount>& mounts, const std::string& controller) {
  auto has = [&](const std::vector<std::string>& v) {
    return std::find(v.begin(), v.end(), controller) != v.end();
  };
  for (auto& e : self) {
    if (e.hierarchy_id == 0 || !has(e.controllers)) continue;
    for (auto& m : mounts)
      if (!m.v2 && has(m.options))
        if (auto o = join(m, e.path)) return o;
  }
  return std::nullopt;
}

bool file_exists(const stdfs::path& p) {
  return ::access(p.c_str(), F_OK) == 0;
}

Result<> ensure_dir(const stdfs::path& p) {
  if (::mkdir(p.c_str(), 0755) == 0 || errno == EEXIST) return {};
  return fail_errno("create cgroup", p.string());
}

std::vector<std::string> subdirs(const stdfs::path& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (e->d_type == DT_DIR && n != "." && n != "..") out.emplace_back(n);
  }
  ::closedir(d);
  return out;
}

std::vector<pid_t> procs_below(const stdfs::path& dir) {
  std::vector<pid_t> out;
  if (auto text = fs::read_file(dir / "cgroup.procs")) out = parse_pids(*text);
  for (auto& sub : subdirs(dir)) {
    auto more = procs_below(dir / sub);
    out.insert(out.end(), more.begin(), more.end());
  }
  return out;
}

void backoff_sleep(int round) {
  std::this_thread::sleep_for(std::chrono::microseconds(std::min(200 << std::min(round, 6), 10000)));
}

Result<> remove_cgroup_tree(const stdfs::path& dir) {
  for (auto& sub : subdirs(dir)) FNEXEC_TRY(remove_cgroup_tree(dir / sub));
  auto deadline = Clock::now() + std::chrono::seconds(2);
  for (int round = 0;; ++round) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return {};
    if (errno != EBUSY || Clock::now() > deadline) return fail_errno("remove cgroup", dir.string());
    backoff_sleep(round);
  }
}

Result<> check_id(std::string_view id) {
  if (valid_id(id)) return {};
  return fail(ErrorKind::invalid, "create cgroup for sandbox", "'" + std::string(id) + "'",
              "ids are 1-64 of [A-Za-z0-9_.-], not starting with '.'");
}

void subtract_counters(Usage& u, const Usage& base) {
  auto minus = [](std::optional<uint64_t>& v, const std::optional<uint64_t>& b) {
    if (v && b) v = *v >= *b ? *v - *b : 0;
  };
  minus(u.cpu_user_us, base.cpu_user_us);
  minus(u.cpu_system_us, base.cpu_system_us);
  minus(u.cpu_total_us, base.cpu_total_us);
  minus(u.oom_kills, base.oom_kills);
}

}  // namespace detail

namespace {

class NoSandboxCgroup final : public SandboxCgroup {
 public:
  int clone_into_fd() const override { return -1; }
  Result<> attach(pid_t) override { return {}; }
  Result<> baseline() override { return {}; }
  Result<Usage> usage() const override { return Usage{}; }
  // Without cgroups the launcher's pid-namespace kill is all there is.
  Result<> kill() override { return {}; }
  Result<> destroy() override { return {}; }
  std::string path() const override { return {}; }
  std::vector<std::string> paths() const override { return {}; }
};

class NoHierarchy final : public Hierarchy {
 public:
  explicit NoHierarchy(std::string reason) : reason_(std::move(reason)) {}
  Mode mode() const override { return Mode::disabled; }
  std::vector<std::string> controllers() const override { return {}; }
  std::vector<std::string> sandbox_parents() const override { return {}; }
  bool has_memory_peak() const override { return false; }
  Features features() const override { return {}; }
  Result<std::unique_ptr<SandboxCgroup>> create(std::string_view id, const Limits& limits) override {
    if (limits.memory_bytes || limits.cpus || limits.pids)
      return fail(ErrorKind::unavailable, "set limits for sandbox", std::string(id),
                  "cgroups are disabled (" + reason_ + "); drop --memory/--cpus/--pids-limit");
    return std::make_unique<NoSandboxCgroup>();
  }
  Result<int> remove_stale(const std::function<bool(const std::string&)>&) override { return 0; }

 private:
  std::string reason_;
};

}  // namespace

Result<std::shared_ptr<Hierarchy>> Hierarchy::detect(bool allow_disabled) {
  Options o;
  o.allow_disabled = allow_disabled;
  return detect(o);
}

Result<std::shared_ptr<Hierarchy>> Hierarchy::detect(const Options& options) {
  if (options.force_disabled) return std::make_shared<NoHierarchy>("--cgroups=disabled");
  if (!valid_id(options.prefix))
    return fail(ErrorKind::invalid, "use cgroup prefix", "'" + options.prefix + "'",
                "expected one path component of [A-Za-z0-9_.-]");
  auto self_text = FNEXEC_TRY(fs::read_file("/proc/self/cgroup"));
  auto mount_text = FNEXEC_TRY(fs::read_file("/proc/self/mountinfo"));
  auto self = FNEXEC_TRY(parse_proc_cgroup(self_text));
  auto mounts = parse_cgroup_mounts(mount_text);

  std::string v2_offer = "not mounted";
  if (auto own = detail::own_v2(self, mounts)) {
    auto ctrls = split_words(fs::read_file(own->dir / "cgroup.controllers").value_or(""));
    auto has = [&](const char* c) { return std::find(ctrls.begin(), ctrls.end(), c) != ctrls.end(); };
    if (has("memory") && has("cpu") && has("pids")) return detail::make_v2(*own, options);
    v2_offer = own->dir.string() + " offers [";
    for (size_t i = 0; i < ctrls.size(); ++i) v2_offer += (i ? " " : "") + ctrls[i];
    v2_offer += "]";
  }
  bool any_v1 = false;
  for (const char* c : {"memory", "cpu", "pids"})
    any_v1 = any_v1 || detail::own_v1(self, mounts, c).has_value();
  if (any_v1) return detail::make_v1(self, mounts, options);

  std::string reason =
      "cgroup v2 " + v2_offer + " (need memory cpu pids) and no v1 hierarchy mounts memory, cpu or pids";
  if (options.allow_disabled) return std::make_shared<NoHierarchy>(reason);
  return fail(ErrorKind::unavailable, "find usable cgroups", {},
              reason + "; mount them, or pass --cgroups=disabled to run without limits and accounting");
}

bool owner_is_gone(const std::string& sandbox_id) {
  auto first = sandbox_id.find('-');
  auto last = sandbox_id.rfind('-');
  if (first == std::string::npos || last <= first + 1) return false;
  auto digits = sandbox_id.substr(first + 1, last - first - 1);
  if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9) return false;
  auto pid = static_cast<pid_t>(std::stol(digits));
  return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH;
}

Result<> kill_and_remove_tree(const std::filesystem::path& dir) {
  if (!detail::file_exists(dir)) return {};
  auto deadline = detail::Clock::now() + detail::kKillDeadline;
  for (int round = 0;; ++round) {
    auto pids = detail::procs_below(dir);
    if (pids.empty()) break;
    if (detail::Clock::now() > deadline)
      return fail(
          ErrorKind::internal, "empty cgroup", dir.string(),
          "tasks still running " + std::to_string(detail::kKillDeadline.count()) + " s after SIGKILL");
    for (pid_t pid : pids) ::kill(pid, SIGKILL);
    detail::backoff_sleep(round);
  }
  return detail::remove_cgroup_tree(dir);
}

}  // namespace fnexec::cgroup
