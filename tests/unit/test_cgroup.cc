#include <doctest/doctest.h>
#include <unistd.h>

#include <string>

#include "cgroup/backend.h"
#include "cgroup/cgroup.h"
#include "cgroup/parse.h"

using namespace fnexec;
using namespace fnexec::cgroup;

TEST_SUITE("cgroup") {
  TEST_CASE("owner_is_gone: only KIND-PID-N names of a pid that does not exist") {
    CHECK_FALSE(owner_is_gone("pool-1-3"));  // PID 1 always exists
    CHECK_FALSE(owner_is_gone("run-" + std::to_string(::getpid()) + "-0"));
    for (const char* odd : {"pool", "pool-", "pool--1", "pool-x1-2", "pool-12", "-1-2", "pool-99999999999-1"})
      CHECK_FALSE(owner_is_gone(odd));
  }

  TEST_CASE("parse_proc_cgroup: hybrid host with separate cpu and cpuacct") {
    auto r = parse_proc_cgroup(
        "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/e32f\n2:cpuacct:/\n1:cpu,cpuacct:/a b\n0::/\n");
    REQUIRE(r);
    REQUIRE(r->size() == 6);
    CHECK((*r)[0].controllers == std::vector<std::string>{"name=systemd"});
    CHECK((*r)[2].hierarchy_id == 4);
    CHECK((*r)[2].controllers == std::vector<std::string>{"memory"});
    CHECK((*r)[2].path == "/process_api/e32f");
    CHECK((*r)[4].controllers == std::vector<std::string>{"cpu", "cpuacct"});
    CHECK((*r)[4].path == "/a b");
    CHECK((*r)[5].hierarchy_id == 0);
    CHECK((*r)[5].controllers.empty());
    CHECK((*r)[5].path == "/");
  }

  TEST_CASE("parse_proc_cgroup: pure v2 and malformed lines") {
    auto r = parse_proc_cgroup("0::/user.slice/fnexec.service/supervisor\n");
    REQUIRE(r);
    CHECK(r->at(0).path == "/user.slice/fnexec.service/supervisor");
    CHECK(!parse_proc_cgroup("garbage\n"));
    CHECK(!parse_proc_cgroup("x::/\n"));
    CHECK(!parse_proc_cgroup("0::relative\n"));
    CHECK(parse_proc_cgroup("")->empty());
  }

  TEST_CASE("parse_cgroup_mounts finds v1 controllers and the v2 mount") {
    const char* mi =
        "25 20 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime shared:7 - cgroup cgroup rw,cpu\n"
        "27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "28 25 0:25 /sub /sys/fs/cgroup/uni\\040fied rw - cgroup2 cgroup2 rw,nsdelegate\n"
        "29 1 8:1 / / rw - ext4 /dev/vda rw\n";
    auto m = parse_cgroup_mounts(mi);
    REQUIRE(m.size() == 3);
    CHECK(m[0].mount_point == "/sys/fs/cgroup/cpu");
    CHECK(!m[0].v2);
    CHECK(m[0].options == std::vector<std::string>{"rw", "cpu"});
    CHECK(m[1].options == std::vector<std::string>{"rw", "cpu", "cpuacct"});
    CHECK(m[2].v2);
    CHECK(m[2].root == "/sub");
    CHECK(m[2].mount_point == "/sys/fs/cgroup/uni fied");
  }

  TEST_CASE("keyed_value reads cpu.stat, memory.events and v1 memory.oom_control") {
    const char* cpu_stat =
        "usage_usec 250123\nuser_usec 200000\nsystem_usec 50123\nnr_periods 10\nnr_throttled 4\n"
        "throttled_usec 1000\n";
    CHECK(keyed_value(cpu_stat, "usage_usec") == 250123u);
    CHECK(keyed_value(cpu_stat, "user_usec") == 200000u);
    CHECK(keyed_value(cpu_stat, "system_usec") == 50123u);
    CHECK(!keyed_value(cpu_stat, "usage"));  // a prefix of a key is not the key
    const char* events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
    CHECK(keyed_value(events, "oom_kill") == 1u);
    CHECK(keyed_value(events, "oom") == 1u);
    CHECK(keyed_value("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill") == 3u);
    CHECK(!keyed_value("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"));  // kernels before 4.13
    CHECK(keyed_value("populated 0\nfrozen 0\n", "populated") == 0u);
    CHECK(!keyed_value("oom_kill x\n", "oom_kill"));
  }

  TEST_CASE("single_value, parse_pids and split_words") {
    CHECK(single_value("33554432\n") == 33554432u);
    CHECK(!single_value("max\n"));
    CHECK(!single_value(""));
    CHECK(parse_pids("12\n345\n\n") == std::vector<pid_t>{12, 345});
    CHECK(parse_pids("").empty());
    CHECK(split_words("cpuset cpu io memory pids\n") ==
          std::vector<std::string>{"cpuset", "cpu", "io", "memory", "pids"});
    CHECK(split_words("\n").empty());
  }

  TEST_CASE("cpu quota formatting") {
    CHECK(format_cpu_max(0.5) == "50000 100000");
    CHECK(format_cpu_max(2) == "200000 100000");
    CHECK(format_cpu_max(1.25) == "125000 100000");
    CHECK(cpu_quota_us(0.001) == 1000);  // the kernel's minimum quota is 1 ms
    CHECK(cpu_quota_us(0.5, 50000) == 25000);
  }

  TEST_CASE("parse_size and parse_cpus") {
    CHECK(*parse_size("32m") == 32u << 20);
    CHECK(*parse_size("32M") == 32u << 20);
    CHECK(*parse_size("64MiB") == 64u << 20);
    CHECK(*parse_size("512k") == 512u << 10);
    CHECK(*parse_size("1g") == 1u << 30);
    CHECK(*parse_size("1.5g") == 3u << 29);
    CHECK(*parse_size("4096") == 4096u);
    CHECK(*parse_size("100b") == 100u);
    CHECK(!parse_size(""));
    CHECK(!parse_size("m"));
    CHECK(!parse_size("12x"));
    CHECK(!parse_size("-1m"));
    CHECK(!parse_size("99999999999999999999"));
    CHECK(!parse_size("20000000t"));
    auto e = parse_size("lots");
    REQUIRE(!e);
    CHECK(e.error().kind == ErrorKind::invalid);
    CHECK(e.error().message().find("'lots'") != std::string::npos);
    CHECK(*parse_cpus("0.5") == doctest::Approx(0.5));
    CHECK(*parse_cpus("2") == doctest::Approx(2.0));
    CHECK(!parse_cpus("0"));
    CHECK(!parse_cpus("-1"));
    CHECK(!parse_cpus("nan"));
    CHECK(!parse_cpus("1.5x"));
  }

  TEST_CASE("kernel versions, ids and the --cgroups flag") {
    CHECK(kernel_major_minor("6.1.0-56-amd64") == std::pair{6, 1});
    CHECK(kernel_major_minor("6.18.44-fc-v445") == std::pair{6, 18});
    CHECK(kernel_major_minor("5.7rc1") == std::pair{5, 7});
    CHECK(!kernel_major_minor("linux"));
    CHECK(valid_id("fn-hello_1.2"));
    CHECK(!valid_id(""));
    CHECK(!valid_id(".."));
    CHECK(!valid_id(".hidden"));
    CHECK(!valid_id("a/b"));
    CHECK(!valid_id(std::string(65, 'a')));
    CHECK(!options_from_flag("auto")->force_disabled);
    CHECK(options_from_flag("disabled")->force_disabled);
    CHECK(!options_from_flag("off"));
    CHECK(to_string(Mode::v2) == "v2");
  }

  TEST_CASE("own cgroup directories: separate and co-mounted cpu/cpuacct, v2, mount roots") {
    const char* mi =
        "26 25 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "28 25 0:25 /outer /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
        "29 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
    auto mounts = parse_cgroup_mounts(mi);
    auto self =
        *parse_proc_cgroup("5:pids:/outer/inner\n4:memory:/process_api/e32f\n1:cpu,cpuacct:/\n0::/a\n");
    auto mem = detail::own_v1(self, mounts, "memory");
    REQUIRE(mem);
    CHECK(mem->dir == "/sys/fs/cgroup/memory/process_api/e32f");
    auto cpu = detail::own_v1(self, mounts, "cpu");
    auto cpuacct = detail::own_v1(self, mounts, "cpuacct");
    REQUIRE(cpu);
    REQUIRE(cpuacct);
    CHECK(cpu->dir == "/sys/fs/cgroup/cpu,cpuacct");
    CHECK(cpuacct->dir == cpu->dir);
    auto pids = detail::own_v1(self, mounts, "pids");
    REQUIRE(pids);
    CHECK(pids->dir == "/sys/fs/cgroup/pids/inner");  // the mount shows /outer as its root
    CHECK(!detail::own_v1(self, mounts, "freezer"));
    auto v2 = detail::own_v2(self, mounts);
    REQUIRE(v2);
    CHECK(v2->dir == "/sys/fs/cgroup/unified/a");
    // Our path outside the mount's root (another cgroup namespace's mount) is not ours to use.
    auto elsewhere = *parse_proc_cgroup("5:pids:/other\n");
    CHECK(!detail::own_v1(elsewhere, mounts, "pids"));
  }

}  // TEST_SUITE
