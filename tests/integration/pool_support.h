// Shared by the pool and lifecycle suites: a function's stats, waiting for a condition, one invoke,
// the suite's own cgroup layout and what a PoolSet could leak.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "cgroup/cgroup.h"
#include "pool/pool.h"
#include "support/fixtures.h"

namespace fnexec::test {

inline pool::PoolStats stats_of(const pool::PoolSet& pools, const std::string& name) {
  for (auto& s : pools.stats())
    if (s.function == name) return s;
  return {};
}

// Polls cond every 10 ms, for up to 30 s.
inline bool wait_for(const std::function<bool()>& cond) {
  for (int i = 0; i < 3000; ++i) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

inline pool::InvocationResult invoke(pool::PoolSet& pools, const std::string& name, std::string_view event) {
  auto r = pools.invoke(name, event);
  REQUIRE_MESSAGE(r, r.error().message());
  return std::move(*r);
}

// The suite's own cgroup layout (OWN/prefix), removed with everything below it when the suite ends.
inline std::shared_ptr<cgroup::Hierarchy> suite_cgroups(const std::string& prefix) {
  cgroup::Options o;
  o.prefix = prefix;
  auto h = cgroup::Hierarchy::detect(o);
  REQUIRE_MESSAGE(h, h.error().message());
  return *h;
}

// What a PoolSet could leave behind: fds, processes, its sandbox cgroups (pool-<our pid>-*) and
// mounts below the suite's scratch tree.
struct PoolLeaks {
  explicit PoolLeaks(std::filesystem::path scratch) : scratch_(std::move(scratch)) {}
  static size_t pool_cgroups() { return count_cgroups_named("pool-" + std::to_string(::getpid()) + "-"); }
  void check_same() const {
    auto now = ResourceSnapshot::take();
    CHECK(now.fds == snapshot_.fds);
    CHECK(now.processes == snapshot_.processes);
    CHECK(pool_cgroups() == cgroups_);
    CHECK(count_mounts_below(scratch_) == mounts_);
  }

 private:
  std::filesystem::path scratch_;
  ResourceSnapshot snapshot_ = ResourceSnapshot::take();
  size_t cgroups_ = pool_cgroups();
  size_t mounts_ = count_mounts_below(scratch_);
};

}  // namespace fnexec::test
