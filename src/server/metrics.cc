#include "server/metrics.h"

#include <fmt/format.h>

namespace fnexec::server {

void DurationHistogram::observe(double seconds) {
  ++count;
  sum_seconds += seconds;
  for (size_t i = 0; i < kDurationBuckets.size(); ++i) {
    if (seconds <= kDurationBuckets[i]) {
      ++buckets[i];
      return;
    }
  }
}

void CountHistogram::observe(double v) {
  ++count;
  sum += v;
  for (size_t i = 0; i < kSandboxEventBuckets.size(); ++i) {
    if (v <= kSandboxEventBuckets[i]) {
      ++buckets[i];
      return;
    }
  }
}

void Metrics::count(std::string_view function, Outcome outcome) {
  std::lock_guard lock(mu_);
  ++counters_.invocations[{std::string(function), std::string(to_string(outcome))}];
}

void Metrics::observe(std::string_view function, pool::StartKind start, uint64_t wall_us) {
  std::lock_guard lock(mu_);
  ++(start == pool::StartKind::warm ? counters_.warm_starts : counters_.cold_starts);
  auto it = counters_.durations.find(function);
  if (it == counters_.durations.end())
    it = counters_.durations.emplace(std::string(function), DurationHistogram{}).first;
  it->second.observe(static_cast<double>(wall_us) / 1e6);
}

void Metrics::observe_sandbox(std::string_view function, const pool::InvocationResult& r) {
  if (r.lifecycle == pool::Lifecycle::oneshot) return;
  std::lock_guard lock(mu_);
  auto& c = counters_;
  if (r.init_us) {
    auto it = c.init_durations.try_emplace(std::string(function)).first;
    it->second.observe(static_cast<double>(*r.init_us) / 1e6);
  }
  if (!r.retired.empty()) {
    ++c.retirements[{std::string(function), r.retired}];
    c.sandbox_events.try_emplace(std::string(function)).first->second.observe(static_cast<double>(r.sandbox_events));
  }
}

MetricsSnapshot Metrics::snapshot() const {
  std::lock_guard lock(mu_);
  return counters_;
}

std::string escape_label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out.push_back(c);
  }
  return out;
}

std::string format_prometheus(const MetricsSnapshot& m) {
  std::string out;
  auto header = [&](std::string_view name, std::string_view type, std::string_view help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };

  header("fnexec_invocations_total", "counter", "Invocations that finished, by function and outcome.");
  for (const auto& [key, n] : m.invocations)
    out += fmt::format("fnexec_invocations_total{{function=\"{}\",outcome=\"{}\"}} {}\n",
                       escape_label(key.first), escape_label(key.second), n);

  header("fnexec_starts_total", "counter",
         "Invocations by start kind: warm (pooled sandbox) or cold (built on demand).");
  out += fmt::format("fnexec_starts_total{{kind=\"warm\"}} {}\n", m.warm_starts);
  out += fmt::format("fnexec_starts_total{{kind=\"cold\"}} {}\n", m.cold_starts);

  // One histogram family by function: cumulative buckets, +Inf, sum, count.
  auto histograms = [&](std::string_view name, const auto& by_function, const auto& bounds, auto sum_of) {
    for (const auto& [function, h] : by_function) {
      auto fn = escape_label(function);
      uint64_t cumulative = 0;
      for (size_t i = 0; i < bounds.size(); ++i) {
        cumulative += h.buckets[i];
        out += fmt::format("{}_bucket{{function=\"{}\",le=\"{}\"}} {}\n", name, fn, bounds[i], cumulative);
      }
      out += fmt::format("{}_bucket{{function=\"{}\",le=\"+Inf\"}} {}\n", name, fn, h.count);
      out += fmt::format("{}_sum{{function=\"{}\"}} {}\n", name, fn, sum_of(h));
      out += fmt::format("{}_count{{function=\"{}\"}} {}\n", name, fn, h.count);
    }
  };
  auto seconds = [](const DurationHistogram& h) { return h.sum_seconds; };

  header("fnexec_invocation_duration_seconds", "histogram", "Wall time of invocations from go to exit.");
  histograms("fnexec_invocation_duration_seconds", m.durations, kDurationBuckets, seconds);

  header("fnexec_function_lifecycle", "gauge",
         "Each function's lifecycle: oneshot, fresh or reuse (value is always 1).");
  for (const auto& [function, lifecycle] : m.lifecycles)
    out += fmt::format("fnexec_function_lifecycle{{function=\"{}\",lifecycle=\"{}\"}} 1\n",
                       escape_label(function), escape_label(lifecycle));

  header("fnexec_sandbox_init_duration_seconds", "histogram",
         "fresh/reuse: a sandbox's init, from exec to READY, seen on its first event.");
  histograms("fnexec_sandbox_init_duration_seconds", m.init_durations, kDurationBuckets, seconds);

  header("fnexec_sandbox_events", "histogram",
         "fresh/reuse: events a sandbox served before it was retired after an event.");
  histograms("fnexec_sandbox_events", m.sandbox_events, kSandboxEventBuckets,
             [](const CountHistogram& h) { return h.sum; });

  header("fnexec_sandbox_retirements_total", "counter",
         "fresh/reuse sandboxes retired after an event, by function and reason.");
  for (const auto& [key, n] : m.retirements)
    out += fmt::format("fnexec_sandbox_retirements_total{{function=\"{}\",reason=\"{}\"}} {}\n",
                       escape_label(key.first), escape_label(key.second), n);

  header("fnexec_pool_sandboxes", "gauge", "Sandboxes of each function's pool by state.");
  uint64_t alive = 0;
  for (const auto& p : m.pools) {
    auto fn = escape_label(p.function);
    out += fmt::format("fnexec_pool_sandboxes{{function=\"{}\",state=\"warm\"}} {}\n", fn, p.warm);
    out += fmt::format("fnexec_pool_sandboxes{{function=\"{}\",state=\"busy\"}} {}\n", fn, p.busy);
    out += fmt::format("fnexec_pool_sandboxes{{function=\"{}\",state=\"starting\"}} {}\n", fn, p.starting);
    alive += uint64_t{p.warm} + p.busy + p.starting;
  }

  header("fnexec_sandboxes_alive", "gauge", "Sandboxes that exist now, across all functions.");
  out += fmt::format("fnexec_sandboxes_alive {}\n", alive);

  header("fnexec_async_queued", "gauge", "Async invocations waiting for capacity.");
  out += fmt::format("fnexec_async_queued {}\n", m.async_queued);

  header("fnexec_cgroup_mode", "gauge", "The cgroup mode the daemon detected (value is always 1).");
  out += fmt::format("fnexec_cgroup_mode{{mode=\"{}\"}} 1\n", escape_label(m.cgroup_mode));
  return out;
}

}  // namespace fnexec::server
