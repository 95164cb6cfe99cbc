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

  // The kernel's device policy (v1 devices controller here, the cgroup device BPF program in the VM):
  // with CAP_MKNOD a function can make a node of any number in its /dev (the one mount without
  // nodev), but neither make nor open one outside the default set unless --device passes it.
  TEST_CASE("device policy: --cap-add MKNOD cannot reach a host disk or /dev/mem; --device passes one in") {
    const std::string script =
        "mknod /dev/xsda b 8 0 2>&1 || echo mknod-block-refused; "
        "mknod /dev/xmem c 1 1 2>&1 || echo mknod-mem-refused; "
        "mknod /dev/xnull c 1 3 && echo x > /dev/xnull && echo own-null-works; "
        "head -c 4 /dev/urandom | wc -c; echo ok > /dev/null && echo dev-null-works; "
        "{ test -c /dev/kmsg && echo fnexec-device-policy-test > /dev/kmsg && echo kmsg-open; } || echo kmsg-absent";
    auto r = run_probe({"--cap-add", "MKNOD"}, {"sh", "-c", script});
    INFO(r.proc.out, r.proc.err);
    CHECK(r.proc.exit_code == 0);
    CHECK(r.proc.out.find("mknod-block-refused") != std::string::npos);
    CHECK(r.proc.out.find("mknod-mem-refused") != std::string::npos);
    CHECK(r.proc.out.find("own-null-works") != std::string::npos);
    CHECK(r.proc.out.find("\n4\ndev-null-works") != std::string::npos);
    CHECK(r.proc.out.find("kmsg-absent") != std::string::npos);  // the default /dev has no such node

    // Explicitly passed: the node appears and opens; others stay refused.
    auto passed = run_probe({"--cap-add", "MKNOD", "--device", "/dev/kmsg:/dev/kmsg:w"}, {"sh", "-c", script});
    INFO(passed.proc.out, passed.proc.err);
    CHECK(passed.proc.out.find("kmsg-open") != std::string::npos);
    CHECK(passed.proc.out.find("mknod-block-refused") != std::string::npos);

    // A node made with the number of a passed device but more access than passed is refused too.
    auto narrow = run_probe({"--cap-add", "MKNOD", "--device", "/dev/kmsg:/dev/kmsg:w"},
                            {"sh", "-c", "head -c 1 /dev/kmsg >/dev/null 2>&1 && echo read-ok || echo read-refused"});
    CHECK(narrow.proc.out.find("read-refused") != std::string::npos);
  }

  TEST_CASE("device policy: --device refuses what is not a device node, and paths outside /dev") {
    auto not_dev = fnexec({"--root", probe_rootfs().state.string(), "run", "--rootfs", "--device", "/etc/passwd",
                           probe_rootfs().rootfs.string(), "--", "true"});
    CHECK(not_dev.exit_code != 0);
    CHECK(not_dev.err.find("not a character or block device") != std::string::npos);
    auto outside = fnexec({"--root", probe_rootfs().state.string(), "run", "--rootfs", "--device", "/dev/null:/etc/null",
                           probe_rootfs().rootfs.string(), "--", "true"});
    CHECK(outside.exit_code != 0);
    CHECK(outside.err.find("below /dev") != std::string::npos);
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
