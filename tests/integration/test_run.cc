// fnexec run against the real kernel: a busybox rootfs on a tmpfs, the real binary, root.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "support/fixtures.h"
#include "support/proc.h"
#include "util/fs.h"

namespace fnexec::test {
namespace {

namespace stdfs = std::filesystem;

// One busybox-static rootfs for the whole suite: /bin/busybox plus a symlink per applet.
struct BusyboxRootfs {
  ScratchTmpfs scratch{"256m"};
  stdfs::path rootfs = scratch / "rootfs";
  stdfs::path state = scratch / "state";

  BusyboxRootfs() {
    populate_busybox_rootfs(rootfs);
    stdfs::create_directories(rootfs / "etc");
    stdfs::create_directories(state);
    std::ofstream(rootfs / "etc/passwd")
        << "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/home/app:/bin/sh\n";
    std::ofstream(rootfs / "etc/group") << "root:x:0:\napp:x:2345:\nstaff:x:50:\n";
    std::ofstream(rootfs / "etc/hostname") << "image\n";
    // Static: tries each escape a sandbox must deny (tests/integration/programs/escape_probe.cc).
    stdfs::copy_file(build_root() / "tests/integration/escape_probe", rootfs / "bin/escape_probe");
  }
};

BusyboxRootfs& image() {
  static BusyboxRootfs r;
  return r;
}

// fnexec --root STATE run --rootfs ROOTFS [flags...] -- argv...
ProcResult run_in(const std::vector<std::string>& flags, const std::vector<std::string>& argv,
                  const ProcOptions& options = {}) {
  std::vector<std::string> args{"--root", image().state.string(), "run", "--rootfs"};
  args.insert(args.end(), flags.begin(), flags.end());
  args.push_back(image().rootfs.string());
  args.push_back("--");
  args.insert(args.end(), argv.begin(), argv.end());
  return fnexec(args, options);
}

ProcResult sh(const std::string& script, const std::vector<std::string>& flags = {},
              const ProcOptions& o = {}) {
  return run_in(flags, {"sh", "-c", script}, o);
}

std::string read(const stdfs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool host_has_process_with(const std::string& token) {
  for (auto& e : stdfs::directory_iterator("/proc")) {
    auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = read(e.path() / "cmdline");
    for (auto& c : cmd)
      if (c == '\0') c = ' ';
    if (cmd.find(token) != std::string::npos && cmd.find("sh -c") == std::string::npos) return true;
  }
  return false;
}

// Other test binaries may run at the same time in the host's mount namespace and cgroups, so the
// generic ResourceSnapshot counts can move under us: these count only what fnexec run could leave,
// mounts of its kinds or under its state dir, and (count_cgroups_named) its "run-*" sandbox cgroups.
size_t fnexec_mounts() {
  std::ifstream f("/proc/self/mountinfo");
  size_t n = 0;
  for (std::string line; std::getline(f, line);) {
    if (line.find(image().state.string()) != std::string::npos ||
        line.find(" - overlay ") != std::string::npos || line.find(" - mqueue ") != std::string::npos ||
        line.find(" - devpts devpts ") != std::string::npos)
      ++n;
  }
  return n;
}

// Starts `fnexec --root STATE run --rootfs ROOTFS -- argv` with stdin, stdout and stderr on fd.
pid_t spawn_on(int fd, const std::vector<std::string>& argv) {
  std::vector<std::string> args{fnexec_bin().string(),   "--root", image().state.string(), "run", "--rootfs",
                                image().rootfs.string(), "--"};
  args.insert(args.end(), argv.begin(), argv.end());
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  for (int target : {0, 1, 2}) posix_spawn_file_actions_adddup2(&fa, fd, target);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, cargs[0], &fa, nullptr, cargs.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE(rc == 0);
  return pid;
}

// Reads from fd until `until` appears or EOF/EIO (a pty master reports EIO once the slave is gone).
std::string read_until(int fd, const std::string& until) {
  std::string got;
  char buf[4096];
  while (got.find(until) == std::string::npos) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

int wait_exit(pid_t pid) {
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace

TEST_SUITE("run") {
  TEST_CASE("echo hi prints hi and exits 0") {
    REQUIRE(is_root());
    auto r = run_in({}, {"echo", "hi"});
    CHECK(r.exit_code == 0);
    CHECK(r.out == "hi\n");
    CHECK(r.err == "");
  }

  TEST_CASE("stdin reaches the function and stdout comes back byte for byte") {
    std::mt19937 rng(42);
    std::string mib(1 << 20, '\0');
    for (auto& c : mib) c = static_cast<char>(rng());
    for (const std::string& data : {std::string("x"), mib, std::string("\0\xff\n\r\x01", 5)}) {
      auto r = run_in({}, {"cat"}, {.stdin_data = data});
      CHECK(r.exit_code == 0);
      CHECK(r.out.size() == data.size());
      CHECK(r.out == data);
    }
    auto err = sh("echo to-stderr >&2");
    CHECK(err.out == "");
    CHECK(err.err == "to-stderr\n");
  }

  TEST_CASE("exit status is the function's, 128+N on a signal") {
    CHECK(sh("exit 0").exit_code == 0);
    CHECK(sh("exit 3").exit_code == 3);
    CHECK(sh("kill -9 $$").exit_code == 137);
    // As PID 1 of its namespace the function ignores signals from inside without a handler.
    CHECK(sh("kill -9 $$", {"--no-init"}).exit_code == 0);
    CHECK(sh("exit 3", {"--no-init"}).exit_code == 3);
  }

  TEST_CASE("a TTY on stdin and stdout reaches the function as a TTY") {
    int master = -1, slave = -1;
    REQUIRE(::openpty(&master, &slave, nullptr, nullptr, nullptr) == 0);
    pid_t pid =
        spawn_on(slave, {"sh", "-c", "test -t 0 && test -t 1 && echo is-a-tty; read line; echo got-$line"});
    ::close(slave);
    CHECK(read_until(master, "is-a-tty").find("is-a-tty") != std::string::npos);
    REQUIRE(::write(master, "abc\n", 4) == 4);
    CHECK(read_until(master, "got-abc").find("got-abc") != std::string::npos);
    CHECK(wait_exit(pid) == 0);
    ::close(master);
  }

  TEST_CASE("SIGTERM to fnexec reaches the function through the init") {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_t pid = spawn_on(
        fds[1], {"sh", "-c", "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.02; done"});
    ::close(fds[1]);
    CHECK(read_until(fds[0], "ready") == "ready\n");
    ::kill(pid, SIGTERM);
    CHECK(read_until(fds[0], "got-term") == "got-term\n");
    CHECK(wait_exit(pid) == 7);
    ::close(fds[0]);
  }

  TEST_CASE("a killed fnexec takes its sandbox with it") {
    const std::string token = "4444" + std::to_string(::getpid());
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    image();  // built before the snapshot: its scratch tmpfs is a mount
    // The PID 1 an earlier case's `fnexec run` left to us may still be tearing its namespaces down
    // (at nice 19, slow on a loaded host); counted now and gone later, it would read as a change.
    reap_adopted_sandbox_inits();
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {  // zombies earlier suites left are not ours to count
    }
    auto before = ResourceSnapshot::take();
    size_t mounts_before = fnexec_mounts(), cgroups_before = count_cgroups_named("run-");
    pid_t pid = spawn_on(fds[1], {"sh", "-c", "sleep " + token + " & echo ready; sleep " + token});
    ::close(fds[1]);
    CHECK(read_until(fds[0], "ready") == "ready\n");
    ::kill(pid, SIGKILL);
    CHECK(wait_exit(pid) == 137);
    // The pipe reaches EOF only when every sandbox process holding it is gone.
    CHECK(read_until(fds[0], "never") == "");
    ::close(fds[0]);
    CHECK_FALSE(host_has_process_with("sleep " + token));
    // The orphaned sandbox init was reparented to us (a subreaper) and is a zombie to reap, not a
    // process. WNOHANG: a blocking wait would also wait on children other suites keep for the whole
    // run (the network suite's servers).
    for (int i = 0; i < 500 && ResourceSnapshot::take().processes != before.processes; ++i) {
      while (::waitpid(-1, nullptr, WNOHANG) > 0) {
      }
      ::usleep(20'000);
    }
    CHECK(ResourceSnapshot::take().processes == before.processes);
    CHECK(fnexec_mounts() == mounts_before);
    CHECK(count_cgroups_named("run-") == cgroups_before);
  }

  TEST_CASE("fnexec's own errors: 125 bad image, 126 cannot exec, 127 not found") {
    auto bad =
        fnexec({"--root", image().state.string(), "run", "--rootfs", "/nonexistent-rootfs", "--", "true"});
    CHECK(bad.exit_code == 125);
    CHECK(bad.err.find("/nonexistent-rootfs") != std::string::npos);

    auto noexec = run_in({}, {"/etc/passwd"});
    CHECK(noexec.exit_code == 126);
    CHECK(noexec.err.find("execute entrypoint /etc/passwd") != std::string::npos);

    auto missing = run_in({}, {"/app/handler"});
    CHECK(missing.exit_code == 127);
    CHECK(missing.err.find("entrypoint /app/handler not found in image") != std::string::npos);
    CHECK(run_in({}, {"no-such-command"}).exit_code == 127);
    CHECK(run_in({"--no-init"}, {"/app/handler"}).exit_code == 127);

    auto bad_volume = run_in({"-v", "/nonexistent-dir:/data"}, {"true"});
    CHECK(bad_volume.exit_code == 125);
    CHECK(bad_volume.err.find("/nonexistent-dir") != std::string::npos);
    CHECK(run_in({"--timeout", "soon"}, {"true"}).exit_code == 125);
    CHECK(run_in({"--userns", "maybe"}, {"true"}).exit_code == 125);
    // A setup step failing before go: reported as 125 naming the step, every time (no SIGPIPE race).
    for (int i = 0; i < 20; ++i) {
      auto bad_mount = run_in({"--tmpfs", "/t:size=bogus"}, {"true"});
      CHECK(bad_mount.exit_code == 125);
      CHECK(bad_mount.err.find("mount tmpfs on /t") != std::string::npos);
    }
  }

  TEST_CASE("--timeout kills the function with everything it forked: exit 124") {
    ScratchTmpfs vol("1m");
    const std::string token = "4242" + std::to_string(::getpid());
    image();  // built before the snapshot: its scratch tmpfs is a mount
    auto before = ResourceSnapshot::take();
    size_t mounts_before = fnexec_mounts(), cgroups_before = count_cgroups_named("run-");
    auto r = sh("for i in 1 2 3; do (sleep " + token + " & echo $! >> /v/pids; sleep " + token +
                    ") & done; sleep " + token,
                {"--timeout", "300ms", "-v", vol.path().string() + ":/v"});
    CHECK(r.exit_code == 124);
    CHECK(r.err.find("timed out") != std::string::npos);
    MESSAGE("fnexec returned " << r.wall.count() << " us after start with a 300 ms timeout");
    // Three grandchildren really ran, and none of them (nor their parents) survives on the host.
    std::istringstream pids(read(vol / "pids"));
    int n = 0;
    for (std::string l; std::getline(pids, l);) ++n;
    CHECK(n == 3);
    CHECK_FALSE(host_has_process_with("sleep " + token));
    auto after = ResourceSnapshot::take();
    CHECK(after.processes == before.processes);
    CHECK(fnexec_mounts() == mounts_before);
    CHECK(count_cgroups_named("run-") == cgroups_before);
  }

  TEST_CASE("a background child left by the function leaves no process on the host") {
    const std::string token = "4343" + std::to_string(::getpid());
    image();  // built before the snapshot: its scratch tmpfs is a mount
    auto before = ResourceSnapshot::take();
    size_t mounts_before = fnexec_mounts(), cgroups_before = count_cgroups_named("run-");
    auto r = sh("sleep " + token + " >/dev/null 2>&1 & echo started");
    CHECK(r.exit_code == 0);
    CHECK(r.out == "started\n");
    // Killed and reaped by init before it reported, so before fnexec answered.
    CHECK_FALSE(host_has_process_with("sleep " + token));
    reap_adopted_sandbox_inits();
    CHECK(ResourceSnapshot::take().processes == before.processes);
    CHECK(fnexec_mounts() == mounts_before);
    CHECK(count_cgroups_named("run-") == cgroups_before);
  }

  TEST_CASE("environment, working directory, user and entrypoint from flags") {
    auto env = run_in({"-e", "A=1", "-e", "B=two words", "-e", "FNEXEC_TEST_FROM_HOST"}, {"env"},
                      {.env = {{"FNEXEC_TEST_FROM_HOST", "yes"}}});
    CHECK(env.out.find("A=1\n") != std::string::npos);
    CHECK(env.out.find("B=two words\n") != std::string::npos);
    CHECK(env.out.find("FNEXEC_TEST_FROM_HOST=yes\n") != std::string::npos);
    CHECK(env.out.find("PATH=/usr/local/sbin:") != std::string::npos);
    CHECK(env.out.find("HOSTNAME=fnexec\n") != std::string::npos);

    ScratchTmpfs files("1m");
    std::ofstream(files / "env") << "# comment\nFROM_FILE=ok\n\nA=overridden-by-flag\n";
    auto ef = run_in({"--env-file", (files / "env").string(), "-e", "A=flag"}, {"env"});
    CHECK(ef.out.find("FROM_FILE=ok\n") != std::string::npos);
    CHECK(ef.out.find("A=flag\n") != std::string::npos);

    CHECK(run_in({"-w", "/srv/work"}, {"pwd"}).out == "/srv/work\n");
    CHECK(run_in({}, {"pwd"}).out == "/\n");
    CHECK(run_in({"-u", "1000:1001"}, {"sh", "-c", "id -u; id -g"}).out == "1000\n1001\n");
    CHECK(run_in({"-u", "app"}, {"sh", "-c", "id -u; id -g; echo $HOME"}).out == "1234\n2345\n/home/app\n");
    CHECK(run_in({"-u", "app:staff"}, {"id", "-g"}).out == "50\n");
    CHECK(run_in({"-u", "nobody-here"}, {"true"}).exit_code == 125);
    CHECK(run_in({}, {"id", "-u"}).out == "0\n");
    CHECK(run_in({"--entrypoint", "/bin/echo"}, {"a", "b"}).out == "a b\n");
  }

  TEST_CASE("inside: init is PID 1, only the sandbox's processes, hostname, only lo and it is up") {
    CHECK(sh("echo $$").out == "2\n");
    CHECK(sh("echo $$", {"--no-init"}).out == "1\n");
    // PID 1 (init) and the shell: nothing of the host.
    CHECK(sh("echo /proc/[0-9]*").out == "/proc/1 /proc/2\n");
    // The init is a copy of fnexec: neither its command line (host paths) nor its environment shows.
    auto init = sh("tr -d '\\0' < /proc/1/cmdline; echo; cat /proc/1/environ", {},
                   {.env = {{"FNEXEC_TEST_SECRET", "s3cret"}}});
    CHECK(init.out == "fnexec-init\n");
    CHECK(init.err.find("Permission denied") != std::string::npos);
    CHECK(run_in({}, {"hostname"}).out == "fnexec\n");
    CHECK(run_in({"--hostname", "fn-1"}, {"hostname"}).out == "fn-1\n");
    CHECK(run_in({}, {"ls", "/sys/class/net"}).out == "lo\n");
    CHECK(run_in({}, {"cat", "/sys/class/net/lo/flags"}).out == "0x9\n");  // IFF_UP | IFF_LOOPBACK
    CHECK(sh("ip -o link | wc -l").out == "1\n");
  }

  TEST_CASE("inside: /dev is minimal, kernel knobs are masked or read-only") {
    CHECK(sh("ls /dev | tr '\\n' ' '").out ==
          "fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero ");
    CHECK(sh("head -c 4 /dev/zero | wc -c").out == "4\n");
    CHECK(sh("echo x > /proc/sys/kernel/hostname").exit_code != 0);
    CHECK(sh("cat /proc/keys | wc -c").out == "0\n");
    CHECK(sh("ls /sys/firmware | wc -l").out == "0\n");
    CHECK(sh("touch /sys/x").exit_code != 0);
  }

  TEST_CASE("end to end: every escape is denied, as root, as a user and under --userns=auto") {
    for (const auto& flags :
         std::vector<std::vector<std::string>>{{}, {"-u", "1000"}, {"--userns", "auto"}}) {
      auto r = run_in(flags, {"escape_probe", "all"});
      INFO(r.out << r.err);
      CHECK(r.exit_code == 0);
      CHECK(r.out.find("mount EPERM") != std::string::npos);
      CHECK(r.out.find("ptrace_pid1 EPERM") != std::string::npos);
    }
  }

  TEST_CASE("--security-opt: seccomp=unconfined and seccomp=FILE, no-new-privileges; others are refused") {
    CHECK(sh("grep Seccomp: /proc/self/status").out == "Seccomp:\t2\n");
    CHECK(sh("grep Seccomp: /proc/self/status", {"--security-opt", "seccomp=unconfined"}).out == "Seccomp:\t0\n");
    auto nnp = sh("grep NoNewPrivs: /proc/self/status", {"--security-opt", "no-new-privileges"});
    CHECK(nnp.out == "NoNewPrivs:\t1\n");
    auto dir = fnexec::fs::TempDir::make("/tmp", "fnexec-sec-seccomp-");
    REQUIRE(dir);
    auto profile = dir->path() / "p.json";
    REQUIRE(fnexec::fs::write_file_atomic(
        profile, R"({"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["uname"],"action":"SCMP_ACT_ERRNO"}]})"));
    std::vector<std::string> with_profile{"--security-opt", "seccomp=" + profile.string()};
    CHECK(sh("uname -s", with_profile).out == "\n");  // busybox prints an empty name when uname fails
    for (const std::string bad : {"label=disable", "no-new-privileges=false", "seccomp="}) {
      auto r = sh("true", {"--security-opt", bad});
      INFO(bad, ": ", r.err);
      CHECK(r.exit_code != 0);
      CHECK(r.err.find("cannot use --security-opt " + bad) != std::string::npos);
    }
  }

  TEST_CASE("writes go to a private upper layer and vanish after the run") {
    auto w = sh("echo data > /marker && rm /etc/hostname && cat /marker && ls /etc/hostname");
    CHECK(w.out == "data\n");
    CHECK(w.exit_code != 0);  // the deleted file is absent in the same run
    CHECK_FALSE(stdfs::exists(image().rootfs / "marker"));
    CHECK(stdfs::exists(image().rootfs / "etc/hostname"));
    CHECK(sh("ls /marker").exit_code != 0);
    CHECK(sh("cat /etc/hostname").out == "image\n");
  }

  TEST_CASE("--read-only refuses writes to the rootfs, /tmp stays writable") {
    auto r = sh("touch /x", {"--read-only"});
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("Read-only file system") != std::string::npos);
    CHECK(sh("touch /tmp/x && echo ok", {"--read-only"}).out == "ok\n");
    CHECK(sh("touch /t/x && echo ok", {"--read-only", "--tmpfs", "/t:1m"}).out == "ok\n");
  }

  TEST_CASE("volumes are visible, :ro is read-only") {
    ScratchTmpfs vol("1m");
    std::ofstream(vol / "in") << "from host";
    auto rw = sh("cat /data/in && echo out > /data/out", {"-v", vol.path().string() + ":/data"});
    CHECK(rw.out == "from host");
    CHECK(read(vol / "out") == "out\n");
    auto ro = sh("cat /data/in; touch /data/no", {"-v", vol.path().string() + ":/data:ro"});
    CHECK(ro.out == "from host");
    CHECK(ro.err.find("Read-only file system") != std::string::npos);
    CHECK_FALSE(stdfs::exists(vol / "no"));
    // A file volume.
    CHECK(run_in({"-v", (vol / "in").string() + ":/etc/in.txt:ro"}, {"cat", "/etc/in.txt"}).out ==
          "from host");
    // Volumes are nodev: a device node on the host's side opens nothing inside.
    REQUIRE(::mknod((vol / "null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0);
    auto dev = sh("if echo x > /data/null; then echo opened; else echo refused; fi", {"-v", vol.path().string() + ":/data"});
    CHECK(dev.out == "refused\n");
    CHECK_MESSAGE(dev.err.find("Permission denied") != std::string::npos, dev.err);
  }

  TEST_CASE("--userns=auto: root inside is an unprivileged uid on the host") {
    ScratchTmpfs vol("1m");
    ::chmod(vol.path().c_str(), 0777);
    auto r = sh("id -u; stat -c %u /bin/busybox; touch /v/made-by-root; touch /made && echo wrote",
                {"--userns", "auto", "-v", vol.path().string() + ":/v"});
    CHECK(r.exit_code == 0);
    CHECK(r.out == "0\n0\nwrote\n");
    struct stat st {};
    REQUIRE(::stat((vol / "made-by-root").c_str(), &st) == 0);
    CHECK(st.st_uid != 0);
    CHECK(st.st_uid >= 100000);
    MESSAGE("sandbox root is host uid " << st.st_uid);
    // Host root's files are not root's inside.
    auto host = sh("touch /v/host-file", {"--userns", "auto", "-v", "/proc:/v"});
    CHECK(host.exit_code != 0);
  }

  TEST_CASE("cgroups: --memory kills with 137 and says so, --report gives the record, --pids-limit holds") {
    ScratchTmpfs files("1m");
    image();  // built before the snapshot: its scratch tmpfs is a mount
    image();  // built before the snapshot: its scratch tmpfs is a mount
    auto before = ResourceSnapshot::take();
    size_t mounts_before = fnexec_mounts(), cgroups_before = count_cgroups_named("run-");
    auto oom = sh("x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
                  {"--memory", "32m", "--report", "-"});
    CHECK(oom.exit_code == 137);
    CHECK(oom.out == "");
    CHECK(oom.err.find("out of memory") != std::string::npos);
    CHECK(oom.err.find("\"oom_killed\":true") != std::string::npos);

    auto ok = sh("echo hi", {"--report", (files / "r.json").string()});
    CHECK(ok.exit_code == 0);
    std::string json = read(files / "r.json");
    for (const char* key : {"\"wall_us\":", "\"cpu_user_us\":", "\"cpu_system_us\":",
                            "\"memory_peak_bytes\":", "\"exit_code\":0", "\"signal\":null",
                            "\"oom_killed\":false", "\"timed_out\":false", "\"cgroup_mode\":\"v"})
      CHECK_MESSAGE(json.find(key) != std::string::npos, key << " in " << json);

    auto pids = sh("for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait; echo end", {"--pids-limit", "4"});
    CHECK(pids.err.find("fork") != std::string::npos);
    // The sandbox's cgroup namespace is rooted at its own cgroup, also on v1 where it is attached after
    // clone.
    CHECK(sh("grep -c ':/$' /proc/self/cgroup; grep -vc ':/$' /proc/self/cgroup", {"--cgroups", "enabled"})
              .out == sh("wc -l < /proc/self/cgroup; echo 0").out);
    auto timeout = sh("sleep 5", {"--timeout", "100ms", "--report", "-"});
    CHECK(timeout.exit_code == 124);
    CHECK(timeout.err.find("\"timed_out\":true") != std::string::npos);
    CHECK(run_in({"--cgroups", "disabled", "--memory", "1m"}, {"true"}).exit_code == 125);
    reap_adopted_sandbox_inits();
    auto after = ResourceSnapshot::take();
    CHECK(count_cgroups_named("run-") == cgroups_before);
    CHECK(fnexec_mounts() == mounts_before);
    CHECK(after.processes == before.processes);
  }

  TEST_CASE("run answers before the sandbox's teardown, and the teardown leaves nothing behind") {
    const std::string token = "4545" + std::to_string(::getpid());
    image();  // built before the snapshot: its scratch tmpfs is a mount
    reap_adopted_sandbox_inits();
    auto before = ResourceSnapshot::take();
    size_t mounts_before = fnexec_mounts(), cgroups_before = count_cgroups_named("run-");
    // A background child holding the function's stdout (a pipe read here to EOF) is killed and
    // reaped by init before it reports.
    // test::run, not fnexec(): that one reaps what comes back to us, which is what this test counts.
    auto r = run({fnexec_bin().string(), "--root", image().state.string(), "run", "--rootfs", image().rootfs.string(),
                  "--", "sh", "-c", "sleep " + token + " & echo $!; exit 3"});
    CHECK(r.exit_code == 3);
    CHECK(r.out.size() > 1);
    CHECK_FALSE(host_has_process_with("sleep " + token));
    // fnexec did not wait for PID 1: it came back to this process (the subreaper) to be reaped.
    CHECK(reap_adopted_sandbox_inits() == 1);
    // Once it is gone, its mounts (in its own mount namespace), its cgroup and its processes are too.
    CHECK(ResourceSnapshot::take().processes == before.processes);
    CHECK(fnexec_mounts() == mounts_before);
    CHECK(count_cgroups_named("run-") == cgroups_before);
    CHECK(stdfs::is_empty(image().state / "mnt"));
    // With a cgroup to remove, fnexec waits for PID 1 itself: nothing comes back to be reaped.
    CHECK(run({fnexec_bin().string(), "--root", image().state.string(), "run", "--cgroups", "enabled", "--rootfs",
               image().rootfs.string(), "--", "true"})
              .exit_code == 0);
    CHECK(reap_adopted_sandbox_inits() == 0);
    CHECK(count_cgroups_named("run-") == cgroups_before);
  }

  TEST_CASE("nothing is left behind after many runs and failed runs") {
    run_in({}, {"true"});  // warm up: the state dir and its mount point exist from here on
    auto before = ResourceSnapshot::take();
    size_t mounts_before = fnexec_mounts(), cgroups_before = count_cgroups_named("run-");
    for (int i = 0; i < 1000; ++i) {
      auto r = run_in({}, {"true"});
      if (r.exit_code != 0) {
        FAIL("run " << i << " failed: " << r.err);
      }
    }
    run_in({}, {"/app/handler"});
    run_in({"-v", "/nonexistent:/x"}, {"true"});
    run_in({"--timeout", "50ms"}, {"sleep", "5"});
    run_in({"--userns", "auto"}, {"true"});
    reap_adopted_sandbox_inits();
    auto after = ResourceSnapshot::take();
    CHECK(fnexec_mounts() == mounts_before);
    CHECK(after.fds == before.fds);
    CHECK(after.processes == before.processes);
    CHECK(count_cgroups_named("run-") == cgroups_before);
  }

}  // TEST_SUITE
}  // namespace fnexec::test
