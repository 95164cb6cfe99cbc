// fnexec::bench without privileges: percentile math, the log axis, escaping, the JSON and SVG
// renderings, and the choice of a cgroup path for crun and runc.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <string>
#include <vector>

#include "bench/chart.h"
#include "bench/peers.h"
#include "bench/report.h"
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

TEST_CASE("bench: a cgroup path below ours in every v1 hierarchy") {
  CHECK(common_own_cgroup("4:memory:/a/b\n3:cpu:/\n0::/\n") == "/a/b");
  CHECK(common_own_cgroup("4:memory:/a/b\n3:cpu:/a\n1:name=systemd:/\n") == "/a/b");
  CHECK(common_own_cgroup("4:memory:/\n3:cpu:/\n") == "/");
  CHECK(!common_own_cgroup("4:memory:/a/b\n3:cpu:/c\n").has_value());
  CHECK(!common_own_cgroup("4:memory:/ab\n3:cpu:/a/b\n").has_value());
  CHECK(common_own_cgroup("0::/only/v2\n") == "/");  // v2 lines are not v1 hierarchies
}
