// Stand-in while the warm pools (src/pool) are not merged: fnexec bench lists warm as skipped.
#include "bench/bench_features.h"
#include "bench/fnexec_targets.h"

namespace fnexec::bench {

#if !FNEXEC_BENCH_HAS_POOL
Result<std::vector<std::shared_ptr<Target>>> make_warm_targets(image::Store&, const std::string&,
                                                               const std::vector<FnexecFunction>&, unsigned) {
  return fail(ErrorKind::unavailable, "run fnexec warm", {}, "this build has no warm pools (src/pool)");
}
#endif

}  // namespace fnexec::bench
