// Warm pools against the real kernel: busybox images built with rootfs-tools/mkimage in a tmpfs store,
// sandboxes parked and invoked in-process through PoolSet.
#include <doctest/doctest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cgroup/cgroup.h"
#include "image/store.h"
#include "pool/pool.h"
#include "pool_support.h"
#include "support/fixtures.h"
#include "support/proc.h"
#include "util/fs.h"

namespace fnexec::test {
namespace {

namespace stdfs = std::filesystem;
using namespace std::chrono_literals;

// fn:1 and fn:2: busybox with /version holding "1" or "2" (two digests of one function).
struct PoolImages {
  static constexpr const char* kPrefix = "fnexec-test-pool";
  ScratchTmpfs scratch{"256m"};
  stdfs::path store_dir = scratch / "store";
  std::optional<image::Store> store;
  std::shared_ptr<cgroup::Hierarchy> cgroups;

  PoolImages() {
    for (const char* v : {"1", "2"}) {
      std::ofstream(scratch / (std::string("version") + v)) << v;
      auto mk = run({rootfs_tool("mkimage").string(), "--busybox", "--file",
                     (scratch / (std::string("version") + v)).string() + "=/version", "--ref",
                     std::string("fn:") + v, "-o", (scratch / (std::string("img") + v)).string()});
      REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    }
    auto s = image::Store::open(store_dir);
    REQUIRE(s);
    store.emplace(std::move(*s));
    for (const char* v : {"1", "2"})
      REQUIRE(store->import("oci:" + (scratch / (std::string("img") + v)).string(),
                            {.name = std::string("fn:") + v}));
    cgroups = suite_cgroups(kPrefix);
  }
  // The suite's own cgroup layout goes with it; every sandbox in it was destroyed by its test.
  ~PoolImages() {
    cgroups.reset();
    remove_own_cgroup_tree(kPrefix);
  }
};

PoolImages& images() {
  static PoolImages p;
  return p;
}

std::unique_ptr<pool::PoolSet> make_pools(uint32_t max_sandboxes = 256) {
  auto p = pool::PoolSet::create(*images().store, images().cgroups, {.max_sandboxes = max_sandboxes});
  REQUIRE(p);
  return std::move(*p);
}

pool::FunctionSpec function(const std::string& name, std::vector<std::string> cmd, uint32_t min_warm = 1) {
  pool::FunctionSpec f;
  f.name = name;
  f.image = "fn:1";
  f.cmd = std::move(cmd);
  f.min_warm = min_warm;
  f.timeout = 20s;
  return f;
}

void wait_warm(const pool::PoolSet& pools, const std::string& name, uint32_t n) {
  REQUIRE_MESSAGE(wait_for([&] { return stats_of(pools, name).warm >= n; }), "pool of " << name << " never filled to " << n);
}


bool host_has_process_with(const std::string& token) {
  for (auto& e : stdfs::directory_iterator("/proc")) {
    auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "cmdline");
    std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    for (auto& c : cmd)
      if (c == '\0') c = ' ';
    if (cmd.find(token) != std::string::npos) return true;
  }
  return false;
}

struct Leaks : PoolLeaks {
  Leaks() : PoolLeaks(images().scratch.path()) {}
};

}  // namespace

TEST_SUITE("pool") {
  TEST_CASE("a filled pool serves warm; a pool of 0 serves cold; events go in and out byte for byte") {
    images();
    Leaks leaks;
    {
      auto pools = make_pools();
      REQUIRE(pools->configure(function("cat", {"cat"}, 2)));
      REQUIRE(pools->configure(function("cold-cat", {"cat"}, 0)));
      wait_warm(*pools, "cat", 2);

      auto one = invoke(*pools, "cat", "x");
      CHECK(one.start == pool::StartKind::warm);
      CHECK(one.output == "x");
      CHECK(one.record.exit_code == 0);
      CHECK(one.record.cpu_user_us.has_value());

      std::string binary;
      for (int i = 0; i < 4096; ++i) binary += static_cast<char>(i & 0xff);
      wait_warm(*pools, "cat", 1);
      auto bin = invoke(*pools, "cat", binary);
      CHECK(bin.start == pool::StartKind::warm);
      CHECK(bin.output == binary);

      std::string mib(1 << 20, '\0');
      for (size_t i = 0; i < mib.size(); ++i) mib[i] = static_cast<char>((i * 7919) >> 3);
      auto big = invoke(*pools, "cold-cat", mib);
      CHECK(big.start == pool::StartKind::cold);
      CHECK(big.output.size() == mib.size());
      CHECK(big.output == mib);
      CHECK(stats_of(*pools, "cold-cat").warm == 0);

      auto empty = invoke(*pools, "cat", "");
      CHECK(empty.output == "");
      CHECK(empty.record.exit_code == 0);

      auto missing = pools->invoke("no-such", "x");
      REQUIRE_FALSE(missing);
      CHECK(missing.error().kind == ErrorKind::not_found);
    }
    leaks.check_same();
  }

  TEST_CASE("refills are built at a lower priority; the function and a cold start run at ours") {
    images();
    auto nice_of = [](const std::string& stat) {
      std::istringstream in(stat.substr(stat.rfind(')') + 2));
      std::string field;
      for (int i = 3; i <= 19; ++i) in >> field;  // field 19: nice
      return std::stoi(field);
    };
    int ours = nice_of(fs::read_file("/proc/thread-self/stat").value_or(""));
    REQUIRE(ours <= 9);
    auto pools = make_pools();
    // Field 19 of the function's and of PID 1's stat, as the function sees them.
    auto probe = std::vector<std::string>{"sh", "-c", "cut -d' ' -f19 /proc/self/stat /proc/1/stat"};
    REQUIRE(pools->configure(function("nice-warm", probe, 1)));
    REQUIRE(pools->configure(function("nice-cold", probe, 0)));
    wait_warm(*pools, "nice-warm", 1);
    // The launcher thread, whose last job was a refill, and the cleanup thread run nicer.
    int nicer = 0;
    for (const auto& t : stdfs::directory_iterator("/proc/self/task"))
      if (nice_of(fs::read_file(t.path() / "stat").value_or("")) == ours + 10) ++nicer;
    CHECK(nicer == 2);
    std::string expect = std::to_string(ours) + "\n" + std::to_string(ours) + "\n";
    auto warm = invoke(*pools, "nice-warm", "");
    CHECK(warm.start == pool::StartKind::warm);
    CHECK(warm.output == expect);
    auto cold = invoke(*pools, "nice-cold", "");
    CHECK(cold.start == pool::StartKind::cold);
    CHECK(cold.output == expect);
  }

  TEST_CASE("the function gets the image's process: argv, env, workdir, user, exit code and stderr tail") {
    images();
    auto pools = make_pools();
    auto f = function("env", {"sh", "-c", "echo $GREETING $HOSTNAME; pwd; id -u; cat /version; exit 3"}, 0);
    f.env = {"GREETING=hi"};
    f.workdir = "/tmp";
    f.user = "1000:1000";
    REQUIRE(pools->configure(f));
    auto r = invoke(*pools, "env", "");
    CHECK(r.output == "hi fnexec\n/tmp\n1000\n1");
    CHECK(r.record.exit_code == 3);

    auto chatty = function("chatty", {"sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line$i >&2; i=$((i+1)); done"}, 0);
    chatty.max_log_bytes = 1000;
    REQUIRE(pools->configure(chatty));
    auto c = invoke(*pools, "chatty", "");
    CHECK(c.record.exit_code == 0);
    CHECK(c.log.size() <= 1000);
    CHECK(c.log.size() > 900);
    CHECK(c.log.ends_with("line2998\nline2999\n"));
  }

  TEST_CASE("output over max_output_bytes kills the sandbox: output_too_large, nothing truncated") {
    images();
    auto pools = make_pools();
    auto f = function("yes", {"sh", "-c", "yes fnexec-pool-yes-marker"}, 0);
    f.max_output_bytes = 64 << 10;
    REQUIRE(pools->configure(f));
    auto r = invoke(*pools, "yes", "");
    CHECK(r.output_too_large);
    CHECK(r.output.empty());
    CHECK(r.record.signal == SIGKILL);
    CHECK_FALSE(r.record.timed_out);
    CHECK_FALSE(host_has_process_with("fnexec-pool-yes-marker"));

    // Exactly at the cap is fine.
    auto exact = function("exact", {"head", "-c", "65536", "/dev/zero"}, 0);
    exact.max_output_bytes = 64 << 10;
    REQUIRE(pools->configure(exact));
    auto e = invoke(*pools, "exact", "");
    CHECK_FALSE(e.output_too_large);
    CHECK(e.output.size() == 65536);
  }

  TEST_CASE("timeout kills everything the function started: timed_out, exit 124") {
    images();
    auto pools = make_pools();
    auto f = function("sleepy", {"sh", "-c", "sleep 1234 & sleep 1234; echo never"}, 1);
    f.timeout = 300ms;
    REQUIRE(pools->configure(f));
    wait_warm(*pools, "sleepy", 1);
    auto r = invoke(*pools, "sleepy", "");
    CHECK(r.start == pool::StartKind::warm);
    CHECK(r.record.timed_out);
    CHECK(r.record.exit_code == 124);
    CHECK(r.output == "");
    CHECK_FALSE(host_has_process_with("sleep 1234"));
  }

  TEST_CASE("a memory limit OOM-kills: oom_killed, and usage is billed from go") {
    images();
    auto pools = make_pools();
    auto f = function("hog", {"sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"}, 1);
    f.limits.memory_bytes = 32 << 20;
    REQUIRE(pools->configure(f));
    wait_warm(*pools, "hog", 1);
    auto r = invoke(*pools, "hog", "");
    CHECK(r.record.oom_killed);
    CHECK(r.record.exit_code == 137);
    CHECK(r.output == "");

    if (images().cgroups->mode() != cgroup::Mode::disabled) {
      REQUIRE(pools->configure(function("quick", {"true"}, 1)));
      wait_warm(*pools, "quick", 1);
      auto q = invoke(*pools, "quick", "");
      REQUIRE(q.record.cpu_user_us);
      REQUIRE(q.record.cpu_system_us);
      // Setup (mounts, clone, privileges) is billed to nobody: `true` runs in far less than 50 ms.
      CHECK(*q.record.cpu_user_us + *q.record.cpu_system_us < 50000);
    }
  }

  TEST_CASE("max_concurrency answers unavailable beyond it; the global cap too") {
    images();
    auto pools = make_pools();
    auto f = function("slow", {"sh", "-c", "read line; echo $line"}, 0);
    f.max_concurrency = 1;
    REQUIRE(pools->configure(f));
    // gate runs for 2 s: long enough to be seen busy, and then refused a second invocation.
    auto g = function("gate", {"sh", "-c", "sleep 2; echo done"}, 0);
    g.max_concurrency = 1;
    REQUIRE(pools->configure(g));
    std::thread first([&] { CHECK(invoke(*pools, "gate", "").output == "done\n"); });
    REQUIRE(wait_for([&] { return stats_of(*pools, "gate").busy == 1; }));
    auto second = pools->invoke("gate", "");
    REQUIRE_FALSE(second);
    CHECK(second.error().kind == ErrorKind::unavailable);
    first.join();
    CHECK(invoke(*pools, "gate", "").output == "done\n");  // free again
    CHECK(invoke(*pools, "slow", "hello\n").output == "hello\n");

    auto capped = make_pools(1);
    REQUIRE(capped->configure(g));
    std::thread busy([&] { CHECK(invoke(*capped, "gate", "").output == "done\n"); });
    REQUIRE(wait_for([&] { return stats_of(*capped, "gate").busy == 1; }));
    auto other = function("other", {"true"}, 0);
    REQUIRE(capped->configure(other));
    auto refused = capped->invoke("other", "");
    REQUIRE_FALSE(refused);
    CHECK(refused.error().kind == ErrorKind::unavailable);
    busy.join();
  }

  TEST_CASE("configure() with a new image never hands out a sandbox of the old one") {
    images();
    auto pools = make_pools();
    auto f = function("versioned", {"cat", "/version"}, 3);
    REQUIRE(pools->configure(f));
    wait_warm(*pools, "versioned", 3);
    CHECK(invoke(*pools, "versioned", "").output == "1");
    f.image = "fn:2";
    REQUIRE(pools->configure(f));
    for (int i = 0; i < 8; ++i) CHECK(invoke(*pools, "versioned", "").output == "2");
    wait_warm(*pools, "versioned", 3);
    for (int i = 0; i < 3; ++i) {
      auto r = invoke(*pools, "versioned", "");
      CHECK(r.output == "2");
    }
    // A change that does not shape the sandbox keeps the parked ones.
    wait_warm(*pools, "versioned", 3);
    f.max_concurrency = 5;
    REQUIRE(pools->configure(f));
    CHECK(stats_of(*pools, "versioned").warm == 3);

    auto bad = function("bad", {"true"});
    bad.image = "no-such:1";
    auto e = pools->configure(bad);
    REQUIRE_FALSE(e);
    CHECK(e.error().message().find("no-such") != std::string::npos);
  }

  TEST_CASE("a sandbox whose setup fails is reported and retried with back-off, not in a hot loop") {
    images();
    auto pools = make_pools();
    auto f = function("broken", {"true"}, 2);
    f.workdir = "/version";  // a file: chdir fails during setup
    REQUIRE(pools->configure(f));
    REQUIRE(wait_for([&] { return stats_of(*pools, "broken").setup_failures >= 1; }));
    std::this_thread::sleep_for(1s);
    // 100 ms, 200 ms, 400 ms ... between attempts: a handful in a second, not hundreds.
    CHECK(stats_of(*pools, "broken").setup_failures < 20);
    CHECK(stats_of(*pools, "broken").warm == 0);
    auto r = pools->invoke("broken", "");
    REQUIRE_FALSE(r);
    CAPTURE(r.error().message());
    CHECK(r.error().message().find("/version") != std::string::npos);
  }

  TEST_CASE("a function that closes stdout early or never reads stdin works; no SIGPIPE reaches us") {
    images();
    auto pools = make_pools();
    REQUIRE(pools->configure(function("ignores-stdin", {"sh", "-c", "echo ok"}, 1)));
    REQUIRE(pools->configure(function("closes-stdout", {"sh", "-c", "exec >&- 0<&-; sleep 0.2; echo log >&2"}, 1)));
    std::string mib(1 << 20, 'e');
    for (int i = 0; i < 3; ++i) {
      auto r = invoke(*pools, "ignores-stdin", mib);
      CHECK(r.output == "ok\n");
      CHECK(r.record.exit_code == 0);
      auto c = invoke(*pools, "closes-stdout", mib);
      CHECK(c.output == "");
      CHECK(c.log == "log\n");
      CHECK(c.record.exit_code == 0);
    }
  }

  TEST_CASE("remove() and shutdown() leave no fds, processes, cgroups or mounts; calls after shutdown are refused") {
    images();
    Leaks leaks;
    {
      auto pools = make_pools();
      REQUIRE(pools->configure(function("a", {"cat"}, 3)));
      REQUIRE(pools->configure(function("b", {"sh", "-c", "sleep 30"}, 2)));
      wait_warm(*pools, "a", 3);
      wait_warm(*pools, "b", 2);
      CHECK(invoke(*pools, "a", "1").output == "1");
      pools->remove("a");
      CHECK_FALSE(pools->invoke("a", "x"));
      CHECK(pools->stats().size() == 1);
      // An invocation still running at shutdown is killed once the grace period is over.
      std::thread running([&] {
        auto r = pools->invoke("b", "");
        CHECK((!r || r->record.exit_code != 0));
      });
      REQUIRE(wait_for([&] { return stats_of(*pools, "b").busy == 1; }));
      pools->shutdown(200ms);
      running.join();
      auto after = pools->invoke("b", "");
      REQUIRE_FALSE(after);
      CHECK(after.error().kind == ErrorKind::unavailable);
    }
    leaks.check_same();
  }

  TEST_CASE("an idle pool shrinks after idle_timeout and fills again on use") {
    images();
    auto pools = make_pools();
    auto f = function("idle", {"cat"}, 2);
    f.idle_timeout = 1s;
    REQUIRE(pools->configure(f));
    wait_warm(*pools, "idle", 2);
    REQUIRE(wait_for([&] { return stats_of(*pools, "idle").warm == 0; }));
    CHECK(invoke(*pools, "idle", "again").output == "again");
    wait_warm(*pools, "idle", 2);
  }

  TEST_CASE("16 threads invoking at once, then 2000 invocations, leave nothing behind") {
    images();
    Leaks leaks;
    {
      auto pools = make_pools();
      auto f = function("echo", {"cat"}, 8);
      f.max_concurrency = 16;
      REQUIRE(pools->configure(f));
      wait_warm(*pools, "echo", 8);
      std::atomic<int> wrong{0}, warm{0};
      std::vector<std::thread> threads;
      for (int t = 0; t < 16; ++t)
        threads.emplace_back([&, t] {
          for (int i = 0; i < 20; ++i) {
            std::string event = "thread " + std::to_string(t) + " call " + std::to_string(i);
            auto r = pools->invoke("echo", event);
            if (!r || r->output != event || r->record.exit_code != 0) ++wrong;
            else if (r->start == pool::StartKind::warm) ++warm;
          }
        });
      for (auto& t : threads) t.join();
      CHECK(wrong == 0);
      CHECK(warm > 0);

      int bad = 0;
      for (int i = 0; i < 2000; ++i) {
        std::string event = std::to_string(i);
        auto r = pools->invoke("echo", event);
        if (!r || r->output != event) ++bad;
      }
      CHECK(bad == 0);
    }
    leaks.check_same();
  }
}

}  // namespace fnexec::test
