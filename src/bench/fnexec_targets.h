// fnexec's own modes as bench targets: cold (a fresh sandbox per invocation, the code path of
// `fnexec run`) and warm (a PoolSet hit in this process).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "bench/runner.h"
#include "image/store.h"
#include "util/error.h"

namespace fnexec::cgroup {
class Hierarchy;
}

namespace fnexec::bench {

struct FnexecFunction {
  image::ResolvedImage image;
  std::vector<std::string> argv;               // {"/bin/cat"}
  std::filesystem::path mount_dir;             // the sandboxes' private mount point
  std::shared_ptr<cgroup::Hierarchy> cgroups;  // nullptr: no cgroup (disabled)
};

Result<std::shared_ptr<Target>> make_cold_target(const FnexecFunction& fn);

// One pool per function, min_warm sandboxes parked each. ErrorKind::unavailable without warm pools.
Result<std::vector<std::shared_ptr<Target>>> make_warm_targets(image::Store& store,
                                                               const std::string& image_ref,
                                                               const std::vector<FnexecFunction>& functions,
                                                               unsigned min_warm);

}  // namespace fnexec::bench
