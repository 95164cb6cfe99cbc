// Parent-side pieces of the sandbox that need no privileges: plans, parsers, records.
#include <doctest/doctest.h>

#include <sys/mount.h>

#include <string>

#include "invoke/invocation.h"
#include "runtime/protocol.h"
#include "sandbox/setup_plan.h"
#include "sandbox/userns.h"

namespace fnexec::sandbox {
namespace {

// The first mount of fstype (on path, when given).
const detail::SetupOp* find_mount(const detail::ChildPlan& plan, std::string_view fstype,
                                  std::string_view path = {}) {
  for (const auto& op : plan.ops)
    if (op.kind == detail::OpKind::mount && op.fstype && op.fstype == fstype &&
        (path.empty() || (op.path && op.path == path)))
      return &op;
  return nullptr;
}

}  // namespace

TEST_SUITE("sandbox") {
  TEST_CASE("the init's plan block decodes to the plan it was made from") {
    SandboxSpec spec;
    spec.layers = {"/s/layers/a"};
    spec.mount_dir = "/run/x";
    detail::ChildPlan plan;
    std::vector<UniqueFd> fds;
    REQUIRE(detail::plan_rootfs(spec, -1, plan, fds));
    plan.control_fd = 7;
    plan.error_fd = 8;
    plan.hostname = plan.keep("fn");
    plan.hostname_len = 2;
    plan.cwd = plan.keep("/work");
    plan.exec_candidates = {plan.keep("/bin/cat"), plan.keep("/usr/bin/cat")};
    plan.argv = {const_cast<char*>(plan.keep("cat")), const_cast<char*>(plan.keep("-")), nullptr};
    plan.envp = {const_cast<char*>(plan.keep("A=1")), nullptr};
    plan.privileges.uid = 1000;
    plan.privileges.groups = {5, 6};
    plan.privileges.seccomp_filter = {{0x06, 0, 0, 0x7fff0000}};
    plan.privileges.rlimits = {{7, 1024, 2048}};
    plan.wait_attach = true;

    std::string block = detail::encode_for_init(plan);
    namespace wire = runtime::wire;
    const wire::Header* h = wire::decode(block.data(), block.size());
    REQUIRE(h);
    const char* base = block.data();
    CHECK(h->flags == (wire::kInit | wire::kWaitAttach | wire::kDieWithParent | wire::kSeccomp));
    CHECK(h->control_fd == 7);
    CHECK(h->error_fd == 8);
    CHECK(std::string(wire::str(base, h->hostname)) == "fn");
    CHECK(std::string(wire::str(base, h->cwd)) == "/work");
    auto* argv = reinterpret_cast<char* const*>(base + h->argv);
    CHECK(std::string(argv[0]) == "cat");
    CHECK(std::string(argv[1]) == "-");
    CHECK(argv[2] == nullptr);
    auto* cand = reinterpret_cast<char* const*>(base + h->candidates);
    CHECK(std::string(cand[1]) == "/usr/bin/cat");
    CHECK(cand[2] == nullptr);
    REQUIRE(h->n_ops == plan.ops.size());
    auto* ops = reinterpret_cast<const wire::Op*>(base + h->ops);
    for (size_t i = 0; i < plan.ops.size(); ++i) {
      CHECK(ops[i].kind == plan.ops[i].kind);
      CHECK(std::string(wire::str(base, ops[i].path)) == plan.ops[i].path);
    }
    CHECK(h->uid == 1000);
    CHECK(h->n_groups == 2);
    CHECK(reinterpret_cast<const uint32_t*>(base + h->groups)[1] == 6);
    CHECK(h->n_filter == 1);
    CHECK(h->n_rlimits == 1);
    CHECK(reinterpret_cast<const wire::Rlimit*>(base + h->rlimits)->hard == 2048);

    // A block cut short, or of another version, is refused rather than read past its end.
    std::string cut = detail::encode_for_init(plan);
    CHECK(wire::decode(cut.data(), cut.size() - 8) == nullptr);
    std::string other = detail::encode_for_init(plan);
    reinterpret_cast<wire::Header*>(other.data())->version = 99;
    CHECK(wire::decode(other.data(), other.size()) == nullptr);
  }

  TEST_CASE("overlay lowerdir lists the top layer first") {
    SandboxSpec spec;
    spec.layers = {"/s/layers/a", "/s/layers/b", "/s/layers/c"};
    spec.mount_dir = "/run/x";
    detail::ChildPlan plan;
    std::vector<UniqueFd> fds;
    REQUIRE(detail::plan_rootfs(spec, -1, plan, fds));
    auto* ov = find_mount(plan, "overlay");
    REQUIRE(ov);
    CHECK(std::string(ov->data) ==
          "lowerdir=/s/layers/c:/s/layers/b:/s/layers/a,upperdir=/run/x/upper,workdir=/run/x/work");
    CHECK(std::string(ov->path) == "/run/x/root");
    CHECK(detail::describe(*ov) == "mount overlay on /run/x/root");
    // Image layers are mounted nodev; the sandbox's /dev is a tmpfs of its own that is not.
    CHECK((ov->flags & MS_NODEV) != 0);
    auto* dev = find_mount(plan, "tmpfs", "/dev");
    REQUIRE(dev);
    CHECK((dev->flags & MS_NODEV) == 0);
  }

  TEST_CASE("many layers: relative lowerdirs from the common parent, then a clear error") {
    SandboxSpec spec;
    std::string parent = "/var/lib/fnexec/layers/sha256/";
    for (int i = 0; i < 60; ++i)
      spec.layers.push_back(parent + std::string(64, static_cast<char>('a' + i % 26)) + std::to_string(i));
    detail::ChildPlan plan;
    std::vector<UniqueFd> fds;
    REQUIRE(detail::plan_rootfs(spec, -1, plan, fds));
    auto* ov = find_mount(plan, "overlay");
    REQUIRE(ov);
    CHECK(std::string(ov->data).rfind("lowerdir=" + std::string(64, 'h') + "59:", 0) == 0);
    CHECK(std::string(ov->data).size() < 4096);
    bool chdir_to_parent = false;
    for (const auto& op : plan.ops)
      if (op.kind == detail::OpKind::chdir && std::string(op.path) + "/" == parent) chdir_to_parent = true;
    CHECK(chdir_to_parent);

    for (int i = 60; i < 130; ++i) spec.layers.push_back(parent + std::string(64, 'z') + std::to_string(i));
    detail::ChildPlan plan2;
    auto r = detail::plan_rootfs(spec, -1, plan2, fds);
    REQUIRE_FALSE(r);
    CHECK(r.error().message().find("lowerdir list too long (130 layers)") != std::string::npos);
  }

  TEST_CASE("bad specs are refused before clone") {
    detail::ChildPlan plan;
    std::vector<UniqueFd> fds;
    SandboxSpec spec;
    CHECK_FALSE(detail::plan_rootfs(spec, -1, plan, fds));  // no layers
    spec.layers = {"relative/layer"};
    CHECK_FALSE(detail::plan_rootfs(spec, -1, plan, fds));
    spec.layers = {"/a:b"};
    CHECK_FALSE(detail::plan_rootfs(spec, -1, plan, fds));
    spec.layers = {"/ok"};
    spec.tmpfs = {{"relative", ""}};
    CHECK_FALSE(detail::plan_rootfs(spec, -1, plan, fds));
    spec.tmpfs = {};
    spec.volumes = {{"/nonexistent-volume-source", "/data", false}};
    auto r = detail::plan_rootfs(spec, -1, plan, fds);
    REQUIRE_FALSE(r);
    CHECK(r.error().message().find("/nonexistent-volume-source") != std::string::npos);
  }

  TEST_CASE("read-only rootfs gets scratch tmpfs and a final read-only remount") {
    SandboxSpec spec;
    spec.layers = {"/l"};
    spec.read_only = true;
    spec.tmpfs = {{"/tmp", "size=1m"}};
    detail::ChildPlan plan;
    std::vector<UniqueFd> fds;
    REQUIRE(detail::plan_rootfs(spec, -1, plan, fds));
    CHECK(plan.ops.back().kind == detail::OpKind::remount_ro);
    CHECK((plan.ops.back().flags & MS_NODEV) != 0);  // a bind remount would otherwise clear nodev
    int tmp = 0, run = 0;
    for (const auto& op : plan.ops) {
      if (op.kind != detail::OpKind::mount || !op.fstype || std::string(op.fstype) != "tmpfs") continue;
      if (std::string(op.path) == "/tmp") {
        ++tmp;
        CHECK(std::string(op.data) == "size=1m");  // the user's, not the default
      }
      if (std::string(op.path) == "/run") ++run;
    }
    CHECK(tmp == 1);
    CHECK(run == 1);
  }

  TEST_CASE("subordinate id lines") {
    auto r = parse_subid("alice:100000:65536\nfnexec:200000:1000\n", "fnexec");
    REQUIRE(r);
    CHECK(r->host_first == 200000);
    CHECK(r->count == 1000);
    CHECK(parse_subid("alice:1:2\n", "fnexec").error().kind == ErrorKind::not_found);
    CHECK(parse_subid("fnexec:x:2\n", "fnexec").error().kind == ErrorKind::invalid);
    CHECK(parse_subid("fnexec:0:2\n", "fnexec").error().kind ==
          ErrorKind::invalid);  // would map to host root
  }

}  // TEST_SUITE

}  // namespace fnexec::sandbox

namespace fnexec::invoke {

TEST_SUITE("invoke") {
  TEST_CASE("durations") {
    using namespace std::chrono_literals;
    CHECK(*parse_duration("500ms") == 500ms);
    CHECK(*parse_duration("2s") == 2s);
    CHECK(*parse_duration("2") == 2s);
    CHECK(*parse_duration("1m") == 60s);
    CHECK(*parse_duration("1.5s") == 1500ms);
    CHECK(*parse_duration("250us") == 250us);
    CHECK_FALSE(parse_duration("soon"));
    CHECK_FALSE(parse_duration("5 days"));
    CHECK_FALSE(parse_duration("-1s"));
  }

  TEST_CASE("the invocation record as JSON, null for missing counters") {
    InvocationRecord r;
    r.wall_us = 1234;
    r.cpu_user_us = 10;
    r.exit_code = 137;
    r.signal = 9;
    r.cgroup_mode = "v1";
    CHECK(to_json(r) ==
          "{\"wall_us\":1234,\"cpu_user_us\":10,\"cpu_system_us\":null,\"memory_peak_bytes\":null,"
          "\"exit_code\":137,\"signal\":9,\"oom_killed\":false,\"timed_out\":false,\"cgroup_mode\":\"v1\","
          "\"memory_peak_includes_setup\":false}");
  }

}  // TEST_SUITE

}  // namespace fnexec::invoke
