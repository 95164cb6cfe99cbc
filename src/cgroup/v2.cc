// cgroup v2 backend: one unified hierarchy, controllers enabled top-down through subtree_control.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <mutex>

#include "cgroup/backend.h"
#include "util/fs.h"

namespace fnexec::cgroup::detail {

namespace {

class V2Sandbox final : public SandboxCgroup {
 public:
  V2Sandbox(stdfs::path dir, UniqueFd dirfd, Features features)
      : dir_(std::move(dir)), dirfd_(std::move(dirfd)), features_(std::move(features)) {}
  ~V2Sandbox() override {
    if (auto r = destroy(); !r)
      spdlog::error("event=cgroup_destroy_failed path={} error=\"{}\"", dir_.string(), r.error().message());
  }

  Result<> set_limits(const Limits& limits) {
    if (limits.memory_bytes) {
      FNEXEC_TRY(fs::write_file(dir_ / "memory.max", std::to_string(*limits.memory_bytes)));
      // Without this the limit only moves the overflow to swap instead of stopping the function.
      if (features_.swap_limit) FNEXEC_TRY(fs::write_file(dir_ / "memory.swap.max", "0"));
    }
    if (limits.cpus) FNEXEC_TRY(fs::write_file(dir_ / "cpu.max", format_cpu_max(*limits.cpus)));
    if (limits.pids) FNEXEC_TRY(fs::write_file(dir_ / "pids.max", std::to_string(*limits.pids)));
    return {};
  }

  // v2 has no device files: a BPF program on the cgroup is the device policy.
  Result<> set_device_program(int program_fd) {
    return attach_device_program(dirfd_.get(), program_fd, dir_.string());
  }

  int clone_into_fd() const override { return dirfd_.get(); }

  Result<> attach(pid_t pid) override { return fs::write_file(dir_ / "cgroup.procs", std::to_string(pid)); }

  Result<> baseline() override {
    base_ = FNEXEC_TRY(raw_usage());
    has_base_ = true;
    peak_fd_.reset();
    if (features_.memory_peak_resettable) {
      // 6.12+: a write to memory.peak resets the peak seen through that same fd only.
      UniqueFd fd(::open((dir_ / "memory.peak").c_str(), O_RDWR | O_CLOEXEC));
      if (fd && ::write(fd.get(), "reset", 5) == 5) peak_fd_ = std::move(fd);
    }
    return {};
  }

  Result<Usage> usage() const override {
    Usage u = FNEXEC_TRY(raw_usage());
    if (!has_base_) return u;
    subtract_counters(u, base_);
    if (u.memory_peak_bytes && !peak_fd_) u.memory_peak_includes_setup = true;
    return u;
  }

  Result<> kill() override {
    if (destroyed_) return {};
    if (features_.cgroup_kill) {
      FNEXEC_TRY(fs::write_file(dir_ / "cgroup.kill", "1"));
    } else {
      // Before 5.14: freeze so nothing forks between listing and killing; SIGKILL wakes frozen tasks.
      if (features_.freezer) FNEXEC_TRY(fs::write_file(dir_ / "cgroup.freeze", "1"));
      for (pid_t p : procs_below(dir_)) ::kill(p, SIGKILL);
      if (features_.freezer) FNEXEC_TRY(fs::write_file(dir_ / "cgroup.freeze", "0"));
    }
    return wait_unpopulated();
  }

  Result<> destroy() override {
    if (destroyed_) return {};
    FNEXEC_TRY(kill());
    peak_fd_.reset();
    dirfd_.reset();
    FNEXEC_TRY(remove_cgroup_tree(dir_));
    destroyed_ = true;
    return {};
  }

  std::string path() const override { return dir_.string(); }
  std::vector<std::string> paths() const override { return {dir_.string()}; }

 private:
  Result<Usage> raw_usage() const {
    Usage u;
    auto cpu = FNEXEC_TRY(fs::read_file(dir_ / "cpu.stat"));
    u.cpu_total_us = keyed_value(cpu, "usage_usec");
    u.cpu_user_us = keyed_value(cpu, "user_usec");
    u.cpu_system_us = keyed_value(cpu, "system_usec");
    if (peak_fd_) {
      char buf[64];
      ssize_t n = ::pread(peak_fd_.get(), buf, sizeof buf - 1, 0);
      if (n < 0) return fail_errno("read", (dir_ / "memory.peak").string());
      u.memory_peak_bytes = single_value(std::string_view(buf, static_cast<size_t>(n)));
    } else if (features_.memory_peak) {
      u.memory_peak_bytes = single_value(FNEXEC_TRY(fs::read_file(dir_ / "memory.peak")));
    }
    u.oom_kills = keyed_value(FNEXEC_TRY(fs::read_file(dir_ / "memory.events")), "oom_kill");
    return u;
  }

  // cgroup.events signals POLLPRI when "populated" changes, so this sleeps until the last task is gone.
  Result<> wait_unpopulated() const {
    auto events_path = dir_ / "cgroup.events";
    UniqueFd fd(::open(events_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return fail_errno("open", events_path.string());
    auto deadline = Clock::now() + kKillDeadline;
    for (;;) {
      char buf[256];
      ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
      if (n < 0) return fail_errno("read", events_path.string());
      if (keyed_value(std::string_view(buf, static_cast<size_t>(n)), "populated") == 0) return {};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0)
        return fail(ErrorKind::internal, "empty cgroup", dir_.string(),
                    "tasks still running " + std::to_string(kKillDeadline.count()) + " s after SIGKILL");
      pollfd p{fd.get(), POLLPRI, 0};
      // Bounded poll: a notification between pread and poll is not queued for us.
      ::poll(&p, 1, static_cast<int>(std::min<long>(left, 50)));
    }
  }

  stdfs::path dir_;
  UniqueFd dirfd_;
  UniqueFd peak_fd_;
  Features features_;
  Usage base_;
  bool has_base_ = false;
  bool destroyed_ = false;
};

class V2Hierarchy final : public Hierarchy {
 public:
  V2Hierarchy(stdfs::path base, Features features, UniqueFd default_devices)
      : base_(std::move(base)), features_(std::move(features)), default_devices_(std::move(default_devices)) {}

  Mode mode() const override { return Mode::v2; }
  std::vector<std::string> controllers() const override {
    return split_words(fs::read_file(base_ / "sandboxes" / "cgroup.subtree_control").value_or(""));
  }
  std::vector<std::string> sandbox_parents() const override { return {(base_ / "sandboxes").string()}; }
  bool has_memory_peak() const override { return features_.memory_peak; }
  Features features() const override { return features_; }

  Result<std::unique_ptr<SandboxCgroup>> create(std::string_view id, const Limits& limits) override {
    FNEXEC_TRY(check_id(id));
    auto dir = base_ / "sandboxes" / std::string(id);
    if (::mkdir(dir.c_str(), 0755) != 0) {
      auto e = fail_errno("create cgroup", dir.string());
      if (e.error().err == EEXIST) e.error().kind = ErrorKind::exists;
      return e;
    }
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) {
      auto e = fail_errno("open cgroup", dir.string());
      ::rmdir(dir.c_str());
      return e;
    }
    // From here the sandbox object owns the directory: any failure below removes it.
    auto sb = std::make_unique<V2Sandbox>(dir, std::move(fd), features_);
    FNEXEC_TRY(sb->set_limits(limits));
    if (!limits.devices.empty()) {
      // A program of its own for a sandbox with --device; the attachment keeps it, the fd can go.
      auto rules = std::vector<DeviceRule>(default_device_rules().begin(), default_device_rules().end());
      rules.insert(rules.end(), limits.devices.begin(), limits.devices.end());
      auto program = FNEXEC_TRY(load_device_program(rules));
      FNEXEC_TRY(sb->set_device_program(program.get()));
    } else if (default_devices_) {
      FNEXEC_TRY(sb->set_device_program(default_devices_.get()));
    }
    return sb;
  }

  Result<int> remove_stale(const std::function<bool(const std::string&)>& which) override {
    int n = 0;
    for (auto& name : subdirs(base_ / "sandboxes")) {
      if (which && !which(name)) continue;
      auto dir = base_ / "sandboxes" / name;
      UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!fd) continue;
      V2Sandbox sb(dir, std::move(fd), features_);
      FNEXEC_TRY(sb.destroy());
      ++n;
    }
    return n;
  }

 private:
  stdfs::path base_;
  Features features_;
  UniqueFd default_devices_;  // the default policy's program, loaded once, attached to every sandbox
};

Features probe_features(const stdfs::path& leaf) {
  Features f;
  f.memory_peak = file_exists(leaf / "memory.peak");
  if (f.memory_peak) {
    f.memory_peak_file = "memory.peak";
    // Before 6.12 memory.peak has no write handler; root may still open it for writing, so only a
    // real write tells. The reset is per fd and this fd is closed at once: nothing else is affected.
    UniqueFd fd(::open((leaf / "memory.peak").c_str(), O_RDWR | O_CLOEXEC));
    f.memory_peak_resettable = fd && ::write(fd.get(), "reset", 5) == 5;
  }
  f.swap_limit = file_exists(leaf / "memory.swap.max");
  f.cgroup_kill = file_exists(leaf / "cgroup.kill");
  f.freezer = file_exists(leaf / "cgroup.freeze");
  utsname u{};
  ::uname(&u);
  auto v = kernel_major_minor(u.release);
  f.clone_into_cgroup = v && *v >= std::pair{5, 7};
  return f;
}

}  // namespace

Result<std::shared_ptr<Hierarchy>> make_v2(const OwnCgroup& own, const Options& options) {
  // A child of fnexec (or a second fnexec started by it) already sits in OWN/X/supervisor: reuse X.
  stdfs::path top = own.dir, base = own.dir / options.prefix;
  if (own.dir.filename() == "supervisor" && own.dir != own.mount_point &&
      file_exists(own.dir.parent_path() / "sandboxes")) {
    base = own.dir.parent_path();
    top = base.parent_path();
  }
  FNEXEC_TRY(ensure_dir(base));
  FNEXEC_TRY(ensure_dir(base / "supervisor"));
  FNEXEC_TRY(ensure_dir(base / "sandboxes"));
  // No-internal-processes rule: a cgroup that hands controllers to its children may hold no tasks,
  // so we leave OWN for a leaf before enabling controllers below OWN.
  FNEXEC_TRY(fs::write_file(base / "supervisor" / "cgroup.procs", "0"));
  const char* enable = "+memory +cpu +pids";
  for (const auto& dir : {top, base, base / "sandboxes"}) {
    if (auto r = fs::write_file(dir / "cgroup.subtree_control", enable); !r) {
      if (r.error().err == EBUSY)
        r.error().detail =
            "other processes still live in this cgroup; start fnexec in a cgroup of its own (a service "
            "with Delegate=yes, or systemd-run --scope -p Delegate=yes fnexec ...)";
      return std::unexpected(r.error());
    }
  }
  auto features = probe_features(base / "supervisor");
  // Loaded once per process (~one bpf() call); a kernel without CONFIG_CGROUP_BPF runs sandboxes
  // with the mount-level defences only (nodev everywhere but fnexec's /dev), and says so.
  auto devices = load_device_program(default_device_rules());
  if (devices) {
    features.device_policy = "bpf";
  } else {
    static std::once_flag warned;
    std::call_once(warned, [&] {
      spdlog::warn("event=device_policy_unavailable error=\"{}\"", devices.error().message());
    });
  }
  return std::make_shared<V2Hierarchy>(base, std::move(features),
                                       devices ? std::move(*devices) : UniqueFd{});
}

}  // namespace fnexec::cgroup::detail
