// Hostile rootfs trees against the sandbox init's targets: a workdir, a volume target, a tmpfs
// target and /etc/hosts that are symlinks (absolute to a host path, relative with .., into /proc,
// /sys or /dev, through a magic link). Each either resolves inside the sandbox's root or fails with
// a clear error; nothing outside the sandbox changes.
#include <doctest/doctest.h>
#include <unistd.h>

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

bool has(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string slurp(const stdfs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Every entry below dir with its type and link target: "what the rootfs holds" before and after.
std::string listing(const stdfs::path& dir) {
  std::string out;
  for (auto it = stdfs::recursive_directory_iterator(dir); it != stdfs::recursive_directory_iterator(); ++it) {
    out += it->path().lexically_relative(dir).string();
    if (it->is_symlink()) out += " -> " + stdfs::read_symlink(it->path()).string();
    out += '\n';
  }
  return out;
}

// A busybox rootfs on its own tmpfs with the links a case adds; a host directory the links name;
// and a volume source. The state dir is fnexec's own.
struct HostileTree {
  ScratchTmpfs scratch{"64m"};
  stdfs::path rootfs = scratch / "rootfs", state = scratch / "state", host = scratch / "host-side",
              volume = scratch / "volume";

  HostileTree() {
    populate_busybox_rootfs(rootfs);
    for (const char* d : {"etc", "srv/app", "srv/data", "tmp"}) stdfs::create_directories(rootfs / d);
    stdfs::create_directories(host);
    stdfs::create_directories(volume);
    std::ofstream(volume / "v.txt") << "from the volume\n";
    std::ofstream(rootfs / "etc/hosts") << "127.0.0.1 localhost\n";
  }
  void link(const std::string& target, const std::string& at) {
    stdfs::remove(rootfs / at);
    stdfs::create_symlink(target, rootfs / at);
  }
  ProcResult run(const std::vector<std::string>& flags, const std::string& script) {
    std::vector<std::string> args{"--root", state.string(), "run", "--rootfs"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {rootfs.string(), "--", "sh", "-c", script});
    return fnexec(args);
  }
};

}  // namespace

TEST_SUITE("run") {
  TEST_CASE("hostile rootfs: a symlinked workdir resolves inside the root or fails clearly; the host is untouched") {
    HostileTree t;
    t.link(t.host.string(), "abs");                     // absolute: names the host directory's path
    t.link("../../../../../../" + t.host.string(), "rel");  // relative, climbing with ..
    t.link("/proc/sys/kernel", "kproc");                // into /proc
    t.link("/proc/self/root", "magic");                  // a magic link
    t.link("/srv/app", "app");                            // an honest link inside the image
    auto before = listing(t.rootfs);
    auto mounts = count_mounts_below(t.scratch.path());

    // The link's target is looked up inside the root, where the host's path does not exist.
    for (const char* dir : {"/abs/sub", "/rel/sub"}) {
      CAPTURE(dir);
      auto r = t.run({"-w", dir}, "pwd");
      CHECK(r.exit_code == 125);
      CHECK_MESSAGE(has(r.err, std::string("create directory ") + dir), r.err);
      CHECK(has(r.err, "No such file or directory"));
    }
    auto proc = t.run({"-w", "/kproc/made-by-fnexec"}, "pwd");
    CHECK(proc.exit_code == 125);
    CHECK_MESSAGE(has(proc.err, "create directory /kproc/made-by-fnexec: a symlink leads it into /proc, /sys or /dev"),
                  proc.err);
    auto magic = t.run({"-w", "/magic/sub"}, "pwd");
    CHECK(magic.exit_code == 125);
    CHECK_MESSAGE(has(magic.err, "create directory /magic/sub"), magic.err);

    // Inside the image a link is followed, and the directory is made where it leads.
    auto ok = t.run({"-w", "/app/new"}, "pwd -P");
    CHECK_MESSAGE(ok.exit_code == 0, ok.err);
    CHECK(ok.out == "/srv/app/new\n");

    CHECK(stdfs::is_empty(t.host));
    CHECK(listing(t.rootfs) == before);  // the lower tree: writes went to the sandbox's upper
    CHECK(count_mounts_below(t.scratch.path()) == mounts);
  }

  TEST_CASE("hostile rootfs: symlinked volume and tmpfs targets never mount onto /proc, /sys, /dev or the host") {
    HostileTree t;
    t.link(t.host.string(), "abs");
    t.link("/proc/sys", "kproc");
    t.link("/sys/fs", "ksys");
    t.link("/dev/shm", "kdev");
    t.link("/srv/data", "data");
    auto before = listing(t.rootfs);
    auto mounts = count_mounts_below(t.scratch.path());
    const std::string vol = t.volume.string();

    auto abs = t.run({"-v", vol + ":/abs/v"}, "true");
    CHECK(abs.exit_code == 125);
    CHECK_MESSAGE(has(abs.err, "create directory /abs/v"), abs.err);
    for (const char* target : {"/kproc", "/ksys", "/kdev", "/kproc/v"}) {
      CAPTURE(target);
      auto r = t.run({"-v", vol + ":" + target}, "true");
      CHECK(r.exit_code == 125);
      CHECK_MESSAGE(has(r.err, "a symlink leads it into /proc, /sys or /dev"), r.err);
      auto tmpfs = t.run({"--tmpfs", target}, "true");
      CHECK(tmpfs.exit_code == 125);
      CHECK_MESSAGE(has(tmpfs.err, "a symlink leads it into /proc, /sys or /dev"), tmpfs.err);
    }
    // Written there by the user: refused before anything starts.
    for (const char* target : {"/proc/x", "/sys", "/"}) {
      CAPTURE(target);
      auto r = t.run({"-v", vol + ":" + target}, "true");
      CHECK(r.exit_code == 125);
      CHECK_MESSAGE(has(r.err, "fnexec mounts the root, /proc and /sys itself"), r.err);
    }

    // A link inside the image: the volume is mounted where it leads.
    auto ok = t.run({"-v", vol + ":/data"}, "cat /srv/data/v.txt; cat /data/v.txt");
    CHECK_MESSAGE(ok.exit_code == 0, ok.err);
    CHECK(ok.out == "from the volume\nfrom the volume\n");

    CHECK(stdfs::is_empty(t.host));
    CHECK(listing(t.rootfs) == before);
    CHECK(listing(t.volume) == "v.txt\n");
    CHECK(count_mounts_below(t.scratch.path()) == mounts);
  }

  TEST_CASE("hostile rootfs: a file volume on a symlinked /etc/hosts lands inside the root or is refused") {
    HostileTree t;
    auto hosts = t.scratch / "hosts";
    std::ofstream(hosts) << "10.0.0.9 mine\n";
    const std::string flag = hosts.string() + ":/etc/hosts:ro";
    auto outside = stdfs::path("/tmp") / ("fnexec-sec-root-hosts-" + std::to_string(::getpid()));
    auto mounts = count_mounts_below(t.scratch.path());

    // Relative, climbing out: it names /tmp/... of the sandbox, made there and mounted over.
    t.link("../../../../../.." + outside.string(), "etc/hosts");
    auto climbed = t.run({"-v", flag}, "cat /etc/hosts; ls " + outside.string());
    CHECK_MESSAGE(climbed.exit_code == 0, climbed.err);
    CHECK(climbed.out == "10.0.0.9 mine\n" + outside.string() + "\n");
    CHECK(!stdfs::exists(stdfs::symlink_status(outside)));

    // Absolute to the host's own /etc/hosts path: the image's /etc/hosts is a link to itself.
    t.link("/etc/hosts", "etc/hosts");
    auto self = t.run({"-v", flag}, "cat /etc/hosts");
    CHECK(self.exit_code == 125);
    CHECK_MESSAGE(has(self.err, "/etc/hosts"), self.err);

    // Into /proc: a bind over the sandbox's kernel files is refused.
    t.link("/proc/sys/kernel/hostname", "etc/hosts");
    auto proc = t.run({"-v", flag}, "cat /etc/hosts");
    CHECK(proc.exit_code == 125);
    CHECK_MESSAGE(has(proc.err, "a symlink leads it into /proc, /sys or /dev"), proc.err);

    // A dangling link into a directory the image lacks: a clear error, nothing made.
    t.link("/run/systemd/resolve/hosts", "etc/hosts");
    auto dangling = t.run({"-v", flag}, "cat /etc/hosts");
    CHECK(dangling.exit_code == 125);
    CHECK_MESSAGE(has(dangling.err, "create mount point /etc/hosts"), dangling.err);
    CHECK(has(dangling.err, "No such file or directory"));

    CHECK(slurp(hosts) == "10.0.0.9 mine\n");
    CHECK(count_mounts_below(t.scratch.path()) == mounts);
  }

  TEST_CASE("hostile rootfs: fnexec's own /proc, /dev and /sys must not be symlinks in the image") {
    for (const char* dir : {"proc", "dev", "sys"}) {
      CAPTURE(dir);
      HostileTree fresh;
      fresh.link("/tmp", dir);
      auto r = fresh.run({}, "true");
      CHECK(r.exit_code == 125);
      CHECK_MESSAGE(has(r.err, std::string(" on /") + dir + ": the image has a symlink on this path"), r.err);
      CHECK(stdfs::is_empty(fresh.rootfs / "tmp"));
    }
  }
}

}  // namespace fnexec::test
