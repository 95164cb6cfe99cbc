// Runs every target interleaved (A B C A B C ...) so drift on the machine hits all of them alike,
// at each concurrency level, timing each invocation from event handed over to result read.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench/report.h"
#include "util/error.h"

namespace fnexec::bench {

// One way of running a function: fnexec cold/warm, or a peer. invoke() may be called from several
// threads at once; slot is the calling thread's index (0 .. concurrency-1), stable for its batch.
class Target {
 public:
  virtual ~Target() = default;
  // Hands the event to the function and collects its stdout into output (cleared first).
  virtual Result<> invoke(std::string_view event, std::string& output, unsigned slot) = 0;
  // Untimed, before each batch (warm pools refill here).
  virtual void before_batch() {}
  // Anything the reader of the results must know (pool misses), or empty.
  virtual std::string remarks() const { return {}; }
};

struct Entry {
  std::string system, mode, function;
  std::shared_ptr<Target> target;
  std::string expected_output;      // checked byte for byte; a mismatch counts as a failure
  unsigned max_concurrency = 1024;  // levels above it are not run for this entry
};

struct RunPlan {
  unsigned runs = 100;
  unsigned warmup = 5;
  std::vector<unsigned> concurrency{1};
  std::string event;
  // Called after each batch with a short status line (progress on stderr).
  std::function<void(std::string_view)> progress;
};

// The most invocations one batch of run_interleaved() makes of one entry, at any level: a pool
// whose sandboxes serve one event each (fresh) needs that many parked to serve a batch warm.
unsigned largest_batch(const RunPlan& plan);

// Entries whose warm-up all failed are dropped from the results and reported in skipped.
std::vector<Series> run_interleaved(const std::vector<Entry>& entries, const RunPlan& plan,
                                    std::vector<Skipped>& skipped);

}  // namespace fnexec::bench
