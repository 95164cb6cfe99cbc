#include <doctest/doctest.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sys/resource.h>

#include <cstddef>
#include <cstring>
#include <string>

#include "sandbox/capabilities.h"
#include "sandbox/privileges.h"
#include "sandbox/rlimits.h"
#include "sandbox/seccomp.h"
#include "sandbox/seccomp_default.h"
#include "util/fs.h"

using namespace fnexec;
using namespace fnexec::sandbox;

namespace {

uint64_t bit(int cap) {
  return uint64_t{1} << cap;
}

std::string message_of(const Error& e) {
  return e.message();
}

}  // namespace

TEST_CASE("capability names: with or without CAP_, any case; bad names name the flag") {
  CHECK(*capability_from_name("NET_ADMIN", "--cap-add") == CAP_NET_ADMIN);
  CHECK(*capability_from_name("CAP_NET_ADMIN", "--cap-add") == CAP_NET_ADMIN);
  CHECK(*capability_from_name("net_raw", "--cap-add") == CAP_NET_RAW);
  CHECK(*capability_from_name("cap_sys_admin", "--cap-drop") == CAP_SYS_ADMIN);
  for (const char* bad : {"", "NET_ADMINX", "CAP_", "12", "CAP_12", "ALL", "net admin"}) {
    auto r = capability_from_name(bad, "--cap-drop");
    REQUIRE_MESSAGE(!r, bad);
    CHECK(r.error().kind == ErrorKind::invalid);
    CHECK(message_of(r.error()).find("--cap-drop") != std::string::npos);
  }
  auto r = capability_from_name("FROB", "--cap-add");
  REQUIRE(!r);
  CHECK(message_of(r.error()) ==
        "cannot use --cap-add FROB: unknown capability (expected a name like NET_ADMIN or CAP_NET_ADMIN, or "
        "ALL)");
}

TEST_CASE("the default capability set is Podman's, without NET_RAW, MKNOD, AUDIT_WRITE, SYS_CHROOT") {
  uint64_t d = default_capabilities();
  for (int cap : {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_NET_BIND_SERVICE,
                  CAP_SETFCAP, CAP_SETGID, CAP_SETPCAP, CAP_SETUID})
    CHECK((d & bit(cap)) != 0);
  CHECK(__builtin_popcountll(d) == 10);
  for (int cap : {CAP_NET_RAW, CAP_MKNOD, CAP_AUDIT_WRITE, CAP_SYS_CHROOT, CAP_SYS_ADMIN, CAP_SYS_PTRACE})
    CHECK((d & bit(cap)) == 0);
}

TEST_CASE("capability sets: add, drop, ALL, and non-root users") {
  const uint64_t d = default_capabilities(), all = all_capabilities();
  CHECK(all >= (bit(CAP_BPF) | (bit(CAP_BPF) - 1)));  // every kernel this runs on has CAP_BPF (5.8)

  auto root = *capability_sets(d, {}, {}, 0, all);
  CHECK(root.bounding == d);
  CHECK(root.effective == d);

  auto added = *capability_sets(d, {"NET_RAW", "CAP_SYS_CHROOT"}, {"CHOWN"}, 0, all);
  CHECK(added.bounding == ((d | bit(CAP_NET_RAW) | bit(CAP_SYS_CHROOT)) & ~bit(CAP_CHOWN)));
  CHECK(added.effective == added.bounding);

  CHECK(capability_sets(d, {"ALL"}, {}, 0, all)->bounding == all);
  CHECK(capability_sets(d, {"all"}, {"SYS_ADMIN"}, 0, all)->bounding == (all & ~bit(CAP_SYS_ADMIN)));
  CHECK(capability_sets(d, {}, {"ALL"}, 0, all)->bounding == 0);
  auto only = *capability_sets(d, {"NET_BIND_SERVICE"}, {"ALL"}, 0, all);
  CHECK(only.bounding == bit(CAP_NET_BIND_SERVICE));

  // Non-root: nothing unless asked; the bounding set stays the default (plus what was added).
  auto nobody = *capability_sets(d, {}, {}, 65534, all);
  CHECK(nobody.bounding == d);
  CHECK(nobody.effective == 0);
  auto nobody_raw = *capability_sets(d, {"NET_RAW"}, {}, 65534, all);
  CHECK(nobody_raw.bounding == (d | bit(CAP_NET_RAW)));
  CHECK(nobody_raw.effective == bit(CAP_NET_RAW));
  // Asked for and dropped: the drop wins.
  CHECK(capability_sets(d, {"NET_RAW"}, {"NET_RAW"}, 65534, all)->effective == 0);

  auto bad = capability_sets(d, {}, {"NOPE"}, 0, all);
  REQUIRE(!bad);
  CHECK(message_of(bad.error()).find("--cap-drop NOPE") != std::string::npos);

  // Only what the launcher holds can be passed on: ALL means all of that, a named one outside it fails.
  const uint64_t held = all & ~bit(CAP_SYS_RESOURCE);
  CHECK(capability_sets(d, {"ALL"}, {}, 0, held)->bounding == held);
  CHECK(capability_sets(d, {"ALL"}, {}, 65534, held)->effective == held);
  auto missing = capability_sets(d, {"SYS_RESOURCE"}, {}, 0, held);
  REQUIRE(!missing);
  CHECK(message_of(missing.error()) ==
        "cannot use --cap-add SYS_RESOURCE: fnexec does not hold this capability itself, so it cannot pass "
        "it on");
  CHECK(capability_sets(d, {}, {}, 0, bit(CAP_CHOWN))->effective == bit(CAP_CHOWN));
}

TEST_CASE("--ulimit parsing") {
  auto l = *parse_ulimit("nofile=1024:2048");
  CHECK(l.resource == RLIMIT_NOFILE);
  CHECK(l.soft == 1024);
  CHECK(l.hard == 2048);
  l = *parse_ulimit("core=0");
  CHECK((l.resource == RLIMIT_CORE && l.soft == 0 && l.hard == 0));
  l = *parse_ulimit("stack=8388608:unlimited");
  CHECK((l.resource == RLIMIT_STACK && l.soft == 8388608 && l.hard == RLIM_INFINITY));
  l = *parse_ulimit("memlock=-1");
  CHECK((l.soft == RLIM_INFINITY && l.hard == RLIM_INFINITY));
  for (const char* name :
       {"nproc", "as", "cpu", "fsize", "nice", "rtprio", "msgqueue", "sigpending", "locks", "data"})
    CHECK_MESSAGE(parse_ulimit(std::string(name) + "=1"), name);

  for (const char* bad : {"nofile", "nofile=", "nofile=abc", "nofile=2:1", "nofile=1:2:3", "nofile=-2",
                          "nofile=1k", "=5", "bogus=1", "NOFILE=1", "nofile=unlimited:5"}) {
    auto r = parse_ulimit(bad);
    REQUIRE_MESSAGE(!r, bad);
    CHECK(r.error().kind == ErrorKind::invalid);
    CHECK(message_of(r.error()).starts_with(std::string("cannot use --ulimit ") + bad + ":"));
  }
  CHECK(message_of(parse_ulimit("bogus=1").error()).find("known: nofile nproc core") != std::string::npos);
  CHECK(message_of(parse_ulimit("nofile=2:1").error()).find("soft limit above the hard limit") !=
        std::string::npos);
}

TEST_CASE("sandbox rlimits: defaults, overrides, and a hard limit above ours") {
  rlimit nofile{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &nofile) == 0);
  auto find = [](const std::vector<Rlimit>& v, int resource) -> const Rlimit* {
    for (const auto& l : v)
      if (l.resource == resource) return &l;
    return nullptr;
  };

  auto defaults = *sandbox_rlimits({}, false);
  REQUIRE(find(defaults, RLIMIT_NOFILE));
  CHECK(find(defaults, RLIMIT_NOFILE)->hard == std::min<rlim_t>(1024, nofile.rlim_max));
  CHECK(find(defaults, RLIMIT_NOFILE)->soft == find(defaults, RLIMIT_NOFILE)->hard);
  REQUIRE(find(defaults, RLIMIT_CORE));
  CHECK((find(defaults, RLIMIT_CORE)->soft == 0 && find(defaults, RLIMIT_CORE)->hard == 0));
  CHECK(find(defaults, RLIMIT_NPROC) == nullptr);  // inherited: see rlimits.cc

  auto custom = *sandbox_rlimits({"nofile=64:128", "nproc=100", "nofile=32:64"}, false);
  CHECK(find(custom, RLIMIT_NOFILE)->soft == 32);  // the last one wins
  CHECK(find(custom, RLIMIT_NOFILE)->hard == 64);
  CHECK(find(custom, RLIMIT_NPROC)->hard == 100);
  CHECK(find(custom, RLIMIT_CORE)->hard == 0);

  // NOFILE's hard limit is always finite (fs.nr_open), so one above it exists.
  REQUIRE(nofile.rlim_max != RLIM_INFINITY);
  std::string above = "nofile=1:" + std::to_string(nofile.rlim_max + 1);
  auto refused = sandbox_rlimits({above}, false);
  REQUIRE(!refused);
  CHECK(message_of(refused.error()) ==
        "cannot use --ulimit " + above + ": hard limit " + std::to_string(nofile.rlim_max + 1) +
            " is above the current hard nofile limit " + std::to_string(nofile.rlim_max) +
            " and raising it needs CAP_SYS_RESOURCE; ask for at most " + std::to_string(nofile.rlim_max));
  CHECK(sandbox_rlimits({above}, true));
  CHECK(sandbox_rlimits({"nofile=1:" + std::to_string(nofile.rlim_max)}, false));
}

TEST_CASE("the default seccomp filter: native arch check first, within the kernel's size limit") {
  auto f = default_seccomp_filter();
  REQUIRE(f);
  CHECK(f->size() > 100);
  CHECK(f->size() <= BPF_MAXINSNS);
  // Load seccomp_data.arch (offset 4) and compare it with the native audit arch.
  CHECK((*f)[0].code == (BPF_LD | BPF_W | BPF_ABS));
  CHECK((*f)[0].k == offsetof(seccomp_data, arch));
#if defined(__x86_64__)
  CHECK((*f)[1].k == AUDIT_ARCH_X86_64);
#endif
  // Cached: the same program every time.
  auto again = default_seccomp_filter();
  REQUIRE(again);
  CHECK(again->size() == f->size());
}

TEST_CASE("the default seccomp filter compiled at build time is byte for byte what libseccomp builds now") {
  auto precompiled = default_seccomp_filter();
  auto runtime = build_default_seccomp_filter();
  REQUIRE(precompiled);
  REQUIRE(runtime);
  REQUIRE(precompiled->size() == runtime->size());
  CHECK(std::memcmp(precompiled->data(), runtime->data(), runtime->size() * sizeof(sock_filter)) == 0);
  auto summary = default_seccomp_summary();
  REQUIRE(summary);
  CHECK(summary->instructions == runtime->size());
}

namespace {

// Docker's profile format, cut down: archMap, names, args, includes/excludes, errnoRet.
constexpr const char* kDockerLike = R"({
  "defaultAction": "SCMP_ACT_ERRNO",
  "defaultErrnoRet": 1,
  "archMap": [
    {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
  ],
  "syscalls": [
    {"names": ["read", "write", "exit_group", "execve", "cachestat", "mseal"], "action": "SCMP_ACT_ALLOW"},
    {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
     "args": [{"index": 0, "value": 0, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
    {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
     "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}],
     "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
    {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
    {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
    {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "includes": {"minKernel": "4.8"}},
    {"names": ["getppid"], "action": "SCMP_ACT_ERRNO"},
    {"name": "kill", "action": "SCMP_ACT_KILL_PROCESS"},
    {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
     "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
    {"names": ["getpid"], "action": "SCMP_ACT_LOG", "comment": "ignored key"}
  ]
})";

}  // namespace

TEST_CASE("seccomp profiles: OCI and Docker JSON") {
  auto docker = seccomp_filter_from_profile(kDockerLike, "docker.json", default_capabilities());
  REQUIRE_MESSAGE(docker, (docker ? "" : docker.error().message()));
  CHECK(docker->size() > 10);
  // With CAP_SYS_ADMIN the clone rule is excluded and mount is included: a different program.
  auto admin =
      seccomp_filter_from_profile(kDockerLike, "docker.json", default_capabilities() | bit(CAP_SYS_ADMIN));
  REQUIRE(admin);
  CHECK(admin->size() != docker->size());

  auto oci = seccomp_filter_from_profile(
      R"({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
          "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                       {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]})",
      "oci.json", 0);
  REQUIRE_MESSAGE(oci, (oci ? "" : oci.error().message()));
  CHECK(seccomp_filter_from_profile(R"({"defaultAction": "SCMP_ACT_KILL"})", "min.json", 0));
}

TEST_CASE("seccomp profiles: a bad one names the file and the problem") {
  struct Case {
    const char* json;
    const char* detail;
  };
  const Case cases[] = {
      {"{", "not valid JSON"},
      {"[]", "expected a JSON object at the top"},
      {"{}", "defaultAction: missing"},
      {R"({"defaultAction": 3})", "defaultAction: expected a string"},
      {R"({"defaultAction": "SCMP_ACT_NOPE"})", "defaultAction: unknown action 'SCMP_ACT_NOPE'"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}})", "syscalls: expected an array"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"]}]})",
       "syscalls[0].action: missing"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "read", "action": "SCMP_ACT_ERRNO"}]})",
       "syscalls[0].names: expected an array"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [1], "action": "SCMP_ACT_ERRNO"}]})",
       "syscalls[0].names[0]: expected a string"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{}, {"names": ["read"], "action": "SCMP_ACT_ERRNO",
           "errnoRet": "x"}]})",
       "syscalls[0].action: missing"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
           "errnoRet": 5000}]})",
       "syscalls[0].errnoRet: 5000 is not an errno"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
           "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]})",
       "syscalls[0].args[0].index: a syscall has arguments 0 to 5"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
           "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}]})",
       "syscalls[0].args[0].op: unknown operator 'SCMP_CMP_ALMOST'"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
           "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]})",
       "syscalls[0].args[0].value: expected a non-negative integer"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]})",
       "architectures[0]: unknown architecture 'SCMP_ARCH_Z80'"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]})",
       "SCMP_ACT_NOTIFY needs a seccomp agent"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read", "raed"], "action": "SCMP_ACT_ERRNO"}]})",
       "syscalls[0].names[1]: unknown syscall 'raed'"},
  };
  for (const auto& c : cases) {
    auto r = seccomp_filter_from_profile(c.json, "/etc/fn/profile.json", 0);
    REQUIRE_MESSAGE(!r, c.json);
    std::string m = message_of(r.error());
    CHECK_MESSAGE(m.starts_with("cannot use seccomp profile /etc/fn/profile.json: "), m);
    CHECK_MESSAGE(m.find(c.detail) != std::string::npos, m);
    CHECK(r.error().kind == ErrorKind::invalid);
  }
}

TEST_CASE("prepare_privileges: defaults, and errors that name the flag or file") {
  auto p = prepare_privileges({});
  REQUIRE(p);
  CHECK(p->uid == 0);
  CHECK(p->bounding == (default_capabilities() & held_capabilities()));
  CHECK(p->effective == p->bounding);
  CHECK(p->seccomp_enabled);
  CHECK(p->seccomp_filter.size() == default_seccomp_filter()->size());
  CHECK(p->rlimits.size() == 2);

  PrivilegeSpec nobody;
  nobody.uid = nobody.gid = 65534;
  nobody.supplementary_gids = {100};
  nobody.seccomp = SeccompMode::unconfined;
  p = prepare_privileges(nobody);
  REQUIRE(p);
  CHECK(p->effective == 0);
  CHECK(p->groups == std::vector<gid_t>{100});
  CHECK(!p->seccomp_enabled);
  CHECK(p->seccomp_filter.empty());

  PrivilegeSpec bad_cap;
  bad_cap.cap_add = {"NET_ADMIN", "WIZARD"};
  CHECK(message_of(prepare_privileges(bad_cap).error())
            .starts_with("cannot use --cap-add WIZARD: unknown capability"));

  PrivilegeSpec bad_ulimit;
  bad_ulimit.ulimits = {"files=10"};
  CHECK(message_of(prepare_privileges(bad_ulimit).error())
            .starts_with("cannot use --ulimit files=10: unknown limit"));

  PrivilegeSpec missing;
  missing.seccomp = SeccompMode::file;
  missing.seccomp_file = "/nonexistent/profile.json";
  auto m = prepare_privileges(missing);
  REQUIRE(!m);
  CHECK(message_of(m.error()) ==
        "cannot use seccomp profile: open /nonexistent/profile.json: No such file or directory");

  auto dir = fs::TempDir::make("/tmp", "fnexec-unit-seccomp-");
  REQUIRE(dir);
  auto bad_file = dir->path() / "bad.json";
  REQUIRE(fs::write_file_atomic(bad_file, R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [7]})"));
  PrivilegeSpec bad_profile;
  bad_profile.seccomp = SeccompMode::file;
  bad_profile.seccomp_file = bad_file.string();
  CHECK(message_of(prepare_privileges(bad_profile).error()) ==
        "cannot use seccomp profile " + bad_file.string() + ": syscalls[0]: expected an object");

  auto good_file = dir->path() / "good.json";
  REQUIRE(fs::write_file_atomic(good_file, kDockerLike));
  bad_profile.seccomp_file = good_file.string();
  p = prepare_privileges(bad_profile);
  REQUIRE_MESSAGE(p, (p ? "" : p.error().message()));
  CHECK(p->seccomp_enabled);
  CHECK(!p->seccomp_filter.empty());
}
