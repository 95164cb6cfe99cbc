// A function's async delivery policy as the cluster applies it (JetStream MaxDeliver, NakWithDelay):
// the same `retries` and `retry_backoff` as the local queue, with the same delay (pool::retry_delay).
#pragma once

#include <chrono>
#include <cstdint>

#include "pool/pool.h"

namespace fnexec::cluster {

struct RetryPolicy {
  uint32_t retries = pool::kDefaultRetries;
  pool::RetryBackoff backoff;
  bool operator==(const RetryPolicy&) const = default;
  uint64_t max_deliveries() const { return uint64_t{retries} + 1; }
  // The wait before the next delivery after delivery `failed` (1-based) failed.
  std::chrono::milliseconds delay_after(uint64_t failed) const {
    return pool::retry_delay(backoff, static_cast<uint32_t>(failed));
  }
};

inline RetryPolicy retry_policy(const pool::FunctionSpec& spec) {
  return {spec.retries, spec.retry_backoff};
}

}  // namespace fnexec::cluster
