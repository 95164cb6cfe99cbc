// `fnexec bench` end to end (root): a tiny run of every mode and every installed peer, its JSON
// checked against the schema, its SVG parsed as XML with one curve per series; bad options refused.
// No timing is asserted: speed lives in the numbers the bench prints.
#include <doctest/doctest.h>
#include <simdjson.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "support/fixtures.h"
#include "support/proc.h"
#include "util/fs.h"

using namespace fnexec;
namespace stdfs = std::filesystem;

namespace {

bool installed(const std::string& tool) {
  return test::run({"/bin/sh", "-c", "command -v " + tool}).exit_code == 0;
}

// Other test binaries may run at the same time in the host's mount namespace and cgroups, so
// these count only what a bench could leave: mounts below the test's scratch directory (where
// --scratch puts the bench's tmpfs), and its cgroups: bench-PID-N sandboxes and
// fnexec-bench-PID-crun|runc for the peers.
size_t bench_mounts(const stdfs::path& scratch) {
  std::ifstream f("/proc/self/mountinfo");
  size_t n = 0;
  for (std::string line; std::getline(f, line);)
    if (line.find("fnexec-bench") != std::string::npos ||
        line.find(scratch.string() + "/") != std::string::npos)
      ++n;
  return n;
}

size_t bench_cgroups() {
  size_t n = 0;
  std::error_code ec;
  for (auto it = stdfs::recursive_directory_iterator("/sys/fs/cgroup", ec);
       !ec && it != stdfs::recursive_directory_iterator(); it.increment(ec)) {
    auto name = it->path().filename().string();
    bool sandbox =
        name.starts_with("bench-") && name.size() > 6 && std::isdigit(static_cast<unsigned char>(name[6]));
    bool peer = name.starts_with("fnexec-bench-") && (name.ends_with("-crun") || name.ends_with("-runc"));
    if (it->is_directory(ec) && (sandbox || peer)) ++n;
  }
  return n;
}

std::vector<std::string> bench_args(const test::ScratchTmpfs& scratch, std::vector<std::string> extra) {
  std::vector<std::string> args{
      "--root",    (scratch / "root").string(), "bench", "--mkimage", test::rootfs_tool("mkimage").string(),
      "--scratch", scratch.path().string()};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

}  // namespace

TEST_CASE("bench: a tiny run of every mode and peer writes a table, JSON with every sample and an SVG") {
  REQUIRE(test::is_root());
  test::ScratchTmpfs scratch("256m");
  auto json = scratch / "out.json", svg = scratch / "out.svg", md = scratch / "out.md";
  auto before = test::ResourceSnapshot::take();
  size_t mounts_before = bench_mounts(scratch.path()), cgroups_before = bench_cgroups();
  auto r = test::fnexec(
      bench_args(scratch, {"-n", "5", "--warmup", "1", "--concurrency", "1,2", "--mode", "cold,warm,run",
                           "--json", json.string(), "--svg", svg.string(), "--markdown", md.string()}));
  INFO(r.err);
  INFO(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("function true, concurrency 1") != std::string::npos);
  CHECK(r.out.find("function cat, concurrency 2") != std::string::npos);
  CHECK(r.out.find("load average before") != std::string::npos);
  CHECK(r.out.find("goals:") != std::string::npos);

  // Every system that can run here, both functions, both levels, five samples each.
  std::set<std::string> expect{"floor process"};
  if (installed("bwrap")) expect.insert("bwrap process");
  if (installed("crun")) expect.insert("crun process");
  if (installed("runc")) expect.insert("runc process");
  expect.insert("fnexec cold");
  expect.insert("fnexec run");
  expect.insert("fnexec warm");
  if (installed("crun")) CHECK(r.out.find("/sys/fs/cgroup/unified unmounted") != std::string::npos);

  auto text = fs::read_file(json);
  REQUIRE(text);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  REQUIRE(parser.parse(*text).get(doc) == simdjson::SUCCESS);
  CHECK(std::string_view(doc["schema"]) == "fnexec-bench/1");
  simdjson::dom::object host = doc["host"];
  CHECK(!std::string_view(host["cpu_model"]).empty());
  CHECK(int64_t(host["cores"]) > 0);
  CHECK(!std::string_view(host["kernel"]).empty());
  CHECK(std::string_view(host["cgroup_mode"]) == "v1");  // this host: hybrid, v1 controllers
  CHECK(simdjson::dom::array(host["load_before"]).size() == 3);
  CHECK(simdjson::dom::array(host["load_after"]).size() == 3);
  (void)bool(host["high_load"]);
  CHECK(int64_t(doc["options"]["runs"]) == 5);

  std::set<std::string> seen;
  size_t level1 = 0;
  for (simdjson::dom::object s : simdjson::dom::array(doc["series"])) {
    std::string key =
        std::string(std::string_view(s["system"])) + " " + std::string(std::string_view(s["mode"]));
    std::string fn{std::string_view(s["function"])};
    int64_t conc = s["concurrency"];
    INFO(key, " ", fn, " x", conc, ": ", std::string_view(s["first_error"]));
    seen.insert(key);
    CHECK((fn == "true" || fn == "cat"));
    CHECK((conc == 1 || conc == 2));
    if (conc == 1) ++level1;
    CHECK(int64_t(s["failures"]) == 0);
    simdjson::dom::array samples = s["samples_us"];
    CHECK(samples.size() == 5);
    CHECK(int64_t(s["n"]) == 5);
    double p50 = s["p50_us"], p90 = s["p90_us"], p99 = s["p99_us"], max = s["max_us"];
    CHECK(p50 > 0);
    CHECK(p50 <= p90);
    CHECK(p90 <= p99);
    CHECK(p99 <= max);
    for (double v : samples) CHECK(v <= max);
    CHECK(double(s["invocations_per_s"]) > 0);
  }
  CHECK(seen == expect);
  CHECK(simdjson::dom::array(doc["goals"]).size() == 6);

  // The SVG is well-formed XML with exactly one curve path per concurrency-1 series, labels unique.
  auto check = test::run(
      {"python3", "-c",
       "import sys, xml.etree.ElementTree as ET\n"
       "root = ET.parse(sys.argv[1]).getroot()\n"
       "ns = '{http://www.w3.org/2000/svg}'\n"
       "assert root.tag == ns + 'svg', root.tag\n"
       "labels = [p.get('data-label') for p in root.iter(ns + 'path') if p.get('class') == 'curve']\n"
       "assert len(labels) == len(set(labels)), labels\n"
       "assert all(p.get('d', '').startswith('M') for p in root.iter(ns + 'path'))\n"
       "print(len(labels))\n",
       svg.string()});
  INFO(check.err);
  REQUIRE(check.exit_code == 0);
  CHECK(std::stoul(check.out) == level1);
  auto markdown = fs::read_file(md);
  REQUIRE(markdown);
  CHECK(markdown->find("| floor | process |") != std::string::npos);

  // bwrap's outer process exits without reaping its sandbox's PID 1; those zombies come to the
  // test as subreaper. Reaping exited orphans leaves only what is still running to be counted.
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
  auto after = test::ResourceSnapshot::take();
  CHECK(after.processes == before.processes);
  CHECK(after.fds == before.fds);
  CHECK(bench_mounts(scratch.path()) == mounts_before);
  CHECK(bench_cgroups() == cgroups_before);
}

TEST_CASE("bench: a peer that is not installed is skipped with the reason") {
  REQUIRE(test::is_root());
  test::ScratchTmpfs scratch("256m");
  // A PATH with python3 (for mkimage) and nothing else: no bwrap, crun or runc.
  auto python = test::run({"python3", "-c", "import sys; print(sys.executable, end='')"});
  REQUIRE(python.exit_code == 0);
  stdfs::create_directories(scratch / "bin");
  stdfs::create_symlink(python.out, scratch / "bin/python3");
  test::ProcOptions o;
  o.env["PATH"] = (scratch / "bin").string();
  std::vector<std::string> argv{test::fnexec_bin().string()};
  auto args = bench_args(scratch, {"-n", "2", "--warmup", "1", "--mode", "cold", "--function", "true"});
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = test::run(argv, o);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("skipped bwrap: not installed") != std::string::npos);
  CHECK(r.out.find("skipped crun: not installed") != std::string::npos);
  CHECK(r.out.find("skipped runc: not installed") != std::string::npos);
  CHECK(r.out.find("floor   process") != std::string::npos);
}

TEST_CASE("bench: bad options are refused with a message and nothing left behind") {
  REQUIRE(test::is_root());
  test::ScratchTmpfs scratch("64m");
  size_t mounts_before = bench_mounts(scratch.path());
  struct Case {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{"--concurrency", "0"}, "expected numbers from 1 to 256"},
      {{"--concurrency", "1,x"}, "expected numbers from 1 to 256"},
      {{"--peers", "docker"}, "expected floor, bwrap, crun or runc"},
      {{"--mode", "lukewarm"}, "expected cold, warm and/or run"},
      {{"--function", "ls"}, "expected true and/or cat"},
      {{"-n", "0"}, "give at least 1 run"},
      {{"--event", (scratch / "missing").string()}, "missing"},
      {{"no-such-image:1"}, "no-such-image"},
  };
  for (const auto& c : cases) {
    auto r = test::fnexec(bench_args(scratch, c.args));
    INFO(c.args.front(), ": ", r.err);
    CHECK(r.exit_code == 125);
    CHECK(r.err.find(c.message) != std::string::npos);
  }
  CHECK(bench_mounts(scratch.path()) == mounts_before);
  // Nothing in the scratch directory: no store was made, no private tmpfs is left.
  CHECK(std::distance(stdfs::directory_iterator(scratch.path()), stdfs::directory_iterator()) <= 1);
}
