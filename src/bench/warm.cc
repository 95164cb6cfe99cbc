// fnexec warm: an invocation served from a pool of parked sandboxes in this process (PoolSet).
#include <fmt/format.h>

#include <atomic>
#include <thread>

#include "bench/fnexec_targets.h"
#include "pool/pool.h"

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
    if (r.record.exit_code != 0)
      return fail(ErrorKind::internal, "invoke", name_, fmt::format("exit code {}", r.record.exit_code));
    return {};
  }

  void before_batch() override {
    // Each batch starts from a full pool: warm means a parked sandbox is there to take.
    for (int i = 0; i < 2000; ++i) {
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

Result<std::vector<std::shared_ptr<Target>>> make_warm_targets(image::Store& store,
                                                               const std::string& image_ref,
                                                               const std::vector<FnexecFunction>& functions,
                                                               unsigned min_warm) {
  std::shared_ptr<cgroup::Hierarchy> cgroups = functions.empty() ? nullptr : functions.front().cgroups;
  std::shared_ptr<pool::PoolSet> pools =
      FNEXEC_TRY(pool::PoolSet::create(store, cgroups, pool::PoolSetOptions{}));
  std::vector<std::shared_ptr<Target>> out;
  for (const auto& fn : functions) {
    pool::FunctionSpec spec;
    spec.name = "bench-" + fn.argv.back().substr(fn.argv.back().rfind('/') + 1);
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

}  // namespace fnexec::bench
