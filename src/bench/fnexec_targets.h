// fnexec's own modes as bench targets: cold (a fresh sandbox per invocation, the code path of
// `fnexec run`) and warm (a PoolSet hit in this process).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "bench/runner.h"
#include "image/store.h"
#include "pool/pool.h"
#include "util/error.h"

namespace fnexec::cgroup {
class Hierarchy;
}

namespace fnexec::bench {

struct FnexecFunction {
  std::string name;  // true, cat, python, node, c
  image::ResolvedImage image;
  std::vector<std::string> argv;               // {"/bin/cat"}
  std::filesystem::path mount_dir;             // the sandboxes' private mount point
  std::shared_ptr<cgroup::Hierarchy> cgroups;  // nullptr: no cgroup (disabled)
};

Result<std::shared_ptr<Target>> make_cold_target(const FnexecFunction& fn);

// The PoolSet of every warm target and measurement in a run: sandbox cgroups are named
// pool-<pid>-<n> with n counted per PoolSet, so two PoolSets in one process would collide.
Result<std::shared_ptr<pool::PoolSet>> make_pool_set(image::Store& store,
                                                     std::shared_ptr<cgroup::Hierarchy> cgroups);

// One pool per function in pools, min_warm sandboxes parked each, with the given lifecycle (fresh,
// reuse: parked means initialized, READY received).
Result<std::vector<std::shared_ptr<Target>>> make_warm_targets(std::shared_ptr<pool::PoolSet> pools,
                                                               const std::string& image_ref,
                                                               const std::vector<FnexecFunction>& functions,
                                                               unsigned min_warm, pool::Lifecycle lifecycle);

// Host memory of parked, pre-initialized sandboxes of one function (lifecycle fresh: READY sent,
// no event yet), from a pool in pools filled to `sandboxes` and removed again: the sandboxes'
// processes (RSS and PSS from smaps_rollup) and their memory cgroups (usage_in_bytes on v1,
// memory.current on v2). Run it before other pools of pools start sandboxes.
struct ParkedMemory {
  std::string function;
  unsigned sandboxes = 0, processes = 0;
  double rss_kib = 0, pss_kib = 0, cgroup_kib = 0;  // per sandbox
};
Result<ParkedMemory> measure_parked_memory(pool::PoolSet& pools, const std::string& image_ref,
                                           const FnexecFunction& fn, unsigned sandboxes);

}  // namespace fnexec::bench
