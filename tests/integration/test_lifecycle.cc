// fresh and reuse lifecycles through the pool API against the real kernel: an image of busybox and
// frame_probe (programs/frame_probe.cc, fnexec/1 spoken by hand, every misbehaviour on demand),
// built by rootfs-tools/mkimage in a tmpfs store.
#include <doctest/doctest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cgroup/cgroup.h"
#include "image/store.h"
#include "pool/pool.h"
#include "pool_support.h"
#include "support/fixtures.h"
#include "support/proc.h"

namespace fnexec::test {
namespace {

namespace stdfs = std::filesystem;
using namespace std::chrono_literals;
using pool::Lifecycle;

struct LifecycleImages {
  static constexpr const char* kPrefix = "fnexec-test-lifecycle";
  ScratchTmpfs scratch{"2g"};  // the runtime image below (python3, node) is about 300 MiB unpacked
  std::optional<image::Store> store;
  std::shared_ptr<cgroup::Hierarchy> cgroups;

  LifecycleImages() {
    const char* probe = std::getenv("FNEXEC_FRAME_PROBE");
    stdfs::path probe_path = probe ? stdfs::path(probe) : build_root() / "tests/integration/frame_probe";
    auto mk = run({rootfs_tool("mkimage").string(), "--busybox", "--file", probe_path.string() + "=/bin/frame_probe",
                   "--ref", "probe:1", "-o", (scratch / "img").string()});
    REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    auto s = image::Store::open(scratch / "store");
    REQUIRE(s);
    store.emplace(std::move(*s));
    REQUIRE(store->import("oci:" + (scratch / "img").string(), {.name = std::string("probe:1")}));
    cgroups = suite_cgroups(kPrefix);
  }
  ~LifecycleImages() {
    cgroups.reset();
    remove_own_cgroup_tree(kPrefix);
  }
};

LifecycleImages& images() {
  static LifecycleImages p;
  return p;
}

// runtimes:1: the host's python3 (+ stdlib) and node, the runtime helpers at /opt/fnexec, and the
// example handlers of runtime/helpers/examples at /fn (C: /fn/echo).
struct RuntimeImage {
  ScratchTmpfs scratch{"2g"};
  RuntimeImage() {
    auto examples = source_root() / "runtime/helpers/examples";
    const char* c_echo = std::getenv("FNEXEC_EXAMPLE_C");
    REQUIRE(c_echo);
    auto mk = run({rootfs_tool("mkimage").string(), "--busybox", "--python", "--node", "--host-binary",
                   std::string(c_echo) + "=/fn/echo", "--fnexec-runtime", "--file",
                   (examples / "python/handler.py").string() + "=/fn/handler.py", "--file",
                   (examples / "node/index.js").string() + "=/fn/index.js", "--workdir", "/fn", "--compression",
                   "none", "--ref", "runtimes:1", "-o", (scratch / "img").string()});
    REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    auto imported = images().store->import("oci:" + (scratch / "img").string(), {.name = std::string("runtimes:1")});
    REQUIRE_MESSAGE(imported, imported.error().message());
  }
};

void runtime_image() {
  static RuntimeImage image;
}

pool::FunctionSpec runtime_function(const std::string& runtime, Lifecycle lifecycle) {
  pool::FunctionSpec f;
  f.name = runtime + "-" + std::string(pool::to_string(lifecycle));
  f.image = "runtimes:1";
  if (runtime == "python")
    f.cmd = std::vector<std::string>{"python3", "/opt/fnexec/fnexec_runtime.py", "handler.handler"};
  else if (runtime == "node")
    f.cmd = std::vector<std::string>{"node", "/opt/fnexec/fnexec_runtime.js", "./index.handler"};
  else
    f.cmd = std::vector<std::string>{"/fn/echo"};
  f.lifecycle = lifecycle;
  f.timeout = 20s;
  return f;
}

std::unique_ptr<pool::PoolSet> make_pools() {
  auto p = pool::PoolSet::create(*images().store, images().cgroups, {});
  REQUIRE(p);
  return std::move(*p);
}

pool::FunctionSpec probe(const std::string& name, Lifecycle lifecycle, const std::string& mode, uint32_t min_warm = 1) {
  pool::FunctionSpec f;
  f.name = name;
  f.image = "probe:1";
  f.cmd = std::vector<std::string>{"/bin/frame_probe", mode};
  f.lifecycle = lifecycle;
  f.min_warm = min_warm;
  f.timeout = 20s;
  return f;
}


struct Leaks : PoolLeaks {
  Leaks() : PoolLeaks(images().scratch.path()) {}
};

std::string random_bytes(size_t n) {
  std::mt19937_64 rng(n);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

}  // namespace

TEST_SUITE("lifecycle") {
  TEST_CASE("Python, Node and C handlers (the runtime helpers) in fresh and reuse: bytes, state, errors, logs, init") {
    images();
    runtime_image();
    Leaks leaks;
    {
      auto pools = make_pools();
      for (std::string runtime : {"python", "node", "c"})
        for (auto lc : {Lifecycle::fresh, Lifecycle::reuse}) {
          auto spec = runtime_function(runtime, lc);
          CAPTURE(spec.name);
          REQUIRE(pools->configure(spec));
          for (size_t n : {size_t{0}, size_t{1}, size_t{5} << 20}) {
            auto payload = n == 1 ? std::string("\xff") : random_bytes(n);
            auto r = invoke(*pools, spec.name, payload);
            CHECK(r.error_type == "");
            CHECK(r.output.size() == n);
            CHECK(r.output == payload);
          }
          // State: events this process has seen.
          std::string counts;
          for (int i = 0; i < 3; ++i)
            counts += invoke(*pools, spec.name, runtime == "c" ? "count" : R"({"count": true})").output + " ";
          CHECK(counts == (lc == Lifecycle::reuse ? "4 5 6 " : "1 1 1 "));  // reuse: after the 3 events above
          auto failed = invoke(*pools, spec.name, runtime == "c" ? "raise:boom" : R"({"raise": "boom"})");
          CHECK(failed.error_type == "Function.Error");
          REQUIRE(failed.error_body);
          CHECK(failed.error_body->find("boom") != std::string::npos);
          CHECK(failed.retired == (lc == Lifecycle::fresh ? "fresh" : ""));
          auto logged = invoke(*pools, spec.name, runtime == "c" ? "print:hello" : R"({"print": "hello"})");
          CHECK(logged.error_type == "");
          CHECK(logged.log.find("hello") != std::string::npos);
          CHECK(logged.output.find("fd1") == std::string::npos);  // a stray print never reaches the result

          auto broken = spec;
          broken.name += "-broken";
          broken.min_warm = 0;
          broken.env = {"EXAMPLE_FAIL_INIT=1"};
          REQUIRE(pools->configure(broken));
          auto init = invoke(*pools, broken.name, "x");
          CHECK(init.error_type == "Runtime.InitError");
          CHECK(init.error_body.has_value() == (runtime != "c" || init.error_body.has_value()));
          pools->remove(broken.name);
        }
    }
    leaks.check_same();
  }

  TEST_CASE("Node's helper keeps its frame channel private when the function is not root") {
    // Node has no dup(): the helper reopens its stdio pipes through /proc/self/fd, which a pipe
    // owned by root (mode 0600) refuses to uid 65534, and a raw write to fd 1 then lands in a frame.
    images();
    runtime_image();
    Leaks leaks;
    {
      auto pools = make_pools();
      auto spec = runtime_function("node", Lifecycle::reuse);
      spec.name += "-nobody";
      spec.user = "65534:65534";
      REQUIRE(pools->configure(spec));
      for (int i = 0; i < 2; ++i) {
        auto logged = invoke(*pools, spec.name, R"({"print": "hello"})");
        CHECK(logged.error_type == "");
        CHECK(logged.log.find("fd1: hello") != std::string::npos);
        CHECK(logged.output.find("fd1") == std::string::npos);
      }
    }
    leaks.check_same();
  }

  TEST_CASE("fresh and reuse pass 0 B, 1 B and 5 MiB of binary exactly, and set the protocol's environment") {
    images();
    Leaks leaks;
    {
      auto pools = make_pools();
      for (auto lc : {Lifecycle::fresh, Lifecycle::reuse}) {
        std::string name = std::string("bytes-") + std::string(pool::to_string(lc));
        REQUIRE(pools->configure(probe(name, lc, "echo")));
        for (size_t n : {size_t{0}, size_t{1}, size_t{5} << 20}) {
          auto payload = random_bytes(n);
          if (n == 1) payload = "\n";
          auto r = invoke(*pools, name, payload);
          CHECK(r.error_type == "");
          CHECK(r.lifecycle == lc);
          CHECK(r.output.size() == n);
          CHECK(r.output == payload);
        }
        REQUIRE(pools->configure(probe(name + "-env", lc, "env")));
        auto r = invoke(*pools, name + "-env", "");
        CHECK(r.output == "fnexec/1 " + std::string(pool::to_string(lc)) + " " + name + "-env");
      }
    }
    leaks.check_same();
  }

  TEST_CASE("reuse keeps state across events in one sandbox; fresh and oneshot never do") {
    images();
    Leaks leaks;
    {
      auto pools = make_pools();
      REQUIRE(pools->configure(probe("count-reuse", Lifecycle::reuse, "count")));
      REQUIRE(pools->configure(probe("count-fresh", Lifecycle::fresh, "count")));
      auto oneshot = probe("count-oneshot", Lifecycle::oneshot, "");
      oneshot.cmd = std::vector<std::string>{"sh", "-c", "echo x >> /tmp/state; wc -l < /tmp/state"};
      REQUIRE(pools->configure(oneshot));
      std::set<std::string> fresh_ids;
      std::string reuse_id;
      for (int i = 1; i <= 3; ++i) {
        auto r = invoke(*pools, "count-reuse", "");
        CHECK(r.output == std::to_string(i));
        CHECK(r.sandbox_events == static_cast<uint64_t>(i));
        CHECK(r.retired == "");
        CHECK(r.init_us.has_value() == (i == 1));
        if (i == 1) reuse_id = r.sandbox_id;
        CHECK(r.sandbox_id == reuse_id);

        auto f = invoke(*pools, "count-fresh", "");
        CHECK(f.output == "1");
        CHECK(f.sandbox_events == 1);
        CHECK(f.retired == "fresh");
        CHECK(f.init_us.has_value());
        fresh_ids.insert(f.sandbox_id);

        CHECK(invoke(*pools, "count-oneshot", "").output == "1\n");
      }
      CHECK(fresh_ids.size() == 3);
    }
    leaks.check_same();
  }

  TEST_CASE("max_events_per_sandbox retires a reuse sandbox after that many events") {
    images();
    auto pools = make_pools();
    auto spec = probe("max-events", Lifecycle::reuse, "count");
    spec.max_events_per_sandbox = 2;
    REQUIRE(pools->configure(spec));
    std::vector<std::string> outputs, retired;
    std::set<std::string> ids;
    for (int i = 0; i < 4; ++i) {
      auto r = invoke(*pools, "max-events", "");
      outputs.push_back(r.output);
      retired.push_back(r.retired);
      ids.insert(r.sandbox_id);
    }
    CHECK(outputs == std::vector<std::string>{"1", "2", "1", "2"});
    CHECK(retired == std::vector<std::string>{"", "max_events", "", "max_events"});
    CHECK(ids.size() == 2);
  }

  TEST_CASE("stderr is attributed to the event that wrote it") {
    images();
    auto pools = make_pools();
    REQUIRE(pools->configure(probe("logs", Lifecycle::reuse, "log")));
    for (const char* e : {"one", "two", "three"}) {
      auto r = invoke(*pools, "logs", e);
      CHECK(r.output == e);
      CHECK(r.log == std::string("log ") + e + "\n");
    }
  }

  TEST_CASE("an ERROR frame is a Function.Error and the reuse sandbox lives on") {
    images();
    auto pools = make_pools();
    REQUIRE(pools->configure(probe("errors", Lifecycle::reuse, "error")));
    auto a = invoke(*pools, "errors", "x");
    CHECK(a.error_type == "Function.Error");
    REQUIRE(a.error_body);
    CHECK(*a.error_body == R"({"errorType":"ValueError","errorMessage":"bad x","stackTrace":[]})");
    CHECK(a.retired == "");
    auto b = invoke(*pools, "errors", "y");
    CHECK(b.sandbox_id == a.sandbox_id);
    CHECK(b.sandbox_events == 2);
  }

  TEST_CASE("misbehaviour mid-event ends only that sandbox, with the reason; the next event gets a new one") {
    images();
    Leaks leaks;
    {
      auto pools = make_pools();
      struct Case {
        const char* mode;
        const char* error_type;
        const char* retired;
      };
      for (auto c : {Case{"malformed", "Runtime.ProtocolError", "protocol"},
                     Case{"wrong-id", "Runtime.ProtocolError", "protocol"},
                     Case{"exit", "Runtime.ExitError", "exit"}, Case{"crash", "Runtime.ExitError", "exit"},
                     Case{"hang", "Runtime.Timeout", "timeout"}}) {
        CAPTURE(c.mode);
        std::string name = std::string("bad-") + c.mode;
        auto spec = probe(name, Lifecycle::reuse, c.mode);
        if (std::string(c.mode) == "hang") spec.timeout = 300ms;
        REQUIRE(pools->configure(spec));
        auto a = invoke(*pools, name, "e");
        CHECK(a.error_type == c.error_type);
        CHECK(a.retired == c.retired);
        CHECK(a.output == "");
        auto b = invoke(*pools, name, "e");
        CHECK(b.error_type == c.error_type);
        CHECK(b.sandbox_id != a.sandbox_id);
        CHECK(b.sandbox_events == 1);
        if (std::string(c.mode) == "exit") CHECK(a.record.exit_code == 3);
        if (std::string(c.mode) == "crash") CHECK(a.record.signal == SIGSEGV);
        if (std::string(c.mode) == "hang") CHECK(a.record.timed_out);
      }

      auto spec = probe("too-big", Lifecycle::reuse, "big");
      spec.max_output_bytes = 1000;
      REQUIRE(pools->configure(spec));
      auto ok = invoke(*pools, "too-big", "1000");
      CHECK(ok.output.size() == 1000);
      auto big = invoke(*pools, "too-big", "1001");
      CHECK(big.output_too_large);
      CHECK(big.error_type == "Runtime.OutputTooLarge");
      CHECK(big.retired == "output_too_large");
      CHECK(big.sandbox_id == ok.sandbox_id);
      CHECK(invoke(*pools, "too-big", "5").sandbox_id != ok.sandbox_id);
    }
    leaks.check_same();
  }

  TEST_CASE("an init that fails, exits or outlasts init_timeout is an init error, and the pool backs off") {
    images();
    Leaks leaks;
    {
      auto pools = make_pools();
      auto error = probe("init-error", Lifecycle::fresh, "init-error", 0);
      REQUIRE(pools->configure(error));
      auto r = invoke(*pools, "init-error", "e");
      CHECK(r.error_type == "Runtime.InitError");
      CHECK(r.retired == "init");
      REQUIRE(r.error_body);
      CHECK(*r.error_body == R"({"errorType":"ImportError","errorMessage":"no module named nope"})");
      CHECK(r.log == "init broke\n");

      REQUIRE(pools->configure(probe("init-exit", Lifecycle::reuse, "init-exit", 0)));
      r = invoke(*pools, "init-exit", "e");
      CHECK(r.error_type == "Runtime.InitError");
      CHECK_FALSE(r.error_body);
      CHECK(r.log.find("exited with status 2 before READY") != std::string::npos);

      auto hang = probe("init-hang", Lifecycle::reuse, "init-hang", 0);
      hang.init_timeout = 300ms;
      REQUIRE(pools->configure(hang));
      r = invoke(*pools, "init-hang", "e");
      CHECK(r.error_type == "Runtime.InitError");
      CHECK(r.log.find("init_timeout") != std::string::npos);
      CHECK(stats_of(*pools, "init-hang").init_failures == 1);

      // A refilled pool whose inits fail keeps failing, more and more slowly, and never parks one.
      REQUIRE(pools->configure(probe("init-refill", Lifecycle::reuse, "init-exit", 1)));
      REQUIRE(wait_for([&] { return stats_of(*pools, "init-refill").init_failures >= 3; }));
      CHECK(stats_of(*pools, "init-refill").warm == 0);
    }
    leaks.check_same();
  }

  TEST_CASE("1,000 fresh and 10,000 reuse events leave no process, fd, mount or cgroup behind") {
    images();
    Leaks leaks;
    {
      auto pools = make_pools();
      REQUIRE(pools->configure(probe("many-fresh", Lifecycle::fresh, "echo", 4)));
      REQUIRE(pools->configure(probe("many-reuse", Lifecycle::reuse, "echo")));
      int wrong = 0;
      for (int i = 0; i < 10000; ++i) {
        auto e = std::to_string(i);
        if (invoke(*pools, "many-reuse", e).output != e) ++wrong;
        if (i % 10 == 0 && invoke(*pools, "many-fresh", e).output != e) ++wrong;
      }
      CHECK(wrong == 0);
    }
    leaks.check_same();
  }

  TEST_CASE("16 concurrent callers on one reuse function with max_concurrency 4: at most 4 busy, all answered") {
    images();
    auto pools = make_pools();
    auto spec = probe("concurrent", Lifecycle::reuse, "echo");
    spec.max_concurrency = 4;
    REQUIRE(pools->configure(spec));
    std::atomic<int> answered{0}, wrong{0}, rejected{0};
    std::atomic<bool> done{false};
    std::atomic<uint32_t> max_busy{0};
    std::thread watcher([&] {
      while (!done) {
        auto s = stats_of(*pools, "concurrent");
        max_busy = std::max(max_busy.load(), s.busy);
        std::this_thread::sleep_for(100us);
      }
    });
    std::vector<std::thread> callers;
    std::mutex ids_mutex;
    std::set<std::string> ids;
    for (int t = 0; t < 16; ++t)
      callers.emplace_back([&, t] {
        for (int i = 0; i < 50; ++i) {
          std::string e = std::to_string(t) + "/" + std::to_string(i);
          for (;;) {
            auto r = pools->invoke("concurrent", e);
            if (!r && r.error().kind == ErrorKind::unavailable) {
              ++rejected;
              std::this_thread::sleep_for(1ms);
              continue;
            }
            if (!r || r->output != e) ++wrong;
            if (r) {
              std::lock_guard lock(ids_mutex);
              ids.insert(r->sandbox_id);
            }
            ++answered;
            break;
          }
        }
      });
    for (auto& c : callers) c.join();
    done = true;
    watcher.join();
    CHECK(answered == 16 * 50);
    CHECK(wrong == 0);
    CHECK(max_busy <= 4);
    CHECK(ids.size() <= 8);  // reuse: a handful of processes served all 800 events
  }

  TEST_CASE("fnexec run --lifecycle: fresh answers stdin, reuse every line of --events, one record each") {
    images();
    std::string root = (images().scratch / "store").string();
    auto fresh = fnexec({"--root", root, "run", "--lifecycle", "fresh", "probe:1", "--", "/bin/frame_probe", "echo"},
                        {.stdin_data = std::string("a\0b\n", 4)});
    CHECK(fresh.exit_code == 0);
    CHECK(fresh.out == std::string("a\0b\n", 4));

    auto reuse = fnexec({"--root", root, "run", "--lifecycle", "reuse", "--events", "-", "--report", "-", "probe:1",
                         "--", "/bin/frame_probe", "count"},
                        {.stdin_data = "x\n\ny\n"});
    CHECK(reuse.exit_code == 0);
    CHECK(reuse.out == "1\n2\n3\n");
    CHECK(reuse.err.find(R"("lifecycle":"reuse","sandbox_events":3,"init_us":null)") != std::string::npos);

    auto failing = fnexec({"--root", root, "run", "--lifecycle", "reuse", "--events", "-", "probe:1", "--",
                           "/bin/frame_probe", "exit"},
                          {.stdin_data = "x\ny\n"});
    CHECK(failing.exit_code == 3);
    CHECK(failing.err.find("event 1: Runtime.ExitError") != std::string::npos);
    CHECK(failing.err.find("event 2 and later not sent") != std::string::npos);

    auto init = fnexec({"--root", root, "run", "--lifecycle", "fresh", "--init-timeout", "200ms", "probe:1", "--",
                        "/bin/frame_probe", "init-hang"});
    CHECK(init.exit_code == 1);
    CHECK(init.err.find("no READY within init_timeout (200 ms)") != std::string::npos);
    auto events = fnexec({"--root", root, "run", "--events", "-", "probe:1"});
    CHECK(events.exit_code != 0);
    CHECK(events.err.find("--lifecycle reuse") != std::string::npos);
  }
}

// The accounting of fresh/reuse events, also run on cgroup v2 in the VM suite (tests/vm/meson.build).
TEST_SUITE("lifecycle-cgroup") {
  TEST_CASE("per-event CPU and memory are deltas from the event's start and exclude the init") {
    images();
    auto pools = make_pools();
    REQUIRE(pools->configure(probe("accounting", Lifecycle::reuse, "init-burn")));
    for (int i = 0; i < 2; ++i) {
      auto r = invoke(*pools, "accounting", "e");
      CHECK(r.output == "e");
      if (i == 0) REQUIRE(r.init_us);
      if (!r.record.cpu_user_us) continue;  // cgroups without CPU accounting
      // The init burned 300 ms of user CPU; an echo is a tiny fraction of that.
      CHECK(*r.record.cpu_user_us + *r.record.cpu_system_us < 100000);
      if (r.record.memory_peak_bytes && !r.record.memory_peak_includes_setup)
        CHECK(*r.record.memory_peak_bytes < (32u << 20));  // the init touched 64 MiB and freed it
    }
  }
}

}  // namespace fnexec::test
