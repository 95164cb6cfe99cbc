#include "bench/report.h"

#include <fmt/format.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <cstdio>
#include <set>
#include <utility>

#include "bench/chart.h"
#include "util/fs.h"

namespace fnexec::bench {

namespace {

// A finite number for JSON (which has no NaN or infinity).
std::string num(double v, int decimals = 1) {
  return std::isfinite(v) ? fmt::format("{:.{}f}", v, decimals) : "null";
}

std::string ms(double us) {
  return fmt::format("{:.3f}", us / 1000);
}

std::string load_text(const double (&l)[3]) {
  return fmt::format("{:.2f} {:.2f} {:.2f}", l[0], l[1], l[2]);
}

// (function, concurrency) blocks in the order the series first appear.
std::vector<std::pair<std::string, unsigned>> blocks(const Report& r) {
  std::vector<std::pair<std::string, unsigned>> out;
  for (const auto& s : r.series) {
    std::pair key{s.function, s.concurrency};
    if (std::find(out.begin(), out.end(), key) == out.end()) out.push_back(key);
  }
  return out;
}

std::string ratio_text(const Report& r, const Series& s, std::string_view system, std::string_view mode) {
  const Series* base = r.find(system, mode, s.function, s.concurrency);
  if (!base) return "-";
  double b = base->summary().p50_us, v = s.summary().p50_us;
  return b > 0 && v > 0 ? fmt::format("{:.2f}", v / b) : "-";
}

struct Row {
  std::vector<std::string> cells;
};

std::vector<std::string> header() {
  return {"system", "mode",  "n",      "p50_ms", "p90_ms", "p99_ms", "max_ms",
          "mean_ms", "inv/s", "cpu_ms", "x_cold", "x_warm", "x_pipe"};
}

std::vector<std::string> row(const Report& r, const Series& s) {
  auto m = s.summary();
  std::string n = std::to_string(m.n);
  if (s.failures) n += fmt::format(" ({} failed)", s.failures);
  return {s.system,
          s.mode,
          n,
          ms(m.p50_us),
          ms(m.p90_us),
          ms(m.p99_us),
          ms(m.max_us),
          ms(m.mean_us),
          fmt::format("{:.0f}", per_second(m.n, s.wall_seconds)),
          m.n ? fmt::format("{:.2f}", s.host_cpu_seconds * 1000 / static_cast<double>(m.n)) : "-",
          ratio_text(r, s, "fnexec", "cold"),
          ratio_text(r, s, "fnexec", "warm"),
          ratio_text(r, s, "floor", "pipe")};
}

std::string context_lines(const Report& r, std::string_view prefix) {
  const auto& h = r.host;
  std::string out;
  out += fmt::format("{}host: {}, {} cores, kernel {}, cgroups {}\n", prefix, h.cpu_model, h.cores, h.kernel,
                     h.cgroup_mode);
  out += fmt::format("{}load average before: {}; after: {}\n", prefix, load_text(h.load_before),
                     load_text(h.load_after));
  if (h.high_load())
    out += fmt::format(
        "{}WARNING: the load average exceeded the {} cores: other work competed with the bench; "
        "compare ratios, not absolute times, or run again on a quiet host\n",
        prefix, h.cores);
  std::string conc;
  for (unsigned c : r.concurrency) conc += (conc.empty() ? "" : ",") + std::to_string(c);
  out += fmt::format(
      "{}image {}, event {} bytes, {} runs per series after {} warm-up, interleaved; concurrency {}\n",
      prefix, r.image, r.event_bytes, r.runs, r.warmup, conc);
  return out;
}

std::string parked_memory_lines(const Report& r, std::string_view prefix) {
  std::string out;
  for (const auto& m : r.parked_memory)
    out += fmt::format(
        "{}parked pre-initialized {} sandbox (fresh/reuse, READY, no event yet; mean of {}, {} processes): "
        "RSS {:.1f} MiB, PSS {:.1f} MiB, cgroup memory {:.1f} MiB\n",
        prefix, m.function, m.sandboxes, m.processes, m.rss_kib / 1024, m.pss_kib / 1024, m.cgroup_kib / 1024);
  return out;
}

std::string goal_value(const Goal& g) {
  if (!g.value) return "not measured";
  if (g.unit == "x") return fmt::format("{:.2f}x", *g.value);
  if (g.unit == "ms") return fmt::format("{:.3f} ms", *g.value);
  if (g.unit == "MiB") return fmt::format("{:.1f} MiB", *g.value);
  return fmt::format("{:.0f}{}", *g.value, g.unit);
}

std::string goal_verdict(const Goal& g) {
  return !g.value ? "-" : g.met ? "met" : "MISSED";
}

}  // namespace

bool HostContext::high_load() const {
  return cores > 0 && std::max(load_before[0], load_after[0]) > static_cast<double>(cores);
}

void read_load(double (&out)[3]) {
  out[0] = out[1] = out[2] = 0;
  if (auto text = fs::read_file("/proc/loadavg"))
    std::sscanf(text->c_str(), "%lf %lf %lf", &out[0], &out[1], &out[2]);
}

double host_busy_seconds() {
  auto text = fs::read_file("/proc/stat");
  if (!text) return 0;
  unsigned long long v[8] = {};
  if (std::sscanf(text->c_str(), "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                  &v[4], &v[5], &v[6], &v[7]) != 8)
    return 0;
  unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];  // all but idle and iowait
  return static_cast<double>(busy) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

KernelThreadsCpu KernelThreadsCpu::now() {
  KernelThreadsCpu out;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    auto name = e.path().filename().string();
    if (name.empty() || name[0] < '0' || name[0] > '9') continue;
    auto text = fs::read_file(e.path() / "stat");
    if (!text) continue;
    auto close = text->rfind(')');
    if (close == std::string::npos) continue;
    char state;
    int ppid;
    unsigned long long utime, stime, start;
    if (std::sscanf(text->c_str() + close + 2,
                    "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu", &state,
                    &ppid, &utime, &stime, &start) != 5)
      continue;
    if (ppid == 2 || name == "2") out.ticks[std::stoi(name)] = {start, utime + stime};
  }
  return out;
}

double KernelThreadsCpu::seconds_since(const KernelThreadsCpu& before) const {
  unsigned long long ticks = 0;
  for (const auto& [pid, now] : this->ticks) {
    auto was = before.ticks.find(pid);
    // A thread started since (or a pid reused) counts from zero.
    bool same = was != before.ticks.end() && was->second.first == now.first;
    ticks += now.second - (same ? std::min(was->second.second, now.second) : 0);
  }
  return static_cast<double>(ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

HostContext read_host_context() {
  HostContext h;
  h.cores = static_cast<unsigned>(::sysconf(_SC_NPROCESSORS_ONLN));
  if (auto cpuinfo = fs::read_file("/proc/cpuinfo")) {
    auto p = cpuinfo->find("model name");
    if (p != std::string::npos) {
      auto colon = cpuinfo->find(':', p);
      auto eol = cpuinfo->find('\n', p);
      if (colon != std::string::npos && colon < eol) {
        h.cpu_model = cpuinfo->substr(colon + 1, eol - colon - 1);
        h.cpu_model.erase(0, h.cpu_model.find_first_not_of(' '));
      }
    }
  }
  if (h.cpu_model.empty()) h.cpu_model = "unknown CPU";
  struct utsname u;
  if (::uname(&u) == 0) h.kernel = std::string(u.release) + " " + u.machine;
  read_load(h.load_before);
  return h;
}

std::string Series::label() const {
  std::string l = system + " " + mode + " · " + function;
  if (concurrency != 1) l += fmt::format(" ×{}", concurrency);
  return l;
}

const Series* Report::find(std::string_view system, std::string_view mode, std::string_view function,
                           unsigned conc) const {
  for (const auto& s : series)
    if (s.system == system && s.mode == mode && s.function == function && s.concurrency == conc &&
        !s.samples_us.empty())
      return &s;
  return nullptr;
}

std::vector<Goal> evaluate_goals(const Report& r) {
  std::vector<Goal> goals;
  auto p50 = [&](std::string_view sys, std::string_view mode, std::string_view fn) -> std::optional<double> {
    const Series* s = r.find(sys, mode, fn, 1);
    if (!s) return std::nullopt;
    return s->summary().p50_us;
  };
  auto ratio_goal = [&](std::string metric, std::optional<double> a, std::optional<double> b, double limit) {
    Goal g{std::move(metric), fmt::format("<= {:.2f}x", limit), std::nullopt, "x", false};
    if (a && b && *b > 0) {
      g.value = *a / *b;
      g.met = *g.value <= limit;
    }
    goals.push_back(std::move(g));
  };
  ratio_goal("cold p50, true: fnexec / crun", p50("fnexec", "cold", "true"), p50("crun", "process", "true"),
             0.25);
  ratio_goal("cold p50, true: fnexec / bwrap", p50("fnexec", "cold", "true"), p50("bwrap", "process", "true"),
             0.6);
  ratio_goal("run p50, true: fnexec run / crun", p50("fnexec", "run", "true"), p50("crun", "process", "true"),
             0.25);
  ratio_goal("warm p50, cat: fnexec / floor", p50("fnexec", "warm", "cat"), p50("floor", "process", "cat"),
             1.2);
  {
    Goal g{"warm p99, cat", "<= 3 ms", std::nullopt, "ms", false};
    if (const Series* s = r.find("fnexec", "warm", "cat", 1)) {
      g.value = s->summary().p99_us / 1000;
      g.met = *g.value <= 3;
    }
    goals.push_back(std::move(g));
  }
  {
    Goal g{"warm throughput, cat, concurrency 4", ">= 1000/s", std::nullopt, "/s", false};
    if (const Series* s = r.find("fnexec", "warm", "cat", 4)) {
      g.value = per_second(s->samples_us.size(), s->wall_seconds);
      g.met = *g.value >= 1000;
    }
    goals.push_back(std::move(g));
  }
  // Issue 11: warm functions (fresh, reuse). Only when the run has runtime functions.
  bool lifecycles = std::any_of(r.series.begin(), r.series.end(), [](const Series& s) {
    return s.mode.starts_with("fresh") || s.mode.starts_with("reuse");
  });
  if (!lifecycles) return goals;
  auto p50_goal = [&](std::string metric, std::string_view mode, std::string_view fn, double limit_ms) {
    Goal g{std::move(metric), fmt::format("<= {} ms", limit_ms), std::nullopt, "ms", false};
    if (auto v = p50("fnexec", mode, fn)) {
      g.value = *v / 1000;
      g.met = *g.value <= limit_ms;
    }
    goals.push_back(std::move(g));
  };
  p50_goal("reuse-api p50, python", "reuse-api", "python", 1.0);
  p50_goal("reuse-api p50, c", "reuse-api", "c", 0.3);
  ratio_goal("reuse p50, c: fnexec / pipe floor", p50("fnexec", "reuse", "c"), p50("floor", "pipe", "c"), 3.0);
  p50_goal("fresh-api p50, python", "fresh-api", "python", 3.0);
  p50_goal("fresh p50, python (in-process)", "fresh", "python", 3.0);
  for (auto [fn, limit] : {std::pair{"c", 10000.0}, std::pair{"python", 3000.0}}) {
    Goal g{fmt::format("reuse-api throughput, {}, concurrency 8", fn), fmt::format(">= {:.0f}/s", limit),
           std::nullopt, "/s", false};
    if (const Series* s = r.find("fnexec", "reuse-api", fn, 8)) {
      g.value = per_second(s->samples_us.size(), s->wall_seconds);
      g.met = *g.value >= limit;
    }
    goals.push_back(std::move(g));
  }
  {
    Goal g{"parked python sandbox, PSS + cgroup", "<= 12 MiB", std::nullopt, "MiB", false};
    for (const auto& m : r.parked_memory)
      if (m.function == "python") {
        // The cgroup counts page cache and kernel memory charged to it; PSS the processes' share.
        g.value = std::max(m.pss_kib, m.cgroup_kib) / 1024;
        g.met = *g.value <= 12;
      }
    goals.push_back(std::move(g));
  }
  return goals;
}

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"')
      out += "\\\"";
    else if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (u < 0x20)
      out += fmt::format("\\u{:04x}", u);
    else
      out += c;
  }
  return out;
}

std::string to_json(const Report& r) {
  const auto& h = r.host;
  std::string j = "{\n  \"schema\": \"fnexec-bench/1\",\n";
  j += fmt::format(
      "  \"host\": {{\"cpu_model\": \"{}\", \"cores\": {}, \"kernel\": \"{}\", \"cgroup_mode\": \"{}\", "
      "\"load_before\": [{}, {}, {}], \"load_after\": [{}, {}, {}], \"high_load\": {}}},\n",
      json_escape(h.cpu_model), h.cores, json_escape(h.kernel), json_escape(h.cgroup_mode),
      num(h.load_before[0], 2), num(h.load_before[1], 2), num(h.load_before[2], 2), num(h.load_after[0], 2),
      num(h.load_after[1], 2), num(h.load_after[2], 2), h.high_load() ? "true" : "false");
  std::string conc;
  for (unsigned c : r.concurrency) conc += (conc.empty() ? "" : ", ") + std::to_string(c);
  j += fmt::format(
      "  \"options\": {{\"runs\": {}, \"warmup\": {}, \"image\": \"{}\", \"event_bytes\": {}, "
      "\"concurrency\": "
      "[{}]}},\n",
      r.runs, r.warmup, json_escape(r.image), r.event_bytes, conc);
  j += "  \"series\": [";
  for (size_t i = 0; i < r.series.size(); ++i) {
    const auto& s = r.series[i];
    auto m = s.summary();
    j += fmt::format(
        "{}\n    {{\"system\": \"{}\", \"mode\": \"{}\", \"function\": \"{}\", \"concurrency\": {}, \"n\": "
        "{}, "
        "\"failures\": {}, \"first_error\": \"{}\", \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, "
        "\"max_us\": {}, "
        "\"mean_us\": {}, \"wall_seconds\": {}, \"invocations_per_s\": {}, \"host_cpu_seconds\": {}, "
        "\"samples_us\": [",
        i ? "," : "", json_escape(s.system), json_escape(s.mode), json_escape(s.function), s.concurrency, m.n,
        s.failures, json_escape(s.first_error), num(m.p50_us), num(m.p90_us), num(m.p99_us), num(m.max_us),
        num(m.mean_us), num(s.wall_seconds, 6), num(per_second(m.n, s.wall_seconds)),
        num(s.host_cpu_seconds, 3));
    for (size_t k = 0; k < s.samples_us.size(); ++k) j += (k ? "," : "") + num(s.samples_us[k]);
    j += "]}";
  }
  j += "\n  ],\n  \"skipped\": [";
  for (size_t i = 0; i < r.skipped.size(); ++i)
    j += fmt::format("{}{{\"system\": \"{}\", \"reason\": \"{}\"}}", i ? ", " : "",
                     json_escape(r.skipped[i].system), json_escape(r.skipped[i].reason));
  j += "],\n  \"parked_memory\": [";
  for (size_t i = 0; i < r.parked_memory.size(); ++i) {
    const auto& m = r.parked_memory[i];
    j += fmt::format(
        "{}{{\"function\": \"{}\", \"sandboxes\": {}, \"processes\": {}, \"rss_kib_per_sandbox\": {}, "
        "\"pss_kib_per_sandbox\": {}, \"cgroup_kib_per_sandbox\": {}}}",
        i ? ", " : "", json_escape(m.function), m.sandboxes, m.processes, num(m.rss_kib), num(m.pss_kib),
        num(m.cgroup_kib));
  }
  j += "],\n  \"notes\": [";
  for (size_t i = 0; i < r.notes.size(); ++i)
    j += fmt::format("{}\"{}\"", i ? ", " : "", json_escape(r.notes[i]));
  j += "],\n  \"goals\": [";
  auto goals = evaluate_goals(r);
  for (size_t i = 0; i < goals.size(); ++i) {
    const auto& g = goals[i];
    j += fmt::format(
        "{}\n    {{\"metric\": \"{}\", \"target\": \"{}\", \"value\": {}, \"unit\": \"{}\", \"met\": {}}}",
        i ? "," : "", json_escape(g.metric), json_escape(g.target), g.value ? num(*g.value, 3) : "null",
        json_escape(g.unit), g.value ? (g.met ? "true" : "false") : "null");
  }
  j += "\n  ]\n}\n";
  return j;
}

std::string to_table(const Report& r) {
  std::string out = context_lines(r, "");
  auto head = header();
  for (const auto& [fn, conc] : blocks(r)) {
    std::vector<std::vector<std::string>> rows{head};
    for (const auto& s : r.series)
      if (s.function == fn && s.concurrency == conc) rows.push_back(row(r, s));
    std::vector<size_t> width(head.size(), 0);
    for (const auto& cells : rows)
      for (size_t c = 0; c < cells.size(); ++c) width[c] = std::max(width[c], cells[c].size());
    out += fmt::format("\nfunction {}, concurrency {}\n", fn, conc);
    for (const auto& cells : rows) {
      std::string line;
      for (size_t c = 0; c < cells.size(); ++c) {
        // Names left-aligned, numbers right-aligned.
        line += c < 2 ? fmt::format("{:<{}}", cells[c], width[c] + 2)
                      : fmt::format("{:>{}}", cells[c], width[c] + 2);
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      out += line + "\n";
    }
  }
  out +=
      "\nmodes: cold = a fresh sandbox per invocation in this process; warm = a pool hit in this process;\n"
      "       run = a whole `fnexec run` process; process = a whole peer process per invocation\n";
  if (std::any_of(r.series.begin(), r.series.end(), [](const Series& s) { return s.mode.ends_with("-api"); }))
    out +=
        "       cold-api, warm-api = the same over fnexec serve's HTTP API on its unix socket (POST,\n"
        "       event in, result out; a keep-alive connection per client thread): a pool of 0 / a pool hit\n";
  if (std::any_of(r.series.begin(), r.series.end(),
                  [](const Series& s) { return s.mode.starts_with("fresh") || s.mode.starts_with("reuse"); }))
    out +=
        "       fresh, reuse = a pool hit whose process finished its init (READY) before the event; fresh:\n"
        "       destroyed after one event, reuse: answers events until retired (fnexec-protocol(7));\n"
        "       pipe = one long-lived host process per client thread answering fnexec/1 frames, no sandbox\n";
  out +=
      "cpu_ms: host CPU (all processes) per invocation, from the pool refill before each batch to its last "
      "result (fresh: a new sandbox and init per event)\n"
      "x_cold, x_warm, x_pipe: p50 divided by fnexec's cold or warm p50 or the pipe floor's p50, same "
      "function and concurrency\n";
  out += parked_memory_lines(r, "");
  for (const auto& s : r.skipped) out += fmt::format("skipped {}: {}\n", s.system, s.reason);
  for (const auto& n : r.notes) out += fmt::format("note: {}\n", n);
  for (const auto& s : r.series)
    if (s.failures)
      out += fmt::format("failed {}: {} of {}; first: {}\n", s.label(), s.failures,
                         s.failures + s.samples_us.size(), s.first_error);
  out += "\ngoals:\n";
  for (const auto& g : evaluate_goals(r))
    out += fmt::format("  {:<40} {:<10} {:>14}  {}\n", g.metric, g.target, goal_value(g), goal_verdict(g));
  return out;
}

std::string to_markdown(const Report& r) {
  std::string out = "# fnexec bench\n\n" + context_lines(r, "- ");
  for (const auto& [fn, conc] : blocks(r)) {
    out += fmt::format("\n## function `{}`, concurrency {}\n\n", fn, conc);
    auto head = header();
    for (const auto& h : head) out += "| " + h + " ";
    out += "|\n";
    for (size_t c = 0; c < head.size(); ++c) out += c < 2 ? "|---" : "|---:";
    out += "|\n";
    for (const auto& s : r.series) {
      if (s.function != fn || s.concurrency != conc) continue;
      for (const auto& cell : row(r, s)) out += "| " + cell + " ";
      out += "|\n";
    }
  }
  if (!r.skipped.empty() || !r.notes.empty() || !r.parked_memory.empty()) out += "\n";
  out += parked_memory_lines(r, "- ");
  for (const auto& s : r.skipped) out += fmt::format("- skipped {}: {}\n", s.system, s.reason);
  for (const auto& n : r.notes) out += fmt::format("- note: {}\n", n);
  out += "\n## goals\n\n| metric | goal | measured | verdict |\n|---|---|---:|---|\n";
  for (const auto& g : evaluate_goals(r))
    out += fmt::format("| {} | {} | {} | {} |\n", g.metric, g.target, goal_value(g), goal_verdict(g));
  return out;
}

std::string to_svg(const Report& r) {
  std::vector<Curve> curves;
  for (const auto& s : r.series) {
    if (s.concurrency != 1 || s.samples_us.empty()) continue;
    Curve c{s.label(), {}, s.system + " " + s.mode, s.function};
    for (double us : s.samples_us) c.samples_ms.push_back(us / 1000);
    curves.push_back(std::move(c));
  }
  std::string subtitle =
      fmt::format("{}, {} cores, kernel {}, cgroups {}; {} runs each, concurrency 1", r.host.cpu_model,
                  r.host.cores, r.host.kernel, r.host.cgroup_mode, r.runs);
  return render_cdf_svg("fnexec bench: latency CDF, event in to result out", subtitle, curves);
}

}  // namespace fnexec::bench
