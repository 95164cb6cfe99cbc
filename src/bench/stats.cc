#include "bench/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace fnexec::bench {

double percentile(std::span<const double> sorted, double p) {
  if (sorted.empty()) return 0;
  double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(sorted.size() - 1);
  auto lo = static_cast<size_t>(std::floor(rank));
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

Summary summarize(std::vector<double> samples_us) {
  Summary s;
  s.n = samples_us.size();
  if (samples_us.empty()) return s;
  std::sort(samples_us.begin(), samples_us.end());
  s.p50_us = percentile(samples_us, 50);
  s.p90_us = percentile(samples_us, 90);
  s.p99_us = percentile(samples_us, 99);
  s.max_us = samples_us.back();
  s.mean_us = std::accumulate(samples_us.begin(), samples_us.end(), 0.0) / static_cast<double>(s.n);
  return s;
}

double per_second(size_t invocations, double wall_seconds) {
  return wall_seconds > 0 ? static_cast<double>(invocations) / wall_seconds : 0;
}

}  // namespace fnexec::bench
