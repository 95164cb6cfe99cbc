// `fnexec bench` end to end (root): a tiny run of every mode and every installed peer, its JSON
// checked against the schema, its SVG parsed as XML with one curve per series; bad options refused.
// No timing is asserted: speed lives in the numbers the bench prints.
#include <doctest/doctest.h>
#include <fmt/format.h>
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
#include "test_serve_fixture.h"
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

// Mounts below dir only: unlike bench_mounts(), blind to other benches running meanwhile.
size_t mounts_below(const stdfs::path& dir) {
  std::ifstream f("/proc/self/mountinfo");
  size_t n = 0;
  for (std::string line; std::getline(f, line);)
    n += line.find(" " + dir.string() + "/") != std::string::npos;
  return n;
}

// Processes whose command line names path: the bench's own `fnexec serve` has its socket and
// state dir below the scratch directory.
size_t processes_mentioning(const std::string& path) {
  size_t n = 0;
  std::error_code ec;
  for (const auto& entry : stdfs::directory_iterator("/proc", ec)) {
    auto name = entry.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::ifstream f(entry.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(f)), {});
    if (cmdline.find(path) != std::string::npos) ++n;
  }
  return n;
}

// Entries below the scratch directory other than the ones the test made itself.
std::vector<std::string> left_in(const test::ScratchTmpfs& scratch, const std::set<std::string>& own) {
  std::vector<std::string> out;
  for (const auto& e : stdfs::directory_iterator(scratch.path()))
    if (!own.contains(e.path().filename().string())) out.push_back(e.path().filename().string());
  return out;
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
  test::reap_adopted_sandbox_inits();  // mode run: `fnexec run` leaves its PID 1 to us too
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

TEST_CASE("bench: removes the sandbox cgroups of an fnexec that is gone, and only those") {
  REQUIRE(test::is_root());
  test::ScratchTmpfs scratch("256m");
  auto tiny = bench_args(scratch, {"-n", "1", "--warmup", "1", "--mode", "cold", "--function", "true",
                                   "--peers", "none"});
  auto first = test::fnexec(tiny);  // makes the layout OWN/fnexec/sandboxes if it is not there yet
  REQUIRE_MESSAGE(first.exit_code == 0, first.err);
  // What a bench killed by SIGKILL leaves: an empty sandbox cgroup named after its dead pid.
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  REQUIRE(dead > 0);
  ::waitpid(dead, nullptr, 0);
  std::string gone = fmt::format("pool-{}-7", dead), alive = fmt::format("run-{}-7", ::getpid());
  std::vector<stdfs::path> parents;
  for (const auto& own : test::own_cgroup_dirs())
    if (stdfs::is_directory(own / "fnexec/sandboxes")) parents.push_back(own / "fnexec/sandboxes");
  REQUIRE_FALSE(parents.empty());
  for (const auto& p : parents) {
    stdfs::create_directory(p / gone);
    stdfs::create_directory(p / alive);
  }
  auto second = test::fnexec(tiny);
  CHECK_MESSAGE(second.exit_code == 0, second.err);
  for (const auto& p : parents) {
    CHECK_FALSE(stdfs::exists(p / gone));
    CHECK(stdfs::exists(p / alive));  // its owner (this test) still runs
    ::rmdir((p / alive).c_str());
  }
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
      {{"--socket", "/run/fnexec/fnexec.sock"}, "add --via-api"},
      {{"--concurrency", "1,x"}, "expected numbers from 1 to 256"},
      {{"--peers", "docker"}, "expected floor, pipe, bwrap, crun or runc"},
      {{"--mode", "lukewarm"}, "expected cold, warm and/or run"},
      {{"--function", "ls"}, "expected true, cat, python, node and/or c"},
      {{"--lifecycle", "forever"}, "expected oneshot, fresh and/or reuse"},
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

// In a suite of its own so that the VM suite runs it on cgroup v2 too, where the own daemon must
// get a layout of its own next to the bench's (tests/vm/meson.build).
TEST_SUITE("bench-api") {
  TEST_CASE("bench: --via-api times cold-api and warm-api over a daemon of its own and removes it") {
    REQUIRE(test::is_root());
    test::ScratchTmpfs scratch("256m");
    auto json = scratch / "api.json";
    auto before = test::ResourceSnapshot::take();
    size_t api_cgroups_before = test::count_cgroups_named("fnexec-bench-api");
    auto r = test::fnexec(
        bench_args(scratch, {"-n", "5", "--warmup", "1", "--concurrency", "1,2", "--mode", "cold,warm",
                             "--peers", "floor", "--via-api", "--json", json.string()}));
    INFO(r.err);
    INFO(r.out);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("skipped fnexec") == std::string::npos);
    CHECK(r.out.find("cold-api, warm-api = the same over fnexec serve's HTTP API") != std::string::npos);
    // min_warm 0: every cold-api invocation must have built its sandbox (the Fnexec-Start header).
    CHECK(r.out.find("served warm although") == std::string::npos);

    auto text = fs::read_file(json);
    REQUIRE(text);
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    REQUIRE(parser.parse(*text).get(doc) == simdjson::SUCCESS);
    std::set<std::string> api_series, systems;
    for (simdjson::dom::object s : simdjson::dom::array(doc["series"])) {
      std::string mode{std::string_view(s["mode"])}, fn{std::string_view(s["function"])};
      systems.insert(std::string(std::string_view(s["system"])) + " " + mode);
      if (!mode.ends_with("-api")) continue;
      int64_t conc = s["concurrency"];
      INFO(mode, " ", fn, " x", conc, ": ", std::string_view(s["first_error"]));
      CHECK(std::string_view(s["system"]) == "fnexec");
      CHECK(int64_t(s["failures"]) == 0);
      CHECK(simdjson::dom::array(s["samples_us"]).size() == 5);
      CHECK(double(s["invocations_per_s"]) > 0);
      api_series.insert(fmt::format("{} {} {}", mode, fn, conc));
    }
    CHECK(api_series == std::set<std::string>{"cold-api cat 1", "cold-api cat 2", "cold-api true 1",
                                              "cold-api true 2", "warm-api cat 1", "warm-api cat 2",
                                              "warm-api true 1", "warm-api true 2"});
    // The api rows are more entries of the same interleaved run, next to the in-process ones.
    CHECK(systems == std::set<std::string>{"fnexec cold", "fnexec cold-api", "fnexec warm", "fnexec warm-api",
                                           "floor process"});

    // Nothing of the daemon is left: no process, no cgroup of its prefix, no directory, no mount.
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    CHECK(processes_mentioning(scratch.path().string()) == 0);
    CHECK(test::count_cgroups_named("fnexec-bench-api") == api_cgroups_before);
    CHECK(left_in(scratch, {"api.json"}).empty());
    CHECK(mounts_below(scratch.path()) == 0);
    // Descendants only: other suites may come and go in the host's cgroups and processes meanwhile.
    CHECK(test::ResourceSnapshot::take().processes == before.processes);

    // A bench that fails after its daemon started (a bad --peers is checked only then) leaves
    // nothing behind either.
    auto failed = test::fnexec(bench_args(scratch, {"-n", "1", "--warmup", "1", "--mode", "warm",
                                                    "--function", "true", "--peers", "docker", "--via-api"}));
    INFO(failed.err);
    CHECK(failed.exit_code == 125);
    CHECK(failed.err.find("expected floor, pipe, bwrap, crun or runc") != std::string::npos);
    CHECK(processes_mentioning(scratch.path().string()) == 0);
    CHECK(test::count_cgroups_named("fnexec-bench-api") == api_cgroups_before);
    CHECK(left_in(scratch, {"api.json"}).empty());
    CHECK(mounts_below(scratch.path()) == 0);
  }
}

TEST_CASE("bench: --via-api --socket uses a running daemon and removes only its own functions") {
  REQUIRE(test::is_root());
  test::serve::Daemon d;
  d.start();
  REQUIRE(d.curl("PUT", "/v1/functions/hello", test::serve::kHello).status == 201);
  test::ScratchTmpfs scratch("256m");
  auto r = test::fnexec(
      bench_args(scratch, {"-n", "3", "--warmup", "1", "--mode", "cold,warm", "--function", "cat", "--peers",
                           "none", "--via-api", "--socket", d.socket().string()}));
  INFO(r.err);
  INFO(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("skipped fnexec") == std::string::npos);
  for (const char* row : {"fnexec  warm-api", "fnexec  cold-api"})
    CHECK(r.out.find(row) != std::string::npos);
  // The daemon got the bench image by upload, and says so; the bench's functions are gone again.
  CHECK(r.out.find("was imported into the daemon at " + d.socket().string()) != std::string::npos);
  auto functions = d.curl("GET", "/v1/functions");
  CHECK(functions.status == 200);
  CHECK(test::serve::contains(functions.body, R"("name":"hello")"));
  CHECK(!test::serve::contains(functions.body, "bench-api"));
  CHECK(d.curl("GET", "/healthz").status == 200);
  CHECK(d.stop() == 0);
  CHECK(test::count_cgroups_named("fnexec-bench-api") == 0);
}

// Runtime functions on fnexec's runtime helpers (python, c, node when installed) in every lifecycle,
// in-process and over the daemon's socket, beside the handler as a plain host process and as a
// long-lived one over a pipe. Each result is compared byte for byte with the host process's.
TEST_SUITE("bench-lifecycle") {
  TEST_CASE("bench: python, c and node in the lifecycles oneshot, fresh and reuse, with the floor and pipe peers") {
    REQUIRE(test::is_root());
    test::ScratchTmpfs scratch("256m");
    auto json = scratch / "lifecycle.json", svg = scratch / "lifecycle.svg";
    auto before = test::ResourceSnapshot::take();
    size_t cgroups_before = bench_cgroups(), api_cgroups_before = test::count_cgroups_named("fnexec-bench-api");
    std::vector<std::string> functions{"python", "c"};
    if (installed("node")) functions.push_back("node");
    std::string function_list;
    for (const auto& f : functions) function_list += (function_list.empty() ? "" : ",") + f;
    auto r = test::fnexec(bench_args(
        scratch, {"-n", "4", "--warmup", "1", "--concurrency", "1,2", "--mode", "warm", "--function",
                  function_list + ",cat", "--lifecycle", "oneshot,fresh,reuse", "--peers", "floor,pipe",
                  "--via-api", "--json", json.string(), "--svg", svg.string()}));
    INFO(r.err);
    INFO(r.out);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("function python, concurrency 2") != std::string::npos);
    CHECK(r.out.find("fresh, reuse = a pool hit whose process finished its init") != std::string::npos);

    auto text = fs::read_file(json);
    REQUIRE(text);
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    REQUIRE(parser.parse(*text).get(doc) == simdjson::SUCCESS);
    std::set<std::string> seen, expect;
    for (const auto& f : functions)
      for (int conc : {1, 2}) {
        for (std::string mode : {"warm", "fresh", "reuse"}) {
          expect.insert(fmt::format("fnexec {} {} {}", mode, f, conc));
          expect.insert(fmt::format("fnexec {}-api {} {}", mode, f, conc));
        }
        expect.insert(fmt::format("floor process {} {}", f, conc));
        expect.insert(fmt::format("floor pipe {} {}", f, conc));
      }
    // cat runs oneshot only: no fresh or reuse series and no pipe peer for it.
    for (int conc : {1, 2})
      for (std::string s : {"fnexec warm", "fnexec warm-api", "floor process"})
        expect.insert(fmt::format("{} cat {}", s, conc));
    for (simdjson::dom::object s : simdjson::dom::array(doc["series"])) {
      std::string key = fmt::format("{} {} {} {}", std::string_view(s["system"]), std::string_view(s["mode"]),
                                    std::string_view(s["function"]), int64_t(s["concurrency"]));
      INFO(key, ": ", std::string_view(s["first_error"]));
      seen.insert(key);
      // A wrong result counts as a failure: every event came back as the host process answers it.
      CHECK(int64_t(s["failures"]) == 0);
      CHECK(simdjson::dom::array(s["samples_us"]).size() == 4);
      CHECK(double(s["host_cpu_seconds"]) >= 0);
    }
    CHECK(seen == expect);

    // One row per framed function: parked pre-initialized sandboxes with processes and memory.
    std::set<std::string> parked;
    for (simdjson::dom::object m : simdjson::dom::array(doc["parked_memory"])) {
      std::string fn{std::string_view(m["function"])};
      parked.insert(fn);
      CHECK(int64_t(m["sandboxes"]) == 4);
      CHECK(int64_t(m["processes"]) >= 4);
      CHECK(double(m["pss_kib_per_sandbox"]) > 0);
      CHECK(double(m["cgroup_kib_per_sandbox"]) > 0);
    }
    CHECK(parked == std::set<std::string>(functions.begin(), functions.end()));
    bool memory_goal = false;
    for (simdjson::dom::object g : simdjson::dom::array(doc["goals"]))
      if (std::string_view(g["metric"]) == "parked python sandbox, PSS + cgroup")
        memory_goal = g["value"].is_double();
    CHECK(memory_goal);
    CHECK(fs::read_file(svg)->find("fnexec reuse-api · python") != std::string::npos);

    // Nothing left: pools, the daemon, the pipe peers' processes, cgroups, mounts.
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    CHECK(processes_mentioning(scratch.path().string()) == 0);
    CHECK(test::ResourceSnapshot::take().processes == before.processes);
    CHECK(bench_cgroups() == cgroups_before);
    CHECK(test::count_cgroups_named("fnexec-bench-api") == api_cgroups_before);
    CHECK(left_in(scratch, {"lifecycle.json", "lifecycle.svg"}).empty());
    CHECK(mounts_below(scratch.path()) == 0);
  }
}
