// fnexec run IMAGE: images built with rootfs-tools/mkimage, stored and run through the store.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support/fixtures.h"
#include "support/proc.h"
#include "util/fs.h"

namespace fnexec::test {
namespace {

namespace stdfs = std::filesystem;

// Two images in one store on a tmpfs:
//   fn-hello:1  busybox layer; a layer deleting /etc/motd and hiding /data's lower contents (opaque);
//               config Entrypoint ["/bin/echo","hello"], Cmd ["world"], Env A=image B=image,
//               WorkingDir /srv/app, User app.
//   plain:1     busybox only, no config: the command comes from the run.
struct ImageStore {
  ScratchTmpfs scratch{"256m"};
  stdfs::path store = scratch / "store";
  stdfs::path hello_archive = scratch / "hello.tar";

  ImageStore() {
    stdfs::create_directories(scratch / "files/data");
    std::ofstream(scratch / "files/motd") << "lower motd\n";
    std::ofstream(scratch / "files/data/old") << "lower data\n";
    std::ofstream(scratch / "files/passwd")
        << "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/home/app:/bin/sh\n";
    std::ofstream(scratch / "files/group") << "root:x:0:\napp:x:2345:\n";
    auto mk = run({rootfs_tool("mkimage").string(),
                   "--busybox",
                   "--file",
                   (scratch / "files/motd").string() + "=/etc/motd",
                   "--file",
                   (scratch / "files/data").string() + "=/data",
                   "--file",
                   (scratch / "files/passwd").string() + "=/etc/passwd",
                   "--file",
                   (scratch / "files/group").string() + "=/etc/group",
                   "--layer",
                   "--delete",
                   "/etc/motd",
                   "--opaque",
                   "/data",
                   "--entrypoint",
                   R"(["/bin/echo","hello"])",
                   "--cmd",
                   R"(["world"])",
                   "--env",
                   "A=image",
                   "--env",
                   "B=image",
                   "--workdir",
                   "/srv/app",
                   "--user",
                   "app",
                   "--ref",
                   "fn-hello:1",
                   "--oci-archive",
                   hello_archive.string()});
    REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    auto imp = fnexec({"--root", store.string(), "image", "import", hello_archive.string()});
    REQUIRE_MESSAGE(imp.exit_code == 0, imp.err);
    auto plain = run({rootfs_tool("mkimage").string(), "--busybox", "--ref", "plain:1", "-o",
                      (scratch / "plain").string()});
    REQUIRE_MESSAGE(plain.exit_code == 0, plain.err);
    auto imp2 = fnexec({"--root", store.string(), "image", "import", "oci:" + (scratch / "plain").string(),
                        "--name", "plain:1"});
    REQUIRE_MESSAGE(imp2.exit_code == 0, imp2.err);
  }
};

ImageStore& images() {
  static ImageStore s;
  return s;
}

ProcResult run_image(const std::vector<std::string>& args, const ProcOptions& o = {}) {
  std::vector<std::string> full{"--root", images().store.string(), "run"};
  full.insert(full.end(), args.begin(), args.end());
  return fnexec(full, o);
}

}  // namespace

TEST_SUITE("run-image") {
  TEST_CASE("Entrypoint, Cmd, Env, WorkingDir and User come from the image config") {
    CHECK(run_image({"fn-hello:1"}).out == "hello world\n");
    CHECK(run_image({"fn-hello:1", "--", "there"}).out == "hello there\n");  // ARGs replace Cmd
    auto inside =
        run_image({"--entrypoint", "/bin/sh", "fn-hello:1", "-c", "pwd; id -u; id -g; echo $A $B $HOME"});
    CHECK(inside.out == "/srv/app\n1234\n2345\nimage image /home/app\n");
    // --entrypoint clears the image's Cmd.
    CHECK(run_image({"--entrypoint", "/bin/echo", "fn-hello:1"}).out == "\n");
  }

  TEST_CASE("flags override the image config") {
    auto r = run_image({"-e", "A=flag", "-w", "/tmp", "-u", "0:0", "--entrypoint", "/bin/sh", "fn-hello:1",
                        "-c", "pwd; id -u; echo $A $B"});
    CHECK(r.out == "/tmp\n0\nflag image\n");
  }

  TEST_CASE("upper layers' whiteouts: a deleted file and an opaque directory's lower contents are absent") {
    auto r = run_image({"--entrypoint", "/bin/sh", "fn-hello:1", "-c",
                        "ls /etc/motd; ls -A /data | wc -l; ls /bin/busybox"});
    CHECK(r.out == "0\n/bin/busybox\n");
    CHECK(r.err.find("/etc/motd") != std::string::npos);
    // Same under --userns=auto, where the layers are id-mapped into the sandbox's user namespace.
    auto u = run_image({"--userns", "auto", "--entrypoint", "/bin/sh", "fn-hello:1", "-c",
                        "ls /etc/motd; ls -A /data | wc -l; stat -c %u /bin/busybox"});
    CHECK(u.out == "0\n0\n");
  }

  TEST_CASE("an image without Entrypoint or Cmd runs the command given, and refuses to run without one") {
    CHECK(run_image({"plain:1", "--", "echo", "ok"}).out == "ok\n");
    auto none = run_image({"plain:1"});
    CHECK(none.exit_code == 125);
    CHECK(none.err.find("no Entrypoint or Cmd") != std::string::npos);
  }

  TEST_CASE("missing image: 125 naming it; missing entrypoint: 127 naming entrypoint and image") {
    auto bad = run_image({"no-such:1", "--", "true"});
    CHECK(bad.exit_code == 125);
    CHECK(bad.err.find("no-such:1") != std::string::npos);
    auto missing = run_image({"--entrypoint", "/app/handler", "fn-hello:1"});
    CHECK(missing.exit_code == 127);
    CHECK(missing.err.find("entrypoint /app/handler not found in image fn-hello:1") != std::string::npos);
  }

  TEST_CASE("a device node kept with --allow-devices opens nothing (layers are nodev); /dev/null works") {
    auto tar = images().scratch / "devices.tar";
    auto made = run({"python3", "-c", R"PY(
import sys, tarfile
with tarfile.open(sys.argv[1], "w") as tf:
    for name, kind, mode in (("kept", tarfile.DIRTYPE, 0o777), ("kept/null", tarfile.CHRTYPE, 0o666)):
        ti = tarfile.TarInfo(name); ti.type = kind; ti.mode = mode; ti.devmajor, ti.devminor = 1, 3
        tf.addfile(ti)
)PY",
                     tar.string()});
    REQUIRE(made.exit_code == 0);
    auto layout = images().scratch / "devices";
    auto mk = run({rootfs_tool("mkimage").string(), "--busybox", "--raw-layer", tar.string(), "-o", layout.string()});
    REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    auto imp = fnexec({"--root", images().store.string(), "image", "import", "oci:" + layout.string(), "--name",
                       "devices:1", "--allow-devices"});
    REQUIRE_MESSAGE(imp.exit_code == 0, imp.err);
    const std::string script =
        "ls -l /kept/null; echo x >/dev/null && head -c 4 /dev/zero | wc -c; "
        "if echo x >/kept/null; then echo kept-opened; else echo kept-refused; fi";
    // --read-only remounts the rootfs: nodev must survive it.
    for (bool read_only : {false, true}) {
      CAPTURE(read_only);
      std::vector<std::string> args{"devices:1", "--", "/bin/sh", "-c", script};
      if (read_only) args.insert(args.begin(), "--read-only");
      auto r = run_image(args);
      REQUIRE_MESSAGE(r.exit_code == 0, r.err);
      CHECK(r.out.starts_with("crw-rw-rw-"));
      CHECK(r.out.find("\n4\nkept-refused\n") != std::string::npos);
      CHECK_MESSAGE(r.err.find("Permission denied") != std::string::npos, r.err);
    }
  }

  TEST_CASE("--user NAME reads the image's passwd inside the image: `etc -> /etc` and `../` links never reach the host's") {
    // "daemon" is in the host's /etc/passwd (Debian) and in none of these images.
    REQUIRE(fs::read_file("/etc/passwd")->find("\ndaemon:") != std::string::npos);
    auto dir = images().scratch / "user-links";
    stdfs::create_directories(dir / "abs");
    stdfs::create_symlink("/etc", dir / "abs/etc");
    stdfs::create_directories(dir / "moved/real-etc");
    stdfs::create_symlink("/real-etc", dir / "moved/etc");
    std::ofstream(dir / "moved/real-etc/passwd") << "inside:x:4321:4321::/home/inside:/bin/sh\n";
    for (const char* name : {"abs", "moved"}) {
      auto layout = images().scratch / (std::string("links-") + name);
      auto mk = run({rootfs_tool("mkimage").string(), "--busybox", "--dir", (dir / name).string(), "-o",
                     layout.string()});
      REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
      auto imp = fnexec({"--root", images().store.string(), "image", "import", "oci:" + layout.string(), "--name",
                         std::string("links-") + name + ":1"});
      REQUIRE_MESSAGE(imp.exit_code == 0, imp.err);
    }
    auto host_user = run_image({"--user", "daemon", "links-abs:1", "--", "/bin/id"});
    CHECK(host_user.exit_code == 125);
    CHECK_MESSAGE(host_user.err.find("not in the image's /etc/passwd") != std::string::npos, host_user.err);
    // A link that stays inside resolves inside: the layer's /real-etc/passwd is the image's.
    auto inside = run_image({"--user", "inside", "links-moved:1", "--", "/bin/sh", "-c", "id -u"});
    CHECK_MESSAGE(inside.exit_code == 0, inside.err);
    CHECK(inside.out == "4321\n");

    // --rootfs trees are not checked by an unpacker: a `../` climb must stay inside too.
    auto rootfs = images().scratch / "climbing-rootfs";
    populate_busybox_rootfs(rootfs);
    stdfs::create_symlink("../../../../../../../../etc", rootfs / "etc");
    auto climb = fnexec({"run", "--rootfs", "--user", "daemon", rootfs.string(), "--", "/bin/id"});
    CHECK(climb.exit_code == 125);
    CHECK_MESSAGE(climb.err.find("not in the image's /etc/passwd") != std::string::npos, climb.err);
    auto group = fnexec({"run", "--rootfs", "--user", "0:daemon", rootfs.string(), "--", "/bin/id"});
    CHECK(group.exit_code == 125);
    CHECK_MESSAGE(group.err.find("not in the image's /etc/group") != std::string::npos, group.err);
  }

  TEST_CASE("a transport is imported on the fly") {
    auto r = run_image({"oci-archive:" + images().hello_archive.string(), "--", "on-the-fly"});
    CHECK(r.exit_code == 0);
    CHECK(r.out == "hello on-the-fly\n");
  }
}

}  // namespace fnexec::test
