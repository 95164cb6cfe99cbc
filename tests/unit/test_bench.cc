// fnexec::bench without privileges: percentile math, the log axis, escaping, the JSON and SVG
// renderings, and the choice of a cgroup path for crun and runc.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "bench/chart.h"
#include "bench/peers.h"
#include "bench/report.h"
#include "bench/runner.h"
#include "bench/stats.h"

using namespace fnexec::bench;

namespace {

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

Series series(std::string system, std::string mode, std::string fn, unsigned conc, std::vector<double> us) {
  Series s;
  s.system = std::move(system);
  s.mode = std::move(mode);
  s.function = std::move(fn);
  s.concurrency = conc;
  s.samples_us = std::move(us);
  s.wall_seconds = 0.5;
  return s;
}

// The value of attribute name in one SVG element's text; "" when it is absent.
std::string attribute(const std::string& element, const std::string& name) {
  auto at = element.find(" " + name + "=\"");
  if (at == std::string::npos) return "";
  at += name.size() + 3;
  return element.substr(at, element.find('"', at) - at);
}

struct DrawnCurve {
  std::string label, stroke, dash;
};

std::vector<DrawnCurve> drawn_curves(const std::string& svg) {
  std::vector<DrawnCurve> out;
  for (size_t p = svg.find("<path class=\"curve\""); p != std::string::npos;
       p = svg.find("<path class=\"curve\"", p + 1)) {
    std::string element = svg.substr(p, svg.find("/>", p) - p);
    out.push_back({attribute(element, "data-label"), attribute(element, "stroke"),
                   attribute(element, "stroke-dasharray")});
  }
  return out;
}

size_t legend_rows(const std::string& svg) {
  auto at = svg.find("<g class=\"legend\">");
  if (at == std::string::npos) return 0;
  return count(svg.substr(at, svg.find("</g>", at) - at), "<line ");
}

}  // namespace

TEST_CASE("bench: percentiles interpolate between closest ranks") {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  CHECK(percentile(v, 0) == doctest::Approx(1));
  CHECK(percentile(v, 50) == doctest::Approx(50.5));
  CHECK(percentile(v, 90) == doctest::Approx(90.1));
  CHECK(percentile(v, 99) == doctest::Approx(99.01));
  CHECK(percentile(v, 100) == doctest::Approx(100));
  std::vector<double> one{7};
  CHECK(percentile(one, 99) == 7);
  CHECK(percentile(std::vector<double>{}, 50) == 0);
  std::vector<double> two{1, 3};
  CHECK(percentile(two, 50) == doctest::Approx(2));

  auto s = summarize({5, 1, 4, 2, 3});  // unsorted input
  CHECK(s.n == 5);
  CHECK(s.p50_us == doctest::Approx(3));
  CHECK(s.max_us == 5);
  CHECK(s.mean_us == doctest::Approx(3));
  CHECK(summarize({}).n == 0);
  CHECK(per_second(1000, 0.5) == doctest::Approx(2000));
  CHECK(per_second(10, 0) == 0);
}

TEST_CASE("bench: log axis spans whole decades around the data") {
  auto a = log_axis(0.35, 14);
  CHECK(a.min == doctest::Approx(0.1));
  CHECK(a.max == doctest::Approx(100));
  REQUIRE(a.decades.size() == 4);
  CHECK(a.decades[0] == doctest::Approx(0.1));
  CHECK(a.decades[3] == doctest::Approx(100));
  CHECK(a.minor.size() == 3 * 8);
  CHECK(a.minor.front() == doctest::Approx(0.2));

  auto exact = log_axis(1, 10);  // data on decade boundaries: no extra decade
  CHECK(exact.min == doctest::Approx(1));
  CHECK(exact.max == doctest::Approx(10));

  auto flat = log_axis(2, 2);  // one value: still one decade wide
  CHECK(flat.min == doctest::Approx(1));
  CHECK(flat.max == doctest::Approx(10));

  auto bad = log_axis(0, 5);  // zero cannot sit on a log axis
  CHECK(bad.min > 0);
  CHECK(bad.max == doctest::Approx(10));

  CHECK(decade_label(0.01) == "0.01");
  CHECK(decade_label(0.1) == "0.1");
  CHECK(decade_label(1) == "1");
  CHECK(decade_label(1000) == "1000");
}

TEST_CASE("bench: XML and JSON escaping") {
  CHECK(xml_escape("a<b>&\"c'") == "a&lt;b&gt;&amp;&quot;c&apos;");
  CHECK(xml_escape(std::string("x\x01y", 3)) == "x?y");
  CHECK(json_escape("say \"hi\"\\\n") == "say \\\"hi\\\"\\\\\\n");
  CHECK(json_escape(std::string("\x1f", 1)) == "\\u001f");
  CHECK(json_escape("µs ×4") == "µs ×4");  // UTF-8 passes through
}

TEST_CASE("bench: the SVG has one curve per series, escaped labels and decade labels") {
  std::vector<Curve> curves{
      {"fnexec cold · true", {1.2, 1.4, 1.3}}, {"crun <process>", {12, 14, 13}}, {"empty", {}}};
  auto svg = render_cdf_svg("title & more", "sub", curves);
  CHECK(svg.starts_with("<?xml"));
  CHECK(count(svg, "class=\"curve\"") == 3);
  CHECK(svg.find("crun &lt;process&gt;") != std::string::npos);
  CHECK(svg.find("title &amp; more") != std::string::npos);
  CHECK(svg.find(">1</text>") != std::string::npos);
  CHECK(svg.find(">100</text>") != std::string::npos);
}

TEST_CASE("bench: no two curves of a chart share both colour and dash") {
  // The full suite's nine system+mode groups, nine more (past the sixteen listed colours), and six
  // functions (past the five listed dash patterns).
  const std::vector<std::pair<std::string, std::string>> groups{
      {"fnexec", "cold"},    {"fnexec", "cold-api"},    {"fnexec", "warm"},    {"fnexec", "warm-api"},
      {"fnexec", "run"},     {"floor", "process"},      {"bwrap", "process"},  {"crun", "process"},
      {"runc", "process"},   {"youki", "process"},      {"gvisor", "process"}, {"kata", "process"},
      {"lxc", "process"},    {"nsjail", "process"},     {"podman", "process"}, {"docker", "process"},
      {"sysbox", "process"}, {"firecracker", "process"}};
  const std::vector<std::string> functions{"true", "cat", "sha256", "sleep", "echo", "env"};
  Report r;
  r.runs = 3;
  for (const auto& [system, mode] : groups)
    for (const auto& fn : functions) {
      r.series.push_back(series(system, mode, fn, 1, {1000, 2000, 3000}));
      r.series.push_back(series(system, mode, fn, 4, {1000, 2000, 3000}));  // not charted
    }
  auto svg = to_svg(r);
  auto curves = drawn_curves(svg);
  REQUIRE(curves.size() == groups.size() * functions.size());
  // Too many curves for a row each: the legend has a row per group and one per function.
  CHECK(legend_rows(svg) == groups.size() + functions.size());

  std::set<std::pair<std::string, std::string>> looks;
  std::map<std::string, std::string> color_of_group, dash_of_function;
  std::set<std::string> colors, dashes;
  for (const auto& c : curves) {
    CHECK(looks.insert({c.stroke, c.dash}).second);
    CHECK(c.stroke.starts_with("#"));
    auto dot = c.label.find(" · ");
    REQUIRE(dot != std::string::npos);
    std::string group = c.label.substr(0, dot), fn = c.label.substr(dot + std::string(" · ").size());
    // One colour per system+mode and one dash per function, so the legend reads as a grid.
    CHECK(color_of_group.try_emplace(group, c.stroke).first->second == c.stroke);
    CHECK(dash_of_function.try_emplace(fn, c.dash).first->second == c.dash);
  }
  for (const auto& [g, color] : color_of_group) colors.insert(color);
  for (const auto& [f, dash] : dash_of_function) dashes.insert(dash);
  CHECK(colors.size() == groups.size());
  CHECK(dashes.size() == functions.size());
  // The reported case: floor process · true drew in fnexec cold · true's red, solid (the old
  // palette wrapped every ten curves).
  CHECK(curves[0].label == "fnexec cold · true");
  CHECK(curves[5 * functions.size()].label == "floor process · true");
  CHECK(curves[0].stroke != curves[5 * functions.size()].stroke);

  // The full suite's chart (nine groups, two functions) has a legend row per curve.
  Report suite;
  for (size_t g = 0; g < 9; ++g)
    for (size_t f = 0; f < 2; ++f)
      suite.series.push_back(series(groups[g].first, groups[g].second, functions[f], 1, {1}));
  CHECK(legend_rows(to_svg(suite)) == 18);

  // A curve without group or function (a caller of render_cdf_svg that sets neither) is its own.
  auto plain = drawn_curves(render_cdf_svg("t", "s", {{"a", {1}}, {"b", {2}}}));
  REQUIRE(plain.size() == 2);
  CHECK((plain[0].stroke != plain[1].stroke || plain[0].dash != plain[1].dash));
}

TEST_CASE("bench: JSON report parses and carries every sample, ratios and goals") {
  Report r;
  r.host.cpu_model = "CPU \"quoted\"";
  r.host.cores = 2;
  r.host.kernel = "6.18";
  r.host.cgroup_mode = "v1";
  r.runs = 3;
  r.image = "busybox";
  r.concurrency = {1, 4};
  r.series.push_back(series("fnexec", "cold", "true", 1, {2000, 2500, 3000}));
  r.series.push_back(series("crun", "process", "true", 1, {10000, 12000, 14000}));
  r.series.push_back(series("fnexec", "warm", "cat", 4, {500, 600, 700}));
  r.skipped.push_back({"runc", "not installed"});
  r.notes.push_back("a \"note\"");

  simdjson::dom::parser parser;
  auto json = to_json(r);
  simdjson::dom::element doc;
  REQUIRE(parser.parse(json).get(doc) == simdjson::SUCCESS);
  CHECK(std::string_view(doc["schema"]) == "fnexec-bench/1");
  CHECK(std::string_view(doc["host"]["cpu_model"]) == "CPU \"quoted\"");
  simdjson::dom::array s = doc["series"];
  CHECK(s.size() == 3);
  auto first = s.at(0);
  CHECK(std::string_view(first["system"]) == "fnexec");
  CHECK(double(first["p50_us"]) == doctest::Approx(2500));
  CHECK(simdjson::dom::array(first["samples_us"]).size() == 3);
  CHECK(double(s.at(2)["invocations_per_s"]) == doctest::Approx(6));
  simdjson::dom::array goals = doc["goals"];
  bool found = false;
  for (auto g : goals)
    if (std::string_view(g["metric"]) == "cold p50, true: fnexec / crun") {
      found = true;
      CHECK(double(g["value"]) == doctest::Approx(0.208).epsilon(0.01));
      CHECK(bool(g["met"]));
    }
  CHECK(found);

  auto table = to_table(r);
  CHECK(table.find("function true, concurrency 1") != std::string::npos);
  CHECK(table.find("0.21x") != std::string::npos);  // the goal line: fnexec's p50 / crun's
  CHECK(table.find("skipped runc: not installed") != std::string::npos);
  CHECK(to_markdown(r).find("| fnexec | cold |") != std::string::npos);
}

TEST_CASE("bench: lifecycle series get issue 11's goals, the pipe ratio, host CPU and parked memory") {
  Report r;
  r.runs = 3;
  r.concurrency = {1, 8};
  r.series.push_back(series("fnexec", "reuse-api", "python", 1, {700, 800, 900}));
  r.series.push_back(series("fnexec", "reuse", "c", 1, {100, 120, 140}));
  r.series.push_back(series("floor", "pipe", "c", 1, {30, 40, 50}));
  r.series.push_back(series("fnexec", "fresh", "python", 1, {3000, 4000, 5000}));
  auto busy = series("fnexec", "reuse-api", "c", 8, {300, 400, 500});
  busy.wall_seconds = 0.0002;  // 3 in 0.2 ms: 15000/s
  busy.host_cpu_seconds = 0.0003;
  r.series.push_back(busy);
  r.parked_memory.push_back({"python", 4, 8, 10 * 1024, 6 * 1024, 13 * 1024});

  std::map<std::string, std::pair<double, bool>> got;
  for (const auto& g : evaluate_goals(r))
    if (g.value) got[g.metric] = {*g.value, g.met};
  CHECK(got.at("reuse-api p50, python").first == doctest::Approx(0.8));
  CHECK(got.at("reuse-api p50, python").second);
  CHECK(got.at("reuse p50, c: fnexec / pipe floor").first == doctest::Approx(3.0));
  CHECK(got.at("reuse p50, c: fnexec / pipe floor").second);  // <= 3x
  CHECK_FALSE(got.at("fresh p50, python (in-process)").second);  // 4 ms > 3 ms
  CHECK(got.at("reuse-api throughput, c, concurrency 8").first == doctest::Approx(15000));
  CHECK(got.at("reuse-api throughput, c, concurrency 8").second);
  // The larger of PSS and the cgroup's charge counts: 13 MiB misses 12 MiB.
  CHECK(got.at("parked python sandbox, PSS + cgroup").first == doctest::Approx(13));
  CHECK_FALSE(got.at("parked python sandbox, PSS + cgroup").second);
  CHECK_FALSE(got.contains("reuse-api p50, c"));  // not measured: no c=1 reuse-api series

  simdjson::dom::parser parser;
  auto json = to_json(r);
  simdjson::dom::element doc;
  REQUIRE(parser.parse(json).get(doc) == simdjson::SUCCESS);
  simdjson::dom::array parked = doc["parked_memory"];
  REQUIRE(parked.size() == 1);
  CHECK(std::string_view(parked.at(0)["function"]) == "python");
  CHECK(double(parked.at(0)["pss_kib_per_sandbox"]) == doctest::Approx(6144));
  CHECK(double(doc["series"].at(4)["host_cpu_seconds"]) == doctest::Approx(0.0003).epsilon(0.01));

  auto table = to_table(r);
  CHECK(table.find("x_pipe") != std::string::npos);
  CHECK(table.find("pipe = one long-lived host process") != std::string::npos);
  CHECK(table.find("parked pre-initialized python sandbox") != std::string::npos);
  // c reuse at concurrency 1: p50 120 us over the pipe floor's 40 us.
  CHECK(table.find("3.00") != std::string::npos);
  CHECK(table.find("0.10") != std::string::npos);  // cpu_ms of the busy series: 0.3 ms / 3
  CHECK(to_markdown(r).find("parked pre-initialized python sandbox") != std::string::npos);

  // A run without fresh or reuse series keeps the goals it had.
  Report plain;
  plain.series.push_back(series("fnexec", "warm", "cat", 1, {500}));
  CHECK(evaluate_goals(plain).size() == 6);
}

TEST_CASE("bench: the largest batch a fresh pool must park for") {
  RunPlan plan;
  plan.runs = 200;
  plan.concurrency = {1};
  CHECK(largest_batch(plan) == 1);  // one invocation per round at concurrency 1
  plan.concurrency = {1, 8};
  CHECK(largest_batch(plan) == 34);  // 200 / (4 * 8) = 6 rounds: 34, 34, 33, 33, 33, 33
  plan.runs = 5;
  CHECK(largest_batch(plan) == 5);   // a single round
  plan.runs = 4000;
  CHECK(largest_batch(plan) == 400);  // at most 10 rounds
}

TEST_CASE("bench: a cgroup path below ours in every v1 hierarchy") {
  CHECK(common_own_cgroup("4:memory:/a/b\n3:cpu:/\n0::/\n") == "/a/b");
  CHECK(common_own_cgroup("4:memory:/a/b\n3:cpu:/a\n1:name=systemd:/\n") == "/a/b");
  CHECK(common_own_cgroup("4:memory:/\n3:cpu:/\n") == "/");
  CHECK(!common_own_cgroup("4:memory:/a/b\n3:cpu:/c\n").has_value());
  CHECK(!common_own_cgroup("4:memory:/ab\n3:cpu:/a/b\n").has_value());
  CHECK(common_own_cgroup("0::/only/v2\n") == "/");  // v2 lines are not v1 hierarchies
}
