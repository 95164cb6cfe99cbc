// The cgroup module on the real kernel: v1 on the hybrid dev hosts, v2 in the VM suite (tests/vm/),
// which runs exactly these cases with -ts=cgroup. Each child is a function of this binary run in a
// fork placed into the sandbox cgroup before it starts (clone3 CLONE_INTO_CGROUP on v2).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <thread>

#include "cgroup/cgroup.h"
#include "cgroup/parse.h"
#include "support/fixtures.h"
#include "support/proc.h"
#include "util/fs.h"
#include "util/syscalls.h"
#include "util/unique_fd.h"

using namespace fnexec;
using namespace std::chrono_literals;
namespace stdfs = std::filesystem;

namespace {

constexpr uint64_t MiB = 1 << 20;
// The v1 controllers fnexec places sandboxes in.
const std::string kUsed[] = {"memory", "cpu", "cpuacct", "pids", "freezer", "devices"};

// Every test uses its own prefix, so parallel fnexec instances on the host are never touched.
cgroup::Options test_options() {
  cgroup::Options o;
  o.prefix = "fnexec-test-" + std::to_string(::getpid());
  return o;
}

std::shared_ptr<cgroup::Hierarchy> hierarchy() {
  auto h = cgroup::Hierarchy::detect(test_options());
  if (!h) FAIL("detect: " << h.error().message());
  return *h;
}

// Removes the test prefix on v1 (on v2 this process lives in PREFIX/supervisor until it exits).
struct PrefixCleanup {
  std::shared_ptr<cgroup::Hierarchy> h;
  ~PrefixCleanup() {
    if (h->mode() != cgroup::Mode::v1) return;
    for (auto& p : h->sandbox_parents()) {
      ::rmdir(p.c_str());
      ::rmdir(stdfs::path(p).parent_path().c_str());
    }
  }
};

size_t count_cgroups(const cgroup::Hierarchy& h) {
  size_t n = 0;
  for (auto& p : h.sandbox_parents())
    for (auto& e : stdfs::recursive_directory_iterator(p))
      if (e.is_directory()) ++n;
  return n;
}

// ---- children: plain code, results as raw bytes on a pipe -------------------------------------------

void write_all(int fd, const void* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w <= 0) return;
    p = static_cast<const char*>(p) + w;
    n -= static_cast<size_t>(w);
  }
}

// Touches every page so the memory is charged, not just reserved.
char* touch_mib(uint64_t mib) {
  size_t n = mib * MiB;
  auto* p =
      static_cast<char*>(::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (p == MAP_FAILED) ::_exit(90);
  for (size_t i = 0; i < n; i += 4096) p[i] = 1;
  return p;
}

uint64_t utime_us() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_utime.tv_sec) * 1000000 + static_cast<uint64_t>(ru.ru_utime.tv_usec);
}

uint64_t cputime_us() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

// Busy loop in user space until this process has used us µs of CPU.
void burn_until(uint64_t (*clock)(), uint64_t us) {
  volatile uint64_t x = 0;
  while (clock() < us)
    for (int i = 0; i < 100000; ++i) x = x + static_cast<uint64_t>(i);
}

struct Child {
  pid_t pid = -1;
  UniqueFd out;  // what the child wrote
  bool cloned_into = false;
};

// Runs fn(out_fd) in a child that is in the sandbox before fn runs.
Child spawn_in(cgroup::SandboxCgroup& sb, const std::function<int(int)>& fn) {
  int out[2], gate[2];
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(gate, O_CLOEXEC) == 0);
  Child c;
  c.out = UniqueFd(out[0]);
  UniqueFd out_w(out[1]), gate_r(gate[0]), gate_w(gate[1]);
  pid_t pid = -1;
  if (sb.clone_into_fd() >= 0) {
    clone_args args{};
    args.flags = CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.cgroup = static_cast<uint64_t>(sb.clone_into_fd());
    pid = static_cast<pid_t>(sys::clone3(&args, sizeof args));
    if (pid == 0) ::_exit(fn(out[1]));
    c.cloned_into = pid > 0;
  }
  if (pid < 0) {
    pid = ::fork();
    if (pid == 0) {
      char b;
      if (::read(gate[0], &b, 1) != 1) ::_exit(91);  // parent failed to attach us
      ::_exit(fn(out[1]));
    }
    REQUIRE(pid > 0);
    auto r = sb.attach(pid);
    if (!r) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      FAIL("attach: " << r.error().message());
    }
    write_all(gate_w.get(), "g", 1);
  }
  REQUIRE(pid > 0);
  c.pid = pid;
  return c;
}

template <class T>
T read_result(const Child& c) {
  T v{};
  size_t got = 0;
  while (got < sizeof v) {
    ssize_t n = ::read(c.out.get(), reinterpret_cast<char*>(&v) + got, sizeof v - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  REQUIRE(got == sizeof v);
  return v;
}

int wait_status(pid_t pid) {
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return status;
}

// Reaps orphans handed to us (the test process is a subreaper) once the sandbox is empty.
void reap_orphans() {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    pid_t p = ::waitpid(-1, nullptr, WNOHANG);
    if (p < 0 && errno == ECHILD) return;
    if (p == 0) std::this_thread::sleep_for(1ms);
  }
}

bool alive(pid_t pid) {
  return ::kill(pid, 0) == 0;
}

}  // namespace

TEST_SUITE("cgroup") {
  TEST_CASE("detect picks this kernel's mode and lays out the prefix below our own cgroup") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    MESSAGE("mode=" << cgroup::to_string(h->mode()));
    REQUIRE(h->mode() != cgroup::Mode::disabled);
    auto self = *cgroup::parse_proc_cgroup(*fs::read_file("/proc/self/cgroup"));
    auto parents = h->sandbox_parents();
    REQUIRE(!parents.empty());
    for (auto& p : parents) {
      CHECK(stdfs::is_directory(p));
      CHECK(p.ends_with("/fnexec-test-" + std::to_string(::getpid()) + "/sandboxes"));
    }
    auto ctrls = h->controllers();
    for (const char* c : {"memory", "cpu", "pids"})
      CHECK(std::find(ctrls.begin(), ctrls.end(), c) != ctrls.end());
    if (h->mode() == cgroup::Mode::v2) {
      // We moved into the supervisor leaf; a second detect reuses the layout instead of nesting.
      CHECK(self.back().path.ends_with("/supervisor"));
      auto again = hierarchy();
      CHECK(again->sandbox_parents() == parents);
      CHECK(h->has_memory_peak());
      CHECK(h->features().cgroup_kill);
      CHECK(h->features().clone_into_cgroup);
    } else {
      CHECK(h->has_memory_peak());
      CHECK(h->features().freezer);
    }
  }

  TEST_CASE("limits land in the kernel's files; bad ids and duplicates are refused and leave nothing") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    size_t before = count_cgroups(*h);
    {
      auto sb = h->create("limits", {.memory_bytes = 32 * MiB, .cpus = 0.5, .pids = 16});
      REQUIRE(sb);
      auto dir = stdfs::path((*sb)->path());
      auto rd = [](const stdfs::path& p) { return fs::read_file(p).value_or("?"); };
      if (h->mode() == cgroup::Mode::v2) {
        CHECK(rd(dir / "memory.max") == "33554432\n");
        if (h->features().swap_limit) CHECK(rd(dir / "memory.swap.max") == "0\n");
        CHECK(rd(dir / "cpu.max") == "50000 100000\n");
        CHECK(rd(dir / "pids.max") == "16\n");
        CHECK((*sb)->clone_into_fd() >= 0);
      } else {
        CHECK(rd(dir / "memory.limit_in_bytes") == "33554432\n");
        if (h->features().swap_limit) CHECK(rd(dir / "memory.memsw.limit_in_bytes") == "33554432\n");
        CHECK((*sb)->clone_into_fd() == -1);
        bool saw_cpu = false, saw_pids = false;
        for (auto& p : (*sb)->paths()) {
          if (stdfs::exists(p + "/cpu.cfs_quota_us")) {
            CHECK(rd(p + "/cpu.cfs_quota_us") == "50000\n");
            CHECK(rd(p + "/cpu.cfs_period_us") == "100000\n");
            saw_cpu = true;
          }
          if (stdfs::exists(p + "/pids.max")) {
            CHECK(rd(p + "/pids.max") == "16\n");
            saw_pids = true;
          }
        }
        CHECK(saw_cpu);
        CHECK(saw_pids);
      }
      auto dup = h->create("limits", {});
      REQUIRE(!dup);
      CHECK(dup.error().kind == ErrorKind::exists);
      CHECK(count_cgroups(*h) == before + (*sb)->paths().size());
    }
    for (const char* bad : {"", "..", "a/b", ".x"}) {
      auto r = h->create(bad, {});
      REQUIRE(!r);
      CHECK(r.error().kind == ErrorKind::invalid);
    }
    // A limit the kernel refuses (pids.max above PID_MAX_LIMIT) fails create() and removes the cgroup.
    auto refused = h->create("refused", {.pids = uint64_t{1} << 62});
    CHECK(!refused);
    CHECK(count_cgroups(*h) == before);
  }

  TEST_CASE("the child is in the sandbox before its first instruction (CLONE_INTO_CGROUP on v2)") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    auto sb = h->create("first", {});
    REQUIRE(sb);
    struct Seen {
      char text[2048];
      ssize_t n;
    };
    auto c = spawn_in(**sb, [](int out) {
      Seen s{};
      int fd = ::open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
      s.n = fd < 0 ? -1 : ::read(fd, s.text, sizeof s.text - 1);
      write_all(out, &s, sizeof s);
      return 0;
    });
    auto seen = read_result<Seen>(c);
    CHECK(WIFEXITED(wait_status(c.pid)));
    REQUIRE(seen.n > 0);
    auto entries = cgroup::parse_proc_cgroup(std::string_view(seen.text, static_cast<size_t>(seen.n)));
    REQUIRE(entries);
    bool v2 = h->mode() == cgroup::Mode::v2;
    CHECK(c.cloned_into == v2);
    int inside = 0;
    for (auto& e : *entries) {
      bool ours = v2 ? e.hierarchy_id == 0
                     : std::find_first_of(e.controllers.begin(), e.controllers.end(), std::begin(kUsed),
                                          std::end(kUsed)) != e.controllers.end();
      if (!ours) continue;
      CHECK(e.path.ends_with("/sandboxes/first"));
      ++inside;
    }
    CHECK(inside == (v2 ? 1 : static_cast<int>((*sb)->paths().size())));
  }

  TEST_CASE("a function touching 64 MiB under a 32 MiB limit is OOM-killed and counted") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    auto sb = h->create("oom", {.memory_bytes = 32 * MiB});
    REQUIRE(sb);
    auto c = spawn_in(**sb, [](int) {
      touch_mib(64);
      return 0;
    });
    int status = wait_status(c.pid);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);
    auto u = (*sb)->usage();
    REQUIRE(u);
    REQUIRE(u->oom_kills);
    CHECK(*u->oom_kills >= 1);
    REQUIRE(u->memory_peak_bytes);
    CHECK(*u->memory_peak_bytes <= 32 * MiB);
    CHECK((*sb)->destroy());
  }

  TEST_CASE("a fork bomb under pids 16 gets EAGAIN, stays contained, and kill() ends it") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    auto sb = h->create("forkbomb", {.pids = 16});
    REQUIRE(sb);
    struct Counts {
      int forked, eagain, other;
    };
    auto c = spawn_in(**sb, [](int out) {
      Counts n{0, 0, 0};
      for (int i = 0; i < 40; ++i) {
        pid_t p = ::fork();
        if (p == 0) {
          // Every bomb child tries to fork on as well, then sleeps until killed.
          if (::fork() == 0) ::pause();
          ::pause();
          ::_exit(0);
        }
        if (p > 0)
          ++n.forked;
        else if (errno == EAGAIN)
          ++n.eagain;
        else
          ++n.other;
      }
      write_all(out, &n, sizeof n);
      ::pause();
      return 0;
    });
    auto n = read_result<Counts>(c);
    MESSAGE("forked=" << n.forked << " eagain=" << n.eagain << " other=" << n.other);
    CHECK(n.forked <= 15);
    CHECK(n.eagain >= 1);
    CHECK(n.other == 0);
    auto procs = cgroup::parse_pids(fs::read_file(stdfs::path((*sb)->path()) / "cgroup.procs").value_or(""));
    CHECK(procs.size() <= 16);
    CHECK(procs.size() >= 2);
    REQUIRE((*sb)->kill());
    CHECK(WIFSIGNALED(wait_status(c.pid)));
    reap_orphans();
    for (pid_t p : procs) CHECK(!alive(p));
    // The host still forks.
    pid_t p = ::fork();
    if (p == 0) ::_exit(0);
    REQUIRE(p > 0);
    CHECK(WIFEXITED(wait_status(p)));
  }

  TEST_CASE("cpu_user_us matches what the function measured itself within 25%") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    auto sb = h->create("cpu", {});
    REQUIRE(sb);
    struct Measured {
      uint64_t user_us, total_us;
    };
    auto c = spawn_in(**sb, [](int out) {
      burn_until(utime_us, 200000);
      Measured m{utime_us(), cputime_us()};
      write_all(out, &m, sizeof m);
      return 0;
    });
    auto self = read_result<Measured>(c);
    CHECK(WIFEXITED(wait_status(c.pid)));
    auto u = (*sb)->usage();
    REQUIRE(u);
    REQUIRE(u->cpu_user_us);
    REQUIRE(u->cpu_system_us);
    REQUIRE(u->cpu_total_us);
    MESSAGE("self user=" << self.user_us << "us total=" << self.total_us
                         << "us; cgroup user=" << *u->cpu_user_us << "us sys=" << *u->cpu_system_us
                         << "us total=" << *u->cpu_total_us << "us");
    CHECK(*u->cpu_user_us >= self.user_us * 3 / 4);
    CHECK(*u->cpu_user_us <= self.user_us * 5 / 4);
    // The total also holds the kernel's work for the function (page faults, exit): compare like with like.
    CHECK(*u->cpu_total_us >= self.total_us * 3 / 4);
    CHECK(*u->cpu_total_us <= self.total_us * 5 / 4);
  }

  TEST_CASE("memory_peak_bytes covers what the function touched") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    auto sb = h->create("peak", {.memory_bytes = 256 * MiB});
    REQUIRE(sb);
    auto c = spawn_in(**sb, [](int) {
      touch_mib(48);
      return 0;
    });
    CHECK(WIFEXITED(wait_status(c.pid)));
    auto u = (*sb)->usage();
    REQUIRE(u);
    REQUIRE(u->memory_peak_bytes);
    MESSAGE("memory_peak_bytes=" << *u->memory_peak_bytes);
    CHECK(*u->memory_peak_bytes >= 48 * MiB);
    CHECK(*u->memory_peak_bytes < 256 * MiB);
    CHECK(u->oom_kills == 0u);
  }

  TEST_CASE("baseline() makes usage() count only what came after it") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    auto sb = h->create("baseline", {});
    REQUIRE(sb);
    int go[2];
    REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
    UniqueFd go_r(go[0]), go_w(go[1]);
    int go_fd = go[0];
    // "Setup": 100 ms of CPU and 40 MiB, released; then the "invocation": 100 ms and 8 MiB.
    auto c = spawn_in(**sb, [go_fd](int out) {
      burn_until(utime_us, 100000);
      char* setup = touch_mib(40);
      ::munmap(setup, 40 * MiB);
      uint64_t t = utime_us();
      write_all(out, &t, sizeof t);
      char b;
      if (::read(go_fd, &b, 1) != 1) return 92;
      burn_until(utime_us, t + 100000);
      touch_mib(8);
      uint64_t used = utime_us() - t;
      write_all(out, &used, sizeof used);
      return 0;
    });
    auto setup_us = read_result<uint64_t>(c);
    REQUIRE((*sb)->baseline());
    write_all(go_w.get(), "g", 1);
    auto invocation_us = read_result<uint64_t>(c);
    CHECK(WIFEXITED(wait_status(c.pid)));
    auto u = (*sb)->usage();
    REQUIRE(u);
    REQUIRE(u->cpu_user_us);
    MESSAGE("setup=" << setup_us << "us invocation=" << invocation_us << "us billed=" << *u->cpu_user_us
                     << "us peak=" << u->memory_peak_bytes.value_or(0)
                     << " includes_setup=" << u->memory_peak_includes_setup);
    CHECK(*u->cpu_user_us >= invocation_us * 3 / 4);
    CHECK(*u->cpu_user_us <= invocation_us * 5 / 4);
    REQUIRE(u->memory_peak_bytes);
    CHECK(*u->memory_peak_bytes >= 8 * MiB);
    if (h->features().memory_peak_resettable) {
      CHECK(!u->memory_peak_includes_setup);
      CHECK(*u->memory_peak_bytes < 40 * MiB);
    } else {
      CHECK(u->memory_peak_includes_setup);
      CHECK(*u->memory_peak_bytes >= 40 * MiB);
    }
  }

  TEST_CASE("cpus 0.5 stretches 1 s of CPU to at least 1.8 s of wall time") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    auto sb = h->create("quota", {.cpus = 0.5});
    REQUIRE(sb);
    auto t0 = std::chrono::steady_clock::now();
    auto c = spawn_in(**sb, [](int) {
      burn_until(cputime_us, 1000000);
      return 0;
    });
    CHECK(WIFEXITED(wait_status(c.pid)));
    auto wall = std::chrono::steady_clock::now() - t0;
    MESSAGE("wall=" << std::chrono::duration_cast<std::chrono::milliseconds>(wall).count() << "ms");
    CHECK(wall >= 1800ms);
  }

  TEST_CASE("kill() kills grandchildren and destroy() removes the cgroup") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    size_t before = count_cgroups(*h);
    auto sb = h->create("tree", {});
    REQUIRE(sb);
    struct Pids {
      pid_t child, grandchild;
    };
    auto c = spawn_in(**sb, [](int out) {
      int p[2];
      if (::pipe(p) != 0) return 93;
      pid_t child = ::fork();
      if (child == 0) {
        pid_t grandchild = ::fork();
        if (grandchild == 0) ::pause();
        write_all(p[1], &grandchild, sizeof grandchild);
        ::pause();
      }
      pid_t grandchild = 0;
      if (::read(p[0], &grandchild, sizeof grandchild) != sizeof grandchild) return 94;
      Pids pids{child, grandchild};
      write_all(out, &pids, sizeof pids);
      ::pause();
      return 0;
    });
    auto pids = read_result<Pids>(c);
    REQUIRE(alive(pids.child));
    REQUIRE(alive(pids.grandchild));
    REQUIRE((*sb)->kill());
    CHECK(
        cgroup::parse_pids(fs::read_file(stdfs::path((*sb)->path()) / "cgroup.procs").value_or("")).empty());
    CHECK(WIFSIGNALED(wait_status(c.pid)));
    reap_orphans();
    CHECK(!alive(pids.child));
    CHECK(!alive(pids.grandchild));
    auto paths = (*sb)->paths();
    REQUIRE((*sb)->destroy());
    REQUIRE((*sb)->destroy());  // idempotent
    for (auto& p : paths) CHECK(!stdfs::exists(p));
    CHECK(count_cgroups(*h) == before);
  }

  TEST_CASE("destroy() removes an empty sandbox at once, and one with a cgroup made below it too") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    size_t before = count_cgroups(*h);
    // The usual end (every process reaped): rmdir alone. Then one where something was made below:
    // rmdir is refused (EBUSY), and the tree walk removes the child first.
    for (bool nested : {false, true}) {
      CAPTURE(nested);
      auto sb = h->create(nested ? "nested" : "empty", {});
      REQUIRE(sb);
      auto paths = (*sb)->paths();
      if (nested)
        for (auto& p : paths) REQUIRE(::mkdir((stdfs::path(p) / "below").c_str(), 0755) == 0);
      REQUIRE((*sb)->destroy());
      for (auto& p : paths) CHECK(!stdfs::exists(p));
    }
    CHECK(count_cgroups(*h) == before);
  }

  TEST_CASE("dropping a live sandbox kills it and leaves no cgroup after 200 cycles") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    auto snap = test::ResourceSnapshot::take();
    size_t before = count_cgroups(*h);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 200; ++i) {
      auto sb = h->create("cycle-" + std::to_string(i), {.memory_bytes = 64 * MiB, .cpus = 1, .pids = 8});
      REQUIRE(sb);
      if (i % 20 == 0) {
        // Every 20th holds a sleeping process: the destructor must kill it before rmdir.
        auto c = spawn_in(**sb, [](int) {
          ::pause();
          return 0;
        });
        sb->reset();
        CHECK(WIFSIGNALED(wait_status(c.pid)));
      }
    }
    MESSAGE("200 create+destroy cycles (10 with a process to kill): "
            << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
                   .count()
            << " ms");
    CHECK(count_cgroups(*h) == before);
    auto after = test::ResourceSnapshot::take();
    CHECK(after.fds == snap.fds);
    CHECK(after.processes == snap.processes);
  }

  TEST_CASE("remove_stale() clears sandboxes left behind by a crashed instance") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    size_t before = count_cgroups(*h);
    // The "crashed instance": a child that creates a sandbox, starts a sleeper in it and exits
    // without running any destructor. The sleeper is reparented to us (we are a subreaper).
    int out[2];
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    UniqueFd out_r(out[0]), out_w(out[1]);
    pid_t instance = ::fork();
    if (instance == 0) {
      auto sb = h->create("stale", {});
      if (!sb) ::_exit(1);
      pid_t sleeper = ::fork();
      if (sleeper == 0) {
        ::pause();
        ::_exit(0);
      }
      if (!(*sb)->attach(sleeper)) ::_exit(2);
      write_all(out[1], &sleeper, sizeof sleeper);
      ::_exit(0);
    }
    REQUIRE(instance > 0);
    REQUIRE(WIFEXITED(wait_status(instance)));
    pid_t sleeper = 0;
    REQUIRE(::read(out_r.get(), &sleeper, sizeof sleeper) == sizeof sleeper);
    CHECK(alive(sleeper));
    // A crash in the middle of create() leaves the sandbox in one hierarchy only.
    REQUIRE(::mkdir((h->sandbox_parents().front() + "/half").c_str(), 0755) == 0);
    CHECK(count_cgroups(*h) > before);
    auto n = h->remove_stale();
    REQUIRE(n);
    CHECK(*n == 2);
    CHECK(WIFSIGNALED(wait_status(sleeper)));
    CHECK(count_cgroups(*h) == before);
  }

}  // TEST_SUITE

TEST_SUITE("cgroup") {
  TEST_CASE("fnexec info reports the mode detect() sees; a bad --cgroups value is refused") {
    if (!test::is_root()) return;
    auto h = hierarchy();
    PrefixCleanup cleanup{h};
    auto text = test::fnexec({"info"});
    CHECK(text.exit_code == 0);
    CHECK(text.out.find("cgroup mode:       " + std::string(cgroup::to_string(h->mode())) + "\n") !=
          std::string::npos);
    CHECK(text.out.find("memory peak:") != std::string::npos);
    auto json = test::fnexec({"info", "--json"});
    CHECK(json.exit_code == 0);
    CHECK(json.out.starts_with("{\"cgroup_mode\":\"" + std::string(cgroup::to_string(h->mode())) + "\""));
    CHECK(json.out.find("\"memory_peak\":true") != std::string::npos);
    MESSAGE("fnexec info --json: " << json.out);
    auto off = test::fnexec({"info", "--cgroups=disabled"});
    CHECK(off.exit_code == 0);
    CHECK(off.out.find("cgroup mode:       disabled\n") != std::string::npos);
    auto bad = test::fnexec({"info", "--cgroups=sometimes"});
    CHECK(bad.exit_code == 125);
    CHECK(bad.err.find("--cgroups") != std::string::npos);
  }

  TEST_CASE("without cgroup mounts: a clear error, unless --cgroups=disabled") {
    if (!test::is_root()) return;
    // A private mount namespace without /sys/fs/cgroup: what a container without cgroupfs looks like.
    auto bin = test::fnexec_bin().string();
    auto r = test::run({"unshare", "-m", "sh", "-c", "umount -l /sys/fs/cgroup && exec \"$0\" info", bin});
    CHECK(r.exit_code == 125);
    CHECK(r.err.find("cannot find usable cgroups") != std::string::npos);
    CHECK(r.err.find("--cgroups=disabled") != std::string::npos);
    auto off = test::run({"unshare", "-m", "sh", "-c",
                          "umount -l /sys/fs/cgroup && exec \"$0\" info --cgroups=disabled", bin});
    CHECK(off.exit_code == 0);
    CHECK(off.out.starts_with("cgroup mode:       disabled\n"));
  }

}  // TEST_SUITE
