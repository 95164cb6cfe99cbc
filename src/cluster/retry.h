// A function's async delivery policy as the cluster applies it (JetStream MaxDeliver, NakWithDelay).
// The single place that reads the retry fields of a function spec: `retries` and `retry_backoff`
// come with the local retry policy (branch retry-dlq, pool::FunctionSpec::retries/retry_backoff and
// pool::retry_delay); until those fields exist this applies their documented defaults.
#pragma once

#include <chrono>
#include <cstdint>

#include "pool/pool.h"

namespace fnexec::cluster {

struct RetryPolicy {
  uint32_t retries = 2;  // Lambda's async default: at most 3 deliveries
  std::chrono::milliseconds initial{1000};
  double multiplier = 2;
  std::chrono::milliseconds max{60000};
  uint64_t max_deliveries() const { return uint64_t{retries} + 1; }
  // The wait before the next delivery after delivery `failed` (1-based) failed.
  std::chrono::milliseconds delay_after(uint64_t failed) const {
    double ms = static_cast<double>(initial.count());
    for (uint64_t i = 1; i < failed && ms < static_cast<double>(max.count()); ++i) ms *= multiplier;
    return std::chrono::milliseconds(static_cast<int64_t>(std::min(ms, static_cast<double>(max.count()))));
  }
};

inline RetryPolicy retry_policy(const pool::FunctionSpec&) {
  return {};
}

}  // namespace fnexec::cluster
