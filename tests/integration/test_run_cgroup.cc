// `fnexec run` with cgroup limits and accounting against the real kernel: v1 on the development
// hosts, v2 in the VM suite (tests/vm). The function measures itself (tests/integration/programs/
// cg_probe.cc) and the --report record, read from cgroup counters, is held against that.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/fixtures.h"
#include "support/proc.h"

namespace fnexec::test {
namespace {

namespace stdfs = std::filesystem;

// busybox-static and cg_probe in a rootfs directory on a tmpfs, and a state dir beside it.
struct ProbeRootfs {
  ScratchTmpfs scratch{"64m"};
  stdfs::path rootfs = scratch / "rootfs";
  stdfs::path state = scratch / "state";

  ProbeRootfs() {
    populate_busybox_rootfs(rootfs);
    stdfs::create_directories(state);
    const char* probe = std::getenv("FNEXEC_CG_PROBE");
    stdfs::copy_file(probe ? stdfs::path(probe) : build_root() / "tests/integration/cg_probe", rootfs / "bin/cg_probe");
  }
};

ProbeRootfs& probe_rootfs() {
  static ProbeRootfs r;
  return r;
}

bool in_vm() { return std::getenv("FNEXEC_IN_VM") != nullptr; }

struct Run {
  ProcResult proc;
  simdjson::dom::element report;
};

// fnexec run --rootfs with --report on stderr: the record is the last line of stderr.
Run run_probe(std::vector<std::string> flags, const std::vector<std::string>& argv) {
  static simdjson::dom::parser parser;  // the element stays valid until the next parse
  std::vector<std::string> args{"--root", probe_rootfs().state.string(), "run", "--rootfs", "--report", "-"};
  args.insert(args.end(), flags.begin(), flags.end());
  args.push_back(probe_rootfs().rootfs.string());
  args.push_back("--");
  args.insert(args.end(), argv.begin(), argv.end());
  Run r{fnexec(args), {}};
  auto start = r.proc.err.rfind("{\"wall_us\"");
  REQUIRE_MESSAGE(start != std::string::npos, "no report in stderr: " << r.proc.err);
  auto doc = parser.parse(r.proc.err.substr(start));
  REQUIRE_MESSAGE(!doc.error(), "report is not JSON: " << r.proc.err.substr(start));
  r.report = doc.value();
  return r;
}

int64_t number(const simdjson::dom::element& report, const char* key) {
  auto v = report[key];
  REQUIRE_MESSAGE(!v.error(), key << " missing");
  REQUIRE_MESSAGE(v.is_number(), key << " is " << simdjson::to_string(v.value()) << ", not a number");
  return v.is<int64_t>() ? int64_t(v.get_int64()) : int64_t(v.get_uint64());
}

bool boolean(const simdjson::dom::element& report, const char* key) { return bool(report[key].get_bool()); }

}  // namespace

TEST_SUITE("run-cgroup") {
  TEST_CASE("--memory 32m: touching 64 MiB is killed, exit 137, oom_killed, and stderr says so") {
    auto r = run_probe({"--memory", "32m"}, {"cg_probe", "alloc", "64"});
    CHECK(r.proc.exit_code == 137);
    CHECK(r.proc.out.find("touched") == std::string::npos);
    CHECK(r.proc.err.find("out of memory") != std::string::npos);
    CHECK(boolean(r.report, "oom_killed"));
    CHECK(number(r.report, "exit_code") == 137);
    CHECK(number(r.report, "memory_peak_bytes") <= (33 << 20));
  }

  TEST_CASE("--pids-limit 16: a fork bomb is contained and ends by the timeout; the host still forks") {
    auto before = ResourceSnapshot::take();
    auto r = run_probe({"--pids-limit", "16", "--timeout", in_vm() ? "3s" : "1s"}, {"cg_probe", "forkbomb"});
    CHECK(r.proc.exit_code == 124);
    CHECK(boolean(r.report, "timed_out"));
    CHECK(run({"/bin/true"}).exit_code == 0);
    CHECK(ResourceSnapshot::take().processes == before.processes);
  }

  TEST_CASE("a ~200 ms busy loop: cpu_user_us is within 25% of what the function measured itself") {
    auto r = run_probe({"--cgroups", "enabled"}, {"cg_probe", "burn", "200"});
    REQUIRE(r.proc.exit_code == 0);
    std::istringstream out(r.proc.out);
    std::string word;
    long self_us = 0;
    out >> word >> self_us;
    REQUIRE(word == "user_us");
    auto cg_us = number(r.report, "cpu_user_us");
    MESSAGE("function measured " << self_us << " us of user CPU, cgroup says " << cg_us << " us; report "
                                 << simdjson::to_string(r.report));
    CHECK(cg_us >= self_us * 3 / 4);
    CHECK(cg_us <= self_us * 5 / 4);
    CHECK(number(r.report, "cpu_system_us") >= 0);
  }

  TEST_CASE("memory_peak_bytes covers what the function touched") {
    auto r = run_probe({"--cgroups", "enabled"}, {"cg_probe", "alloc", "48"});
    REQUIRE(r.proc.exit_code == 0);
    CHECK(r.proc.out == "touched 48\n");
    CHECK(number(r.report, "memory_peak_bytes") >= (48 << 20));
    CHECK_FALSE(boolean(r.report, "oom_killed"));
  }

  TEST_CASE("--cpus 0.5 stretches a 1 s busy loop to at least 1.8 s of wall time") {
    auto r = run_probe({"--cpus", "0.5"}, {"cg_probe", "burn", "1000"});
    REQUIRE(r.proc.exit_code == 0);
    MESSAGE("wall " << number(r.report, "wall_us") << " us");
    CHECK(number(r.report, "wall_us") >= 1'800'000);
  }

  TEST_CASE("after many runs with a cgroup each, no cgroup of ours is left") {
    const int runs = in_vm() ? 50 : 1000;  // code in the TCG guest runs ~16x slower
    size_t cgroups_before = count_cgroups_named("run-");
    for (int i = 0; i < runs; ++i) {
      auto r = fnexec({"--root", probe_rootfs().state.string(), "run", "--rootfs", "--cgroups", "enabled",
                       "--memory", "64m", probe_rootfs().rootfs.string(), "--", "true"});
      if (r.exit_code != 0) FAIL("run " << i << " failed: " << r.err);
    }
    CHECK(count_cgroups_named("run-") == cgroups_before);
  }
}

}  // namespace fnexec::test
