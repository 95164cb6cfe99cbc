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

// What the daemon counted since it started, plus the gauges it samples when scraped.
struct MetricsSnapshot {
  std::map<std::pair<std::string, std::string>, uint64_t> invocations;  // (function, outcome) → count
  uint64_t warm_starts = 0;
  uint64_t cold_starts = 0;
  std::map<std::string, DurationHistogram, std::less<>> durations;  // by function
  std::vector<pool::PoolStats> pools;
  std::string cgroup_mode;  // v2, v1, disabled
  uint64_t async_queued = 0;
};

class Metrics {
 public:
  void count(std::string_view function, Outcome outcome);
  // A finished invocation: its start kind and wall time.
  void observe(std::string_view function, pool::StartKind start, uint64_t wall_us);
  MetricsSnapshot snapshot() const;

 private:
  mutable std::mutex mu_;
  MetricsSnapshot counters_;
};

std::string format_prometheus(const MetricsSnapshot& m);

// Label value escaping of the text format: backslash, double quote and newline.
std::string escape_label(std::string_view v);

}  // namespace fnexec::server
