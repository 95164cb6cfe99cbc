// Per-function security in the daemon: user, read-only rootfs, capabilities, seccomp profiles and
// rlimits set with PUT /v1/functions reach the sandbox, bad values are refused with the field
// named, and the escape probe denies through the daemon what it denies under `fnexec run`.
#include "server/json.h"
#include "test_serve_fixture.h"

using namespace fnexec;
using namespace fnexec::test::serve;

namespace {

// bb:1 with the static escape probe at /bin/escape_probe.
struct SecurityDaemon : InvokeDaemon {
  explicit SecurityDaemon(std::string extra = "") : InvokeDaemon(std::move(extra)) {
    auto archive = scratch() / "probe.tar";
    const char* probe = std::getenv("FNEXEC_ESCAPE_PROBE");
    REQUIRE(probe != nullptr);
    auto mk = test::run({test::rootfs_tool("mkimage").string(), "--busybox", "--file",
                         std::string(probe) + "=/bin/escape_probe", "--ref", "probe:1", "--oci-archive",
                         archive.string()});
    REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    auto up = curl("POST", "/v1/images?name=probe%3A1", std::nullopt, {"--data-binary", "@" + archive.string()});
    REQUIRE_MESSAGE(up.status == 201, up.body);
  }
  Http put(const std::string& name, const std::string& body) { return curl("PUT", "/v1/functions/" + name, body); }
};

}  // namespace

TEST_SUITE("serve") {
  TEST_CASE("function security: user, read_only_rootfs, cap_add/cap_drop, nofile and pids_limit reach the sandbox") {
    SecurityDaemon d;
    d.create("plain", "grep -E '^(Cap(Eff|Bnd)|Seccomp|NoNewPrivs):' /proc/self/status; ulimit -n; id -u; "
                      "touch /x && echo rw || echo ro", R"("min_warm":0)");
    auto plain = d.invoke("plain", "");
    REQUIRE(plain.status == 200);
    CHECK(contains(plain.body, "CapEff:\t00000000800005fb"));
    CHECK(contains(plain.body, "Seccomp:\t2"));
    CHECK(contains(plain.body, "NoNewPrivs:\t1"));
    CHECK(contains(plain.body, "\n1024\n0\nrw\n"));

    d.create("hardened",
             "grep -E '^Cap(Eff|Bnd):' /proc/self/status; ulimit -n; id -u; touch /x 2>/dev/null && echo rw || "
             "echo ro; touch /tmp/x && echo tmp-rw",
             R"("min_warm":0,"user":"1000:1000","read_only_rootfs":true,"cap_drop":["ALL"],"cap_add":["NET_BIND_SERVICE"],"nofile":200,"pids_limit":32)");
    auto h = d.invoke("hardened", "");
    REQUIRE(h.status == 200);
    CHECK(contains(h.body, "CapEff:\t0000000000000400"));  // NET_BIND_SERVICE, ambient for uid 1000
    CHECK(contains(h.body, "CapBnd:\t0000000000000400"));
    CHECK(contains(h.body, "\n200\n1000\nro\ntmp-rw\n"));
    auto got = d.curl("GET", "/v1/functions/hardened");
    CHECK(contains(got.body, R"("read_only_rootfs":true,"cap_add":["NET_BIND_SERVICE"],"cap_drop":["ALL"],"seccomp_profile":"default","nofile":200)"));
    CHECK(contains(got.body, R"("pids_limit":32)"));
  }

  TEST_CASE("function security: seccomp_profile inline, by name and unconfined; bad values name the field") {
    auto profiles = test::ScratchTmpfs("1m");
    write_file(profiles / "no-uname.json",
               R"({"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["uname"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]})");
    SecurityDaemon d("seccomp_profile_dir = " + (profiles / "").string() + "\n");
    d.create("inline", "uname -s; echo rc=$?",
             R"("min_warm":0,"seccomp_profile":{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["uname"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]})");
    auto i = d.invoke("inline", "");
    REQUIRE(i.status == 200);
    // busybox's uname prints an empty name when the syscall fails; unconfined it prints "Linux".
    CHECK(i.body == "\nrc=0\n");
    CHECK(contains(d.curl("GET", "/v1/functions/inline").body, R"("seccomp_profile":{"defaultAction":"SCMP_ACT_ALLOW")"));

    d.create("named", "uname -s; echo rc=$?", R"("min_warm":0,"seccomp_profile":"no-uname")");
    CHECK(d.invoke("named", "").body == "\nrc=0\n");
    d.create("open", "grep Seccomp: /proc/self/status", R"("min_warm":0,"seccomp_profile":"unconfined")");
    CHECK(contains(d.invoke("open", "").body, "Seccomp:\t0"));

    struct Bad {
      std::string fields, message;
    };
    for (const auto& bad : std::vector<Bad>{
             {R"("cap_add":["NET_FLY"])", "cap_add"},
             {R"("cap_drop":"ALL")", "cap_drop"},
             {R"("read_only_rootfs":"yes")", "read_only_rootfs"},
             {R"("nofile":3)", "nofile"},
             {R"("seccomp_profile":"../etc/passwd")", "seccomp_profile"},
             {R"("seccomp_profile":"missing")", "missing.json"},
             {R"("seccomp_profile":{"defaultAction":"SCMP_ACT_NOPE"})", "unknown action 'SCMP_ACT_NOPE'"},
             {R"("seccomp_profile":{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["raed"],"action":"SCMP_ACT_ERRNO"}]})",
              "unknown syscall 'raed'"},
         }) {
      auto r = d.put("bad", R"({"image":"bb:1","cmd":["true"],"min_warm":0,)" + bad.fields + "}");
      INFO(bad.fields, " → ", r.status, " ", r.body);
      CHECK(r.status == 400);
      CHECK(contains(r.body, bad.message));
    }
    CHECK(d.curl("GET", "/v1/functions/bad").status == 404);
  }

  TEST_CASE("function security: fnexec.conf defaults apply to functions that do not say") {
    SecurityDaemon d("default_user = 65534:65534\ndefault_read_only_rootfs = true\ndefault_nofile = 300\n"
                     "default_cap_drop = NET_BIND_SERVICE, KILL\n");
    d.create("dflt", "id -u; ulimit -n; touch /x 2>/dev/null && echo rw || echo ro", R"("min_warm":0)");
    auto r = d.invoke("dflt", "");
    REQUIRE(r.status == 200);
    CHECK(r.body == "65534\n300\nro\n");
    auto got = d.curl("GET", "/v1/functions/dflt").body;
    CHECK(contains(got, R"("user":"65534:65534")"));
    CHECK(contains(got, R"("cap_drop":["NET_BIND_SERVICE","KILL"])"));
  }

  TEST_CASE("function security: the escape probe denies everything as a daemon function, as root and as a user") {
    SecurityDaemon d;
    for (const std::string user : {"", "1000:1000", "65534:65534"}) {
      std::string fields = R"("image":"probe:1","cmd":["/bin/escape_probe","all"],"min_warm":0)";
      if (!user.empty()) fields += R"(,"user":")" + user + "\"";
      auto put = d.put("probe", "{" + fields + "}");
      REQUIRE_MESSAGE(put.status / 100 == 2, put.body);
      auto r = d.invoke("probe", "");
      INFO("user '", user, "': ", r.body);
      CHECK(r.status == 200);  // escape_probe exits 0 only when every attempt was denied
      CHECK(r.header("Fnexec-Exit-Code") == "0");
      for (const char* line : {"mount EPERM", "unshare EPERM", "ptrace_pid1 EPERM", "bpf EPERM", "keyctl EPERM"})
        CHECK_MESSAGE(contains(r.body, line), line);
    }
  }

  TEST_CASE("function security: a daemon function with cap_add MKNOD cannot make or open host devices") {
    SecurityDaemon d;
    d.create("mknod",
             "mknod /dev/xsda b 8 0 2>/dev/null && echo made-block || echo block-refused; "
             "mknod /dev/xmem c 1 1 2>/dev/null && echo made-mem || echo mem-refused; "
             "grep -E '^CapEff:' /proc/self/status; echo x > /dev/null && echo null-ok",
             R"("min_warm":0,"cap_add":["MKNOD"])");
    auto r = d.invoke("mknod", "");
    REQUIRE(r.status == 200);
    INFO(r.body);
    CHECK(contains(r.body, "block-refused"));
    CHECK(contains(r.body, "mem-refused"));
    CHECK(contains(r.body, "null-ok"));
  }

  TEST_CASE("devices: a device_allow device is usable by its function; others are refused at PUT and in the sandbox") {
    auto alias = test::ScratchTmpfs("1m");
    stdfs::create_symlink("/dev/net/tun", alias.path() / "tun");
    InvokeDaemon d("device_allow = /dev/net/tun:rw\ndevice_allow = /dev/loop-control:r\n");
    const std::string script =
        "ls -ln /dev/net/tun | cut -c1-10; (exec 3<>/dev/net/tun) 2>/dev/null && echo tun-opened || echo tun-refused; "
        "mknod /dev/xkmsg c 1 11 2>/dev/null && echo made-kmsg || echo kmsg-refused; "
        "mknod /dev/xsda b 8 0 2>/dev/null && echo made-block || echo block-refused";
    // As host root with MKNOD, so only the kernel's device policy stands between it and the host's
    // devices; and in its own user namespace (the default), where the node is its root's.
    d.create("tun-host", script, R"("min_warm":0,"userns":false,"cap_add":["MKNOD"],"devices":["/dev/net/tun:rw"])");
    auto cli = test::fnexec({"fn", "create", "tun-userns", "--socket", d.socket().string(), "--image", "bb:1",
                             "--min-warm", "0", "--device", (alias.path() / "tun").string() + ":/dev/net/tun:rw",
                             "--", "/bin/sh", "-c", script});
    REQUIRE_MESSAGE(cli.exit_code == 0, cli.err);
    CHECK(contains(d.curl("GET", "/v1/functions/tun-host").body, R"("devices":["/dev/net/tun:/dev/net/tun:rw"])"));
    for (const char* name : {"tun-host", "tun-userns"}) {
      CAPTURE(name);
      auto r = d.invoke(name, "");
      REQUIRE_MESSAGE(r.status == 200, r.body);
      CHECK(r.body.starts_with("crw-------\ntun-opened\n"));
      CHECK(contains(r.body, "kmsg-refused"));
      CHECK(contains(r.body, "block-refused"));
    }
    // A function without it cannot reach the device even as host root with MKNOD.
    d.create("no-tun", "mknod /dev/t c 10 200 2>/dev/null && echo made || echo refused",
             R"("min_warm":0,"userns":false,"cap_add":["MKNOD"])");
    CHECK(d.invoke("no-tun", "").body == "refused\n");

    struct Bad {
      std::string device, message;
    };
    for (const auto& bad : std::vector<Bad>{
             {"/dev/kmsg", "/dev/kmsg (c 1:11) is not a device_allow device of fnexec.conf; an administrator may add "
                           "`device_allow = /dev/kmsg` there"},
             {"/dev/loop-control:rw", "it asks for rw but device_allow = /dev/loop-control:r allows r"},
             {"/dev/net/tun:/etc/tun", "the path inside the sandbox must be below /dev"},
             {"/dev/no-such-device", "No such file or directory"},
             {"/etc/passwd:/dev/passwd", "not a character or block device node"},
             {"/dev/net/tun:/dev/t:rwx", "expected HOST[:CONTAINER][:PERMISSIONS]"},
         }) {
      auto put = d.curl("PUT", "/v1/functions/bad",
                        R"({"image":"bb:1","cmd":["true"],"min_warm":0,"devices":[)" + server::json_string(bad.device) + "]}");
      INFO(bad.device, " → ", put.status, " ", put.body);
      CHECK(put.status == 400);
      CHECK(contains(put.body, bad.message));
    }
    CHECK(d.curl("GET", "/v1/functions/bad").status == 404);
    auto cli_bad = d.cli({"fn", "create", "bad", "--image", "bb:1", "--device", "/dev/kmsg"});
    CHECK(cli_bad.exit_code != 0);
    CHECK_MESSAGE(contains(cli_bad.err, "is not a device_allow device"), cli_bad.err);
  }

  TEST_CASE("devices: without device_allow no function may have a device") {
    InvokeDaemon d;
    auto put = d.curl("PUT", "/v1/functions/f",
                      R"({"image":"bb:1","cmd":["true"],"min_warm":0,"devices":["/dev/net/tun"]})");
    CHECK(put.status == 400);
    CHECK(contains(put.body, "is not a device_allow device"));
  }
}
