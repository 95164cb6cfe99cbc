// What a bench run produced, and its renderings: a table for people (also as Markdown), JSON with
// every sample, a CDF chart, and the goals of issues 3, 5 and 6 checked against the numbers of this run.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bench/stats.h"

namespace fnexec::bench {

struct HostContext {
  std::string cpu_model;
  unsigned cores = 0;
  std::string kernel;
  std::string cgroup_mode;  // "v1", "v2", "disabled"
  double load_before[3] = {0, 0, 0};
  double load_after[3] = {0, 0, 0};
  // The 1-minute load during the run exceeded the core count: other work competed for the CPUs.
  bool high_load() const;
};

// Reads /proc/cpuinfo, uname, /proc/loadavg; cgroup_mode is filled in by the caller.
HostContext read_host_context();
void read_load(double (&out)[3]);
// CPU time the whole host spent busy so far (all cores, /proc/stat user..steal), in seconds.
double host_busy_seconds();
// CPU ticks of every kernel thread (kthreadd's children: kworkers, RCU) alive now, by pid and start
// time: where deferred work such as a network namespace's cleanup_net lands. Host-wide.
struct KernelThreadsCpu {
  std::map<int, std::pair<unsigned long long, unsigned long long>> ticks;  // pid -> (start time, ticks)
  static KernelThreadsCpu now();
  // CPU seconds the kernel threads spent since `before`. A kworker that exits in between takes its
  // ticks with it, so this can undercount, never go negative (a plain sum over /proc did: -16 ms).
  double seconds_since(const KernelThreadsCpu& before) const;
};

// One row: a system in a mode running one function at one concurrency.
struct Series {
  std::string system;    // fnexec, floor, bwrap, crun, runc
  // fnexec: cold, warm, run, fresh, reuse (warm pool hits in the lifecycles oneshot, fresh, reuse),
  // and cold-api, warm-api, fresh-api, reuse-api over the daemon's socket; a peer: process (one
  // whole process per event) or pipe (one long-lived process answering fnexec/1 frames).
  std::string mode;
  std::string function;  // true, cat, python, node, c
  unsigned concurrency = 1;
  std::vector<double> samples_us;
  double wall_seconds = 0;  // sum of the timed batches, for invocations/s
  double host_cpu_seconds = 0;  // host CPU busy during the timed batches (all processes, all cores)
  unsigned failures = 0;
  std::string first_error;
  Summary summary() const { return summarize(samples_us); }
  std::string label() const;  // "fnexec cold · true"
};

struct Skipped {
  std::string system;
  std::string reason;
};

// Host memory per parked, pre-initialized sandbox of a function (lifecycle fresh/reuse).
struct ParkedMemoryRow {
  std::string function;
  unsigned sandboxes = 0, processes = 0;
  double rss_kib = 0, pss_kib = 0, cgroup_kib = 0;
};

struct Goal {
  std::string metric;  // "cold p50 true vs crun"
  std::string target;  // "<= 0.25x"
  std::optional<double> value;
  std::string unit;  // "x", "ms", "/s"
  bool met = false;
};

struct Report {
  HostContext host;
  unsigned runs = 0, warmup = 0;
  std::string image;
  size_t event_bytes = 0;
  std::vector<unsigned> concurrency;
  std::vector<Series> series;
  std::vector<Skipped> skipped;
  std::vector<std::string> notes;
  std::vector<ParkedMemoryRow> parked_memory;
  const Series* find(std::string_view system, std::string_view mode, std::string_view function,
                     unsigned concurrency) const;
};

std::vector<Goal> evaluate_goals(const Report& r);

// JSON string literal contents: quotes, backslash and control characters escaped (\u00XX).
std::string json_escape(std::string_view s);
std::string to_json(const Report& r);
// The stdout table: host context, one block per (function, concurrency), skipped peers, notes, goals.
std::string to_table(const Report& r);
// The same as Markdown for bench/results/*.md.
std::string to_markdown(const Report& r);
// The latency CDF of every series at concurrency 1 as SVG: a colour per system and mode, a dash
// pattern per function.
std::string to_svg(const Report& r);

}  // namespace fnexec::bench
