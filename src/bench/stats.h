// Latency statistics of one series of samples: percentiles, max, mean, invocations per second.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace fnexec::bench {

struct Summary {
  size_t n = 0;
  double p50_us = 0, p90_us = 0, p99_us = 0, max_us = 0, mean_us = 0;
};

// Percentile p (0..100) of ascending samples by linear interpolation between closest ranks
// (numpy's default), so p50 of an even count is the midpoint of the two middle samples. 0 when empty.
double percentile(std::span<const double> sorted, double p);

Summary summarize(std::vector<double> samples_us);

// Invocations completed per second of wall time; 0 when nothing was timed.
double per_second(size_t invocations, double wall_seconds);

}  // namespace fnexec::bench
