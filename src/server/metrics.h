// Counters for GET /metrics, rendered in the Prometheus text exposition format (version 0.0.4).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pool/pool.h"
#include "server/api.h"

namespace fnexec::server {

// Upper bounds (seconds) of fnexec_invocation_duration_seconds; +Inf is implied.
inline constexpr std::array<double, 16> kDurationBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

struct DurationHistogram {
  std::array<uint64_t, kDurationBuckets.size()> buckets{};  // not cumulative: one bucket per observation
  uint64_t count = 0;
  double sum_seconds = 0;
  void observe(double seconds);
};

// Upper bounds of fnexec_sandbox_events (events a sandbox served before it was retired).
inline constexpr std::array<double, 10> kSandboxEventBuckets = {1, 2, 5, 10, 100, 1000, 10000, 100000, 1e6, 1e7};

struct CountHistogram {
  std::array<uint64_t, kSandboxEventBuckets.size()> buckets{};  // not cumulative
  uint64_t count = 0;
  double sum = 0;
  void observe(double v);
};

// What the daemon counted since it started, plus the gauges it samples when scraped.
struct MetricsSnapshot {
  std::map<std::pair<std::string, std::string>, uint64_t> invocations;  // (function, outcome) → count
  uint64_t warm_starts = 0;
  uint64_t cold_starts = 0;
  std::map<std::string, DurationHistogram, std::less<>> durations;  // by function
  std::vector<pool::PoolStats> pools;
  std::string cgroup_mode;  // v2, v1, disabled
  uint64_t async_queued = 0;
  // fresh/reuse sandboxes, as invocation results report them.
  std::map<std::string, std::string, std::less<>> lifecycles;  // function → lifecycle (sampled)
  std::map<std::string, DurationHistogram, std::less<>> init_durations;  // by function
  std::map<std::string, CountHistogram, std::less<>> sandbox_events;    // at retirement, by function
  std::map<std::pair<std::string, std::string>, uint64_t> retirements;  // (function, reason) → count
};

class Metrics {
 public:
  void count(std::string_view function, Outcome outcome);
  // A finished invocation: its start kind and wall time.
  void observe(std::string_view function, pool::StartKind start, uint64_t wall_us);
  // A fresh/reuse result: the sandbox's init (on its first event) and its retirement.
  void observe_sandbox(std::string_view function, const pool::InvocationResult& result);
  MetricsSnapshot snapshot() const;

 private:
  mutable std::mutex mu_;
  MetricsSnapshot counters_;
};

std::string format_prometheus(const MetricsSnapshot& m);

// Label value escaping of the text format: backslash, double quote and newline.
std::string escape_label(std::string_view v);

}  // namespace fnexec::server
