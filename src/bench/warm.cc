// fnexec warm: an invocation served from a pool of parked sandboxes in this process (PoolSet),
// in any lifecycle (oneshot: warm, fresh, reuse).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <thread>

#include "bench/fnexec_targets.h"
#include "cgroup/cgroup.h"
#include "pool/pool.h"
#include "util/fs.h"

namespace fnexec::bench {

namespace {

class WarmTarget final : public Target {
 public:
  WarmTarget(std::shared_ptr<pool::PoolSet> pools, std::string name, uint32_t min_warm)
      : pools_(std::move(pools)), name_(std::move(name)), min_warm_(min_warm) {}

  Result<> invoke(std::string_view event, std::string& output, unsigned) override {
    auto r = FNEXEC_TRY(pools_->invoke(name_, event));
    if (r.start != pool::StartKind::warm) ++misses_;
    output = std::move(r.output);
    if (r.record.setup_error) return std::unexpected(*r.record.setup_error);
    if (!r.error_type.empty())
      return fail(ErrorKind::internal, "invoke", name_,
                  fmt::format("{}: {}", r.error_type, r.error_body.value_or(r.log)));
    if (r.record.exit_code != 0)
      return fail(ErrorKind::internal, "invoke", name_, fmt::format("exit code {}", r.record.exit_code));
    return {};
  }

  void before_batch() override {
    // Each batch starts from a full pool: warm means a parked sandbox is there to take. A fresh
    // pool refills a whole batch of runtimes' inits, hence the long limit.
    for (int i = 0; i < 30000; ++i) {
      for (const auto& s : pools_->stats())
        if (s.function == name_ && s.warm >= min_warm_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  std::string remarks() const override {
    uint64_t m = misses_;
    return m ? fmt::format("{} invocations missed the pool and started cold", m) : std::string();
  }

 private:
  std::shared_ptr<pool::PoolSet> pools_;
  std::string name_;
  uint32_t min_warm_;
  std::atomic<uint64_t> misses_{0};
};

}  // namespace

Result<std::shared_ptr<pool::PoolSet>> make_pool_set(image::Store& store,
                                                     std::shared_ptr<cgroup::Hierarchy> cgroups) {
  pool::PoolSetOptions options;
  options.max_sandboxes = 1024;  // pools for every function and lifecycle of a run
  std::shared_ptr<pool::PoolSet> pools = FNEXEC_TRY(pool::PoolSet::create(store, std::move(cgroups), options));
  return pools;
}

Result<std::vector<std::shared_ptr<Target>>> make_warm_targets(std::shared_ptr<pool::PoolSet> pools,
                                                               const std::string& image_ref,
                                                               const std::vector<FnexecFunction>& functions,
                                                               unsigned min_warm, pool::Lifecycle lifecycle) {
  std::vector<std::shared_ptr<Target>> out;
  for (const auto& fn : functions) {
    pool::FunctionSpec spec;
    spec.name = "bench-" + fn.name;
    if (lifecycle != pool::Lifecycle::oneshot) spec.name += "-" + std::string(pool::to_string(lifecycle));
    spec.lifecycle = lifecycle;
    spec.image = image_ref;
    spec.entrypoint = fn.argv;
    spec.cmd = std::vector<std::string>{};
    spec.min_warm = min_warm;
    spec.max_concurrency = std::max(16u, 2 * min_warm);
    spec.timeout = std::chrono::seconds(30);
    FNEXEC_TRY(pools->configure(spec));
    out.push_back(std::make_shared<WarmTarget>(pools, spec.name, min_warm));
  }
  return out;
}

namespace {

uint64_t kib_field(const std::string& file, std::string_view key) {
  auto text = fs::read_file(file);
  if (!text) return 0;
  auto p = text->find(std::string(key) + ":");
  return p == std::string::npos ? 0 : std::strtoull(text->c_str() + p + key.size() + 1, nullptr, 10);
}

uint64_t number_in(const std::filesystem::path& file) {
  auto text = fs::read_file(file);
  return text ? std::strtoull(text->c_str(), nullptr, 10) : 0;
}

}  // namespace

Result<ParkedMemory> measure_parked_memory(pool::PoolSet& pools, const std::string& image_ref,
                                           const FnexecFunction& fn, unsigned sandboxes) {
  if (!fn.cgroups)
    return fail(ErrorKind::unavailable, "measure parked memory of", fn.name, "cgroups are disabled");
  // Sandboxes of this process that exist already (another measurement's, still being removed).
  std::string prefix = fmt::format("pool-{}-", ::getpid());
  auto ours = [&](const std::filesystem::path& parent) {
    std::vector<std::filesystem::path> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(parent, ec))
      if (e.is_directory() && e.path().filename().string().starts_with(prefix)) out.push_back(e.path());
    return out;
  };
  std::vector<std::filesystem::path> before;
  for (const auto& parent : fn.cgroups->sandbox_parents()) {
    auto dirs = ours(parent);
    before.insert(before.end(), dirs.begin(), dirs.end());
  }
  pool::FunctionSpec spec;
  spec.name = "bench-memory-" + fn.name;
  spec.image = image_ref;
  spec.entrypoint = fn.argv;
  spec.cmd = std::vector<std::string>{};
  spec.min_warm = sandboxes;
  spec.max_concurrency = std::max(16u, sandboxes);
  spec.lifecycle = pool::Lifecycle::fresh;
  FNEXEC_TRY(pools.configure(spec));
  // Removed on every path below, parked sandboxes and all.
  std::unique_ptr<pool::PoolSet, std::function<void(pool::PoolSet*)>> removal(
      &pools, [&](pool::PoolSet* p) { p->remove(spec.name); });
  for (int i = 0; i < 60000; ++i) {
    bool full = false;
    for (const auto& s : pools.stats()) {
      if (s.function != spec.name) continue;
      if (s.init_failures > 0) return fail(ErrorKind::unavailable, "park", spec.name, "its init failed");
      full = s.warm >= sandboxes;
    }
    if (full) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Let the runtimes settle after READY (lazy page faults, a GC after the import).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ParkedMemory m;
  m.function = fn.name;
  double rss = 0, pss = 0, cg = 0;
  for (const auto& parent : fn.cgroups->sandbox_parents()) {
    bool v1_memory = std::filesystem::exists(std::filesystem::path(parent) / "memory.usage_in_bytes");
    bool v2 = std::filesystem::exists(std::filesystem::path(parent) / "cgroup.controllers");
    if (!v1_memory && !v2) continue;
    for (const auto& dir : ours(parent)) {
      if (std::find(before.begin(), before.end(), dir) != before.end()) continue;
      auto procs = fs::read_file(dir / "cgroup.procs");
      if (!procs || procs->empty()) continue;
      ++m.sandboxes;
      cg += static_cast<double>(number_in(dir / (v1_memory ? "memory.usage_in_bytes" : "memory.current"))) / 1024;
      for (char* p = procs->data(); *p;) {
        char* end = nullptr;
        long pid = std::strtol(p, &end, 10);
        if (end == p) break;
        p = end;
        ++m.processes;
        auto smaps = fmt::format("/proc/{}/smaps_rollup", pid);
        rss += static_cast<double>(kib_field(smaps, "Rss"));
        pss += static_cast<double>(kib_field(smaps, "Pss"));
      }
    }
  }
  if (m.sandboxes == 0)
    return fail(ErrorKind::unavailable, "measure parked memory of", fn.name, "no parked sandbox cgroup found");
  m.rss_kib = rss / m.sandboxes;
  m.pss_kib = pss / m.sandboxes;
  m.cgroup_kib = cg / m.sandboxes;
  return m;
}

}  // namespace fnexec::bench
