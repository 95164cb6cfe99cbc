// cgroup v1 backend: one hierarchy per mounted controller set (memory, cpu, cpuacct, pids, freezer);
// co-mounted controllers ("cpu,cpuacct") share one directory.
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <set>

#include "cgroup/backend.h"
#include "util/fs.h"
#include "util/unique_fd.h"

namespace fnexec::cgroup::detail {

namespace {

// Controllers fnexec uses on v1, in the order `fnexec info` lists them.
constexpr const char* kV1Controllers[] = {"memory", "cpu", "cpuacct", "pids", "freezer", "devices"};

// Per controller name: the directory (below the hierarchy's sandboxes/ dir) that carries it.
using ControllerDirs = std::map<std::string, stdfs::path>;

// A pointer, not a copy: the counters of a reuse sandbox look their directories up twice per event.
const stdfs::path* dir_of(const ControllerDirs& dirs, const char* controller) {
  auto it = dirs.find(controller);
  return it == dirs.end() ? nullptr : &it->second;
}

std::vector<stdfs::path> unique_dirs(const ControllerDirs& dirs) {
  std::set<stdfs::path> s;
  for (auto& [_, d] : dirs) s.insert(d);
  return {s.begin(), s.end()};
}

class V1Sandbox final : public SandboxCgroup {
 public:
  V1Sandbox(ControllerDirs dirs, Features features)
      : dirs_(std::move(dirs)), all_(unique_dirs(dirs_)), features_(std::move(features)) {}
  ~V1Sandbox() override {
    if (auto r = destroy(); !r)
      spdlog::error("event=cgroup_destroy_failed path={} error=\"{}\"", path(), r.error().message());
  }

  Result<> set_limits(const Limits& limits) {
    auto need = [&](const char* controller, const char* option) -> Result<stdfs::path> {
      if (auto d = dir_of(dirs_, controller)) return *d;
      return fail(ErrorKind::unavailable, std::string("set ") + option, path(),
                  std::string("the v1 ") + controller + " controller is not mounted on this host");
    };
    if (limits.memory_bytes) {
      auto d = FNEXEC_TRY(need("memory", "--memory"));
      auto v = std::to_string(*limits.memory_bytes);
      FNEXEC_TRY(fs::write_file(d / "memory.limit_in_bytes", v));
      // memsw = memory+swap; equal to the limit means no swap. Absent without swap accounting.
      if (features_.swap_limit) FNEXEC_TRY(fs::write_file(d / "memory.memsw.limit_in_bytes", v));
    }
    if (limits.cpus) {
      auto d = FNEXEC_TRY(need("cpu", "--cpus"));
      FNEXEC_TRY(fs::write_file(d / "cpu.cfs_period_us", std::to_string(kCpuPeriodUs)));
      FNEXEC_TRY(fs::write_file(d / "cpu.cfs_quota_us", std::to_string(cpu_quota_us(*limits.cpus))));
    }
    if (limits.pids) {
      auto d = FNEXEC_TRY(need("pids", "--pids-limit"));
      FNEXEC_TRY(fs::write_file(d / "pids.max", std::to_string(*limits.pids)));
    }
    // Device policy: the default set plus --device, everything else refused by the kernel.
    if (auto d = dir_of(dirs_, "devices")) {
      auto rules = std::vector<DeviceRule>(default_device_rules().begin(), default_device_rules().end());
      rules.insert(rules.end(), limits.devices.begin(), limits.devices.end());
      FNEXEC_TRY(write_v1_device_rules(d->string(), rules));
    } else if (!limits.devices.empty()) {
      FNEXEC_TRY(need("devices", "--device"));
    }
    return {};
  }

  int clone_into_fd() const override { return -1; }

  Result<> attach(pid_t pid) override {
    auto s = std::to_string(pid);
    for (auto& d : all_) FNEXEC_TRY(fs::write_file(d / "cgroup.procs", s));
    return {};
  }

  Result<> baseline() override {
    base_ = FNEXEC_TRY(raw_usage());
    has_base_ = true;
    // Writing 0 resets the high-water mark to the current usage.
    if (auto d = dir_of(dirs_, "memory")) {
      FNEXEC_TRY(counter(max_usage_, *d, "memory.max_usage_in_bytes"));
      if (max_usage_.fd && ::pwrite(max_usage_.fd.get(), "0", 1, 0) != 1)
        return fail_errno("write", (*d / "memory.max_usage_in_bytes").string());
    }
    return {};
  }

  Result<Usage> usage() const override {
    Usage u = FNEXEC_TRY(raw_usage());
    if (!has_base_) return u;
    subtract_counters(u, base_);
    return u;
  }

  Result<> kill() override {
    if (destroyed_) return {};
    // Usually called once PID 1 was reaped: an empty cgroup needs no freeze, and a freeze/thaw round
    // trip was about 1 ms of the cold path.
    if (is_empty()) return {};
    auto freezer = dir_of(dirs_, "freezer");
    // A crash during create() can leave a sandbox in some hierarchies only (remove_stale()).
    if (freezer && !file_exists(*freezer)) freezer = nullptr;
    if (freezer) {
      // Frozen tasks cannot fork, so one listing catches every process; SIGKILL lands when thawed.
      FNEXEC_TRY(fs::write_file(*freezer / "freezer.state", "FROZEN"));
      wait_frozen(*freezer);
    }
    kill_listed();
    if (freezer) FNEXEC_TRY(fs::write_file(*freezer / "freezer.state", "THAWED"));
    auto deadline = Clock::now() + kKillDeadline;
    for (int round = 0;; ++round) {
      if (is_empty()) return {};
      if (Clock::now() > deadline)
        return fail(ErrorKind::internal, "empty cgroup", path(),
                    "tasks still running " + std::to_string(kKillDeadline.count()) + " s after SIGKILL");
      // Without a freezer a fork bomb can outrun one pass: keep killing until the cgroup is empty.
      if (!freezer || round % 16 == 15) kill_listed();
      backoff_sleep(round);
    }
  }

  Result<> destroy() override {
    if (destroyed_) return {};
    for (auto* f : {&cpu_user_, &cpu_sys_, &cpu_total_, &max_usage_, &oom_control_}) *f = CounterFile{};
    if (!remove_if_empty()) {
      FNEXEC_TRY(kill());
      for (auto& d : all_) FNEXEC_TRY(remove_cgroup_tree(d));
    }
    destroyed_ = true;
    return {};
  }

  std::string path() const override {
    if (auto d = dir_of(dirs_, "memory")) return d->string();
    return all_.empty() ? std::string() : all_.front().string();
  }
  std::vector<std::string> paths() const override {
    std::vector<std::string> out;
    for (auto& d : all_) out.push_back(d.string());
    return out;
  }

 private:
  // The usual end of a sandbox: its processes are reaped and nothing was made below it. v1 refuses
  // rmdir of a cgroup with tasks or children (EBUSY), so trying it first replaces listing
  // cgroup.procs and the subdirectories of each hierarchy twice (kill()'s check, then the tree
  // walk): 12 directory reads and 6 file reads per sandbox. False at the first refusal; what was
  // removed by then is ENOENT, which kill() and remove_cgroup_tree() take as done.
  bool remove_if_empty() const {
    for (auto& d : all_)
      if (::rmdir(d.c_str()) != 0 && errno != ENOENT) return false;
    return true;
  }
  bool is_empty() const {
    for (auto& d : all_)
      if (!procs_below(d).empty()) return false;
    return true;
  }
  void kill_listed() const {
    for (auto& d : all_)
      for (pid_t p : procs_below(d)) ::kill(p, SIGKILL);
  }

  // FREEZING turns into FROZEN once every task reached the refrigerator; give up after a moment and
  // kill anyway (a task stuck in the kernel still gets the SIGKILL when thawed).
  static void wait_frozen(const stdfs::path& freezer) {
    for (int round = 0; round < 40; ++round) {
      auto s = fs::read_file(freezer / "freezer.state").value_or("");
      if (s.starts_with("FROZEN")) return;
      backoff_sleep(round);
    }
  }

  // A counter file, opened at its first read and kept: a reuse sandbox reads its counters twice per
  // event, and open+read+close of the five files was ~100 us of a ~130 us event on v1
  // (bench/pool_warm.cc --lifecycle). pread at offset 0 makes the kernel render the file anew.
  struct CounterFile {
    UniqueFd fd;
    bool missing = false;
    std::string text;
  };
  Result<> counter(CounterFile& f, const stdfs::path& dir, const char* name) const {
    if (f.fd || f.missing) return {};
    auto path = dir / name;  // only here: the path costs allocations, per read it was ~1% of the daemon's CPU
    f.fd.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!f.fd) f.fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!f.fd && errno != ENOENT) return fail_errno("open", path.string());
    f.missing = !f.fd;
    return {};
  }
  Result<std::optional<std::string_view>> read_counter(CounterFile& f, const stdfs::path& dir,
                                                       const char* name) const {
    FNEXEC_TRY(counter(f, dir, name));
    if (f.missing) return std::optional<std::string_view>{};
    char buf[4096];
    ssize_t n = ::pread(f.fd.get(), buf, sizeof buf, 0);
    if (n < 0) return fail_errno("read", (dir / name).string());
    f.text.assign(buf, static_cast<size_t>(n));
    return std::optional<std::string_view>(f.text);
  }

  Result<Usage> raw_usage() const {
    Usage u;
    if (auto d = dir_of(dirs_, "cpuacct")) {
      auto ns = [&](CounterFile& f, const char* name) -> Result<std::optional<uint64_t>> {
        auto text = FNEXEC_TRY(read_counter(f, *d, name));
        auto v = text ? single_value(*text) : std::nullopt;
        return v ? std::optional<uint64_t>(*v / 1000) : std::nullopt;
      };
      u.cpu_user_us = FNEXEC_TRY(ns(cpu_user_, "cpuacct.usage_user"));
      u.cpu_system_us = FNEXEC_TRY(ns(cpu_sys_, "cpuacct.usage_sys"));
      u.cpu_total_us = FNEXEC_TRY(ns(cpu_total_, "cpuacct.usage"));
    }
    if (auto d = dir_of(dirs_, "memory")) {
      auto peak = FNEXEC_TRY(read_counter(max_usage_, *d, "memory.max_usage_in_bytes"));
      if (!peak) return fail(ErrorKind::not_found, "read", (*d / "memory.max_usage_in_bytes").string());
      u.memory_peak_bytes = single_value(*peak);
      // "oom_kill N" arrived in 4.13; failcnt counts limit hits, not kills, so it is no substitute.
      auto oom = FNEXEC_TRY(read_counter(oom_control_, *d, "memory.oom_control"));
      if (!oom) return fail(ErrorKind::not_found, "read", (*d / "memory.oom_control").string());
      u.oom_kills = keyed_value(*oom, "oom_kill");
    }
    return u;
  }

  mutable CounterFile cpu_user_, cpu_sys_, cpu_total_, max_usage_, oom_control_;

  ControllerDirs dirs_;
  std::vector<stdfs::path> all_;
  Features features_;
  Usage base_;
  bool has_base_ = false;
  bool destroyed_ = false;
};

class V1Hierarchy final : public Hierarchy {
 public:
  // parents: controller → its hierarchy's ".../PREFIX/sandboxes" directory.
  V1Hierarchy(ControllerDirs parents, Features features)
      : parents_(std::move(parents)), features_(std::move(features)) {}

  Mode mode() const override { return Mode::v1; }
  std::vector<std::string> controllers() const override {
    std::vector<std::string> out;
    for (const char* c : kV1Controllers)
      if (parents_.contains(c)) out.emplace_back(c);
    return out;
  }
  std::vector<std::string> sandbox_parents() const override {
    std::vector<std::string> out;
    for (const char* c : kV1Controllers)
      if (auto d = dir_of(parents_, c); d && std::find(out.begin(), out.end(), d->string()) == out.end())
        out.push_back(d->string());
    return out;
  }
  bool has_memory_peak() const override { return features_.memory_peak; }
  Features features() const override { return features_; }

  Result<std::unique_ptr<SandboxCgroup>> create(std::string_view id, const Limits& limits) override {
    FNEXEC_TRY(check_id(id));
    ControllerDirs dirs;
    for (auto& [c, parent] : parents_) dirs[c] = parent / std::string(id);
    std::vector<stdfs::path> made;
    for (auto& d : unique_dirs(dirs)) {
      if (::mkdir(d.c_str(), 0755) != 0) {
        auto e = fail_errno("create cgroup", d.string());
        if (e.error().err == EEXIST) e.error().kind = ErrorKind::exists;
        for (auto& m : made) ::rmdir(m.c_str());
        return e;
      }
      made.push_back(d);
    }
    // From here the sandbox object owns the directories: any failure below removes them.
    auto sb = std::make_unique<V1Sandbox>(std::move(dirs), features_);
    FNEXEC_TRY(sb->set_limits(limits));
    return sb;
  }

  Result<int> remove_stale(const std::function<bool(const std::string&)>& which) override {
    std::set<std::string> names;
    for (auto& parent : unique_dirs(parents_))
      for (auto& n : subdirs(parent))
        if (!which || which(n)) names.insert(n);
    for (auto& name : names) {
      ControllerDirs dirs;
      for (auto& [c, parent] : parents_) dirs[c] = parent / name;
      V1Sandbox sb(std::move(dirs), features_);
      FNEXEC_TRY(sb.destroy());
    }
    return static_cast<int>(names.size());
  }

 private:
  ControllerDirs parents_;
  Features features_;
};

}  // namespace

Result<std::shared_ptr<Hierarchy>> make_v1(const std::vector<ProcCgroupEntry>& self,
                                           const std::vector<CgroupMount>& mounts, const Options& options) {
  ControllerDirs parents;
  for (const char* c : kV1Controllers)
    if (auto own = own_v1(self, mounts, c)) parents[c] = own->dir / options.prefix / "sandboxes";
  for (auto& d : unique_dirs(parents)) {
    FNEXEC_TRY(ensure_dir(d.parent_path()));
    FNEXEC_TRY(ensure_dir(d));
  }
  Features f;
  if (auto d = dir_of(parents, "memory")) {
    f.memory_peak = file_exists(*d / "memory.max_usage_in_bytes");
    f.memory_peak_resettable = f.memory_peak;
    if (f.memory_peak) f.memory_peak_file = "memory.max_usage_in_bytes";
    f.swap_limit = file_exists(*d / "memory.memsw.limit_in_bytes");
  }
  f.freezer = parents.contains("freezer");
  if (parents.contains("devices")) f.device_policy = "devices";
  return std::make_shared<V1Hierarchy>(std::move(parents), std::move(f));
}

}  // namespace fnexec::cgroup::detail
