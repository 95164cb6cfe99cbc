// Shared by the pool and lifecycle suites: a function's stats, waiting for a condition, one invoke.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

#include "pool/pool.h"

namespace fnexec::test {

inline pool::PoolStats stats_of(const pool::PoolSet& pools, const std::string& name) {
  for (auto& s : pools.stats())
    if (s.function == name) return s;
  return {};
}

// Polls cond every 10 ms, for up to 30 s.
inline bool wait_for(const std::function<bool()>& cond) {
  for (int i = 0; i < 3000; ++i) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

inline pool::InvocationResult invoke(pool::PoolSet& pools, const std::string& name, std::string_view event) {
  auto r = pools.invoke(name, event);
  REQUIRE_MESSAGE(r, r.error().message());
  return std::move(*r);
}

}  // namespace fnexec::test
