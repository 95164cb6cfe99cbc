// Per-function user namespaces and volumes in the daemon: each function's root is its own slice of
// the subordinate ids (disjoint, recorded, kept across restarts), volumes only from volume_allow,
// and an image's symlinks cannot aim the workdir or a volume target at the host.
#include <sys/stat.h>

#include "server/json.h"
#include "test_serve_fixture.h"

using namespace fnexec;
using namespace fnexec::test::serve;

namespace {

constexpr uint64_t kIdsPerFunction = 65536;

// "0 FIRST COUNT" from a uid_map line in the output; 0 when absent.
uint64_t mapped_first(const std::string& out) {
  std::smatch m;
  static const std::regex re(R"(^\s*0\s+(\d+)\s+(\d+))");
  return std::regex_search(out, m, re) ? std::stoull(m[1]) : 0;
}

}  // namespace

TEST_SUITE("serve") {
  TEST_CASE("per-function userns: disjoint ranges from the subid line, files owned by them, kept across a restart") {
    auto share = test::ScratchTmpfs("1m");
    ::chmod(share.path().c_str(), 0777);
    InvokeDaemon d("volume_allow = " + share.path().string() + ":rw\n");
    const std::string script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /tmp/f; stat -c %u:%g /tmp/f";
    d.create("a", script + "; touch /share/from-a", R"("min_warm":0,"volumes":[")" + share.path().string() + R"(:/share:rw"])");
    d.create("b", script, R"("min_warm":1)");
    auto a = d.invoke("a", "");
    auto b = d.invoke("b", "");
    REQUIRE_MESSAGE(a.status == 200, a.body);
    REQUIRE_MESSAGE(b.status == 200, b.body);
    uint64_t fa = mapped_first(a.body), fb = mapped_first(b.body);
    INFO(a.body, "\n", b.body);
    CHECK(fa >= d.subid_first());
    CHECK(fb >= d.subid_first());
    CHECK(fa + kIdsPerFunction <= d.subid_first() + (64 << 16));
    CHECK((fa + kIdsPerFunction <= fb || fb + kIdsPerFunction <= fa));  // disjoint
    CHECK(contains(a.body, " 65536\n"));
    CHECK(contains(a.body, "\n0\n0:0\n"));  // root inside, and /tmp's file is root's inside
    // On the host the file root made belongs to the function's first id, uid and gid alike.
    struct stat st {};
    REQUIRE(::stat((share.path() / "from-a").c_str(), &st) == 0);
    CHECK(st.st_uid == fa);
    CHECK(st.st_gid == fa);
    // The range shows in GET, and a warm sandbox of b is in the same range as its cold one.
    CHECK(contains(d.curl("GET", "/v1/functions/a").body, R"("userns":true)"));
    CHECK(mapped_first(d.invoke("b", "").body) == fb);

    // A function that opts out runs as host root, as before.
    d.create("hostids", "cat /proc/self/uid_map", R"("min_warm":0,"userns":false)");
    CHECK(contains(d.invoke("hostids", "").body, "0          0 4294967295"));

    // A restart keeps each function's range (recorded in the state database).
    CHECK(d.stop() == 0);
    d.start();
    CHECK(mapped_first(d.invoke("a", "").body) == fa);
    CHECK(mapped_first(d.invoke("b", "").body) == fb);
    // A new function never gets a range that a live function holds.
    d.create("c", "cat /proc/self/uid_map", R"("min_warm":0)");
    uint64_t fc = mapped_first(d.invoke("c", "").body);
    CHECK(fc != 0);
    CHECK(fc != fa);
    CHECK(fc != fb);
  }

  TEST_CASE("per-function userns: a missing subid line is a clear error naming the file and the line") {
    InvokeDaemon d;
    write_file(d.scratch() / "subuid", "");
    // The daemon reads the files when it configures a function, so the emptied file counts now.
    auto r = d.curl("PUT", "/v1/functions/f", R"({"image":"bb:1","cmd":["true"],"min_warm":0})");
    CHECK(r.status == 503);
    CHECK(contains(r.body, (d.scratch() / "subuid").string()));
    CHECK(contains(r.body, "no line for fnexec-test; add a line such as `fnexec-test:"));
    CHECK(d.curl("GET", "/v1/functions/f").status == 404);
    // Without a user namespace the function needs no ids.
    auto ok = d.curl("PUT", "/v1/functions/f", R"({"image":"bb:1","cmd":["true"],"min_warm":0,"userns":false})");
    CHECK(ok.status == 201);
  }

  TEST_CASE("volumes: only below volume_allow, read-only unless allowed and asked, clear errors") {
    auto ro = test::ScratchTmpfs("1m");
    auto rw = test::ScratchTmpfs("1m");
    ::chmod(rw.path().c_str(), 0777);
    write_file(ro.path() / "hello.txt", "from the host\n");
    stdfs::create_symlink("/etc", ro.path() / "etc-link");
    InvokeDaemon d("volume_allow = " + ro.path().string() + "\nvolume_allow = " + rw.path().string() + ":rw\n");
    d.create("reader", "cat /data/hello.txt; touch /data/x 2>/dev/null && echo wrote || echo ro; echo hi > /out/y && echo out-rw",
             R"("min_warm":0,"volumes":[")" + ro.path().string() + R"(:/data",")" + rw.path().string() + R"(:/out:rw"])");
    auto r = d.invoke("reader", "");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.body == "from the host\nro\nout-rw\n");
    CHECK(slurp(rw.path() / "y") == "hi\n");
    CHECK(!stdfs::exists(ro.path() / "x"));
    // Read-only by default even where writes are allowed.
    d.create("rw-default", "touch /out/z 2>/dev/null && echo wrote || echo ro",
             R"("min_warm":0,"volumes":[")" + rw.path().string() + R"(:/out"])");
    CHECK(d.invoke("rw-default", "").body == "ro\n");

    struct Bad {
      std::string volume, message;
    };
    for (const auto& bad : std::vector<Bad>{
             {"/etc:/data", "/etc is not below a volume_allow path of fnexec.conf"},
             {(ro.path() / "etc-link").string() + ":/data", "/etc is not below a volume_allow path"},
             {ro.path().string() + ":/data:rw", "is read-only; add :rw there"},
             {ro.path().string() + "/../etc:/data", "must not contain .."},
             {ro.path().string(), "is not SOURCE:TARGET"},
             {ro.path().string() + ":data", "needs absolute paths"},
         }) {
      auto put = d.curl("PUT", "/v1/functions/bad",
                        R"({"image":"bb:1","cmd":["true"],"min_warm":0,"volumes":[)" + server::json_string(bad.volume) + "]}");
      INFO(bad.volume, " → ", put.status, " ", put.body);
      CHECK(put.status == 400);
      CHECK(contains(put.body, bad.message));
    }
    CHECK(d.curl("GET", "/v1/functions/bad").status == 404);
  }

  TEST_CASE("hostile image: a workdir and a volume target that are absolute symlinks stay inside the rootfs") {
    auto host = test::ScratchTmpfs("1m");  // what the image's symlinks point at, on the host
    auto share = test::ScratchTmpfs("1m");
    write_file(share.path() / "v.txt", "volume\n");
    auto layer = test::ScratchTmpfs("1m");
    stdfs::create_symlink(host.path(), layer.path() / "work");
    stdfs::create_symlink(host.path() / "mnt", layer.path() / "mnt");
    InvokeDaemon d("volume_allow = " + share.path().string() + "\n");
    auto archive = d.scratch() / "hostile.tar";
    auto mk = test::run({test::rootfs_tool("mkimage").string(), "--busybox", "--dir", layer.path().string(), "--ref",
                         "hostile:1", "--oci-archive", archive.string()});
    REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    auto up = d.curl("POST", "/v1/images?name=hostile%3A1", std::nullopt, {"--data-binary", "@" + archive.string()});
    REQUIRE_MESSAGE(up.status == 201, up.body);
    auto put = d.curl("PUT", "/v1/functions/h",
                      R"({"image":"hostile:1","cmd":["/bin/sh","-c","pwd; cat /mnt/v/v.txt; touch made-here"],"min_warm":0,)"
                      R"("workdir":"/work/sub","volumes":[")" + share.path().string() + R"(:/mnt/v"]})");
    REQUIRE_MESSAGE(put.status == 201, put.body);
    auto r = d.invoke("h", "");
    INFO(r.body);
    // Either the sandbox resolves the links inside its own root, or it refuses; it never reaches the host.
    CHECK(stdfs::is_empty(host.path()));
    CHECK(!stdfs::exists(share.path() / "made-here"));
    if (r.status == 200) CHECK(contains(r.body, "volume\n"));
  }
}
