// Stand-ins while the launcher (branch sandbox) and the warm pools (src/pool) are not merged.
#include "bench/bench_features.h"
#include "bench/fnexec_targets.h"

namespace fnexec::bench {

#if !FNEXEC_BENCH_HAS_LAUNCHER
Result<std::shared_ptr<Target>> make_cold_target(const FnexecFunction&) {
  return fail(ErrorKind::unavailable, "run fnexec cold", {},
              "this build has no sandbox launcher (src/sandbox/launcher.cc)");
}
#endif

#if !FNEXEC_BENCH_HAS_POOL
Result<std::vector<std::shared_ptr<Target>>> make_warm_targets(image::Store&, const std::string&,
                                                               const std::vector<FnexecFunction>&, unsigned) {
  return fail(ErrorKind::unavailable, "run fnexec warm", {}, "this build has no warm pools (src/pool)");
}
#endif

}  // namespace fnexec::bench
