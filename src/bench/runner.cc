#include "bench/runner.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <latch>
#include <mutex>
#include <thread>

namespace fnexec::bench {

namespace {

using Clock = std::chrono::steady_clock;

struct Outcome {
  bool ok = false;
  double us = 0;
  std::string error;
};

Outcome invoke_once(const Entry& e, std::string_view event, std::string& output, unsigned slot) {
  auto t0 = Clock::now();
  auto r = e.target->invoke(event, output, slot);
  auto t1 = Clock::now();
  Outcome o;
  o.us = std::chrono::duration<double, std::micro>(t1 - t0).count();
  if (!r) {
    o.error = r.error().message();
  } else if (output != e.expected_output) {
    o.error = fmt::format("wrong output: {} bytes, expected {}", output.size(), e.expected_output.size());
  } else {
    o.ok = true;
  }
  return o;
}

void record(Series& s, const Outcome& o) {
  if (o.ok) {
    s.samples_us.push_back(o.us);
  } else {
    if (s.failures++ == 0) s.first_error = o.error;
  }
}

// One batch: threads released together, thread t doing counts[t] invocations.
// Returns the batch's wall time in seconds (thread start-up excluded).
double run_batch(const Entry& e, Series& s, std::string_view event, const std::vector<unsigned>& counts) {
  e.target->before_batch();
  if (counts.size() == 1) {
    std::string output;
    auto t0 = Clock::now();
    for (unsigned k = 0; k < counts[0]; ++k) record(s, invoke_once(e, event, output, 0));
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }
  std::mutex mu;
  std::latch ready(static_cast<std::ptrdiff_t>(counts.size()) + 1), go(1);
  std::vector<std::jthread> pool;
  for (unsigned t = 0; t < counts.size(); ++t)
    pool.emplace_back([&, t] {
      std::string output;
      std::vector<Outcome> mine;
      mine.reserve(counts[t]);
      ready.count_down();
      go.wait();
      for (unsigned k = 0; k < counts[t]; ++k) mine.push_back(invoke_once(e, event, output, t));
      std::lock_guard lock(mu);
      for (const auto& o : mine) record(s, o);
    });
  ready.arrive_and_wait();
  auto t0 = Clock::now();
  go.count_down();
  pool.clear();  // joins
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// n split into parts as evenly as possible (the first ones get the remainder).
std::vector<unsigned> split_evenly(unsigned n, unsigned parts) {
  std::vector<unsigned> out(parts, n / parts);
  for (unsigned i = 0; i < n % parts; ++i) ++out[i];
  return out;
}

// At concurrency 1 every round is one invocation per target (A B A B); higher levels batch a
// few invocations per thread so the batch, not the thread start, dominates its wall time.
unsigned rounds_at(const RunPlan& plan, unsigned conc) {
  return conc == 1 ? plan.runs : std::clamp(plan.runs / (4 * conc), 1u, 10u);
}

}  // namespace

unsigned largest_batch(const RunPlan& plan) {
  unsigned most = 1;
  for (unsigned conc : plan.concurrency) most = std::max(most, split_evenly(plan.runs, rounds_at(plan, conc))[0]);
  return most;
}

std::vector<Series> run_interleaved(const std::vector<Entry>& entries, const RunPlan& plan,
                                    std::vector<Skipped>& skipped) {
  std::vector<bool> alive(entries.size(), true);
  // Warm-up doubles as the availability check: a peer that never succeeds is skipped with its error.
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    std::string output, last_error;
    unsigned ok = 0;
    for (unsigned k = 0; k < std::max(plan.warmup, 1u); ++k) {
      auto o = invoke_once(e, plan.event, output, 0);
      if (o.ok)
        ++ok;
      else
        last_error = o.error;
    }
    if (ok == 0) {
      alive[i] = false;
      skipped.push_back(
          {e.system + " " + e.mode + " " + e.function, "every warm-up run failed: " + last_error});
    }
    if (plan.progress)
      plan.progress(fmt::format("warm-up {} {} {}: {} ok", e.system, e.mode, e.function, ok));
  }

  std::vector<Series> out;
  for (unsigned conc : plan.concurrency) {
    std::vector<size_t> index(entries.size(), SIZE_MAX);
    for (size_t i = 0; i < entries.size(); ++i) {
      if (!alive[i] || conc > entries[i].max_concurrency) continue;
      index[i] = out.size();
      out.push_back(Series{entries[i].system, entries[i].mode, entries[i].function, conc});
      out.back().samples_us.reserve(plan.runs);
    }
    // Exactly plan.runs samples per series at every level.
    unsigned rounds = rounds_at(plan, conc);
    auto per_round = split_evenly(plan.runs, rounds);
    for (unsigned round = 0; round < rounds; ++round) {
      auto counts = split_evenly(per_round[round], std::min(conc, std::max(per_round[round], 1u)));
      for (size_t i = 0; i < entries.size(); ++i) {
        if (index[i] == SIZE_MAX) continue;
        Series& s = out[index[i]];
        double busy0 = host_busy_seconds();
        s.wall_seconds += run_batch(entries[i], s, plan.event, counts);
        s.host_cpu_seconds += host_busy_seconds() - busy0;
      }
      if (plan.progress && (conc > 1 || (round + 1) % std::max(1u, rounds / 10) == 0 || round + 1 == rounds))
        plan.progress(fmt::format("concurrency {}: round {}/{}", conc, round + 1, rounds));
    }
  }
  return out;
}

}  // namespace fnexec::bench
