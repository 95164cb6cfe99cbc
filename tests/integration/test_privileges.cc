// apply_privileges on the real kernel, without the launcher: a forked child in its own mount
// namespace (and pid namespace, as pid 2 under a pid 1 that only dropped its bounding set, the
// sandbox's shape) applies the privileges, reports what it sees, and execs escape_probe.
#include <doctest/doctest.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "sandbox/capabilities.h"
#include "sandbox/privileges.h"
#include "support/fixtures.h"
#include "util/fs.h"
#include "util/unique_fd.h"

extern char** environ;

using namespace fnexec;
using namespace fnexec::sandbox;

namespace {

std::string escape_probe() {
  const char* p = std::getenv("FNEXEC_ESCAPE_PROBE");
  return p ? p : (test::build_root() / "tests/integration/escape_probe").string();
}

void say(int fd, const std::string& key, const std::string& value) {
  std::string line = key + " " + value + "\n";
  (void)!::write(fd, line.data(), line.size());
}

std::string errno_name(int err) {
  const char* n = err == 0 ? "OK" : strerrorname_np(err);
  return n ? n : std::to_string(err);
}

std::string outcome(long rc) {
  return errno_name(rc < 0 ? errno : 0);
}

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t bit(int cap) {
  return uint64_t{1} << cap;
}

struct Outcome {
  int status = -1;   // wait status of the test child
  std::string text;  // everything it wrote, shown when a check fails
  std::map<std::string, std::string> values;
  const std::string& operator[](const std::string& key) const {
    static const std::string missing = "(missing)";
    auto it = values.find(key);
    return it == values.end() ? missing : it->second;
  }
  int exit_code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }
};

void fail_child(int fd, const char* what) {
  say(fd, "setup", std::string(what) + " " + errno_name(errno));
  _exit(120);
}

int wait_exit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Forks a child in a private mount namespace that applies p and runs body, which writes "key value"
// lines to the fd it is given and may exec. The test process is single-threaded, so the child may
// allocate freely (the launcher's child may not; apply_privileges itself does not).
Outcome run_applied(const Privileges& p, bool pid_namespace, const std::function<void(int)>& body) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int fd = write_end.get();
    ::fcntl(fd, F_SETFD, 0);  // escape_probe writes its lines to it after exec
    if (::unshare(CLONE_NEWNS | (pid_namespace ? CLONE_NEWPID : 0)) != 0) fail_child(fd, "unshare");
    // Anything that slipped through would stay in this namespace, away from the host's mounts.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) fail_child(fd, "make-rprivate");
    if (pid_namespace) {
      pid_t init = ::fork();
      if (init < 0) fail_child(fd, "fork init");
      if (init > 0) _exit(wait_exit(init));
      // pid 1: like the sandbox's init, it keeps its capabilities and only narrows the bounding set.
      const char* step = "";
      if (int err = drop_bounding_set(p, &step); err != 0) {
        say(fd, "setup", std::string(step) + " " + errno_name(err));
        _exit(121);
      }
      pid_t function = ::fork();
      if (function < 0) fail_child(fd, "fork function");
      if (function > 0) _exit(wait_exit(function));
    }
    const char* step = "-";
    int err = apply_privileges(p, &step);
    say(fd, "apply", errno_name(err) + " " + step);
    if (err != 0) _exit(122);
    body(fd);
    _exit(0);
  }
  write_end.reset();
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(read_end.get(), buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) text.append(buf, static_cast<size_t>(n));
  Outcome out;
  REQUIRE(::waitpid(pid, &out.status, 0) == pid);
  out.text = text;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    auto space = line.find(' ');
    out.values[line.substr(0, space)] = space == std::string::npos ? "" : line.substr(space + 1);
  }
  return out;
}

void report_status(int fd) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon), value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    if (key.starts_with("Cap") || key == "NoNewPrivs" || key == "Seccomp") say(fd, key, value);
  }
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  say(fd, "nofile", std::to_string(r.rlim_cur) + ":" + std::to_string(r.rlim_max));
  ::getrlimit(RLIMIT_CORE, &r);
  say(fd, "core", std::to_string(r.rlim_cur) + ":" + std::to_string(r.rlim_max));
  ::getrlimit(RLIMIT_NPROC, &r);
  say(fd, "nproc", std::to_string(r.rlim_cur) + ":" + std::to_string(r.rlim_max));
  say(fd, "uid", std::to_string(::getuid()) + ":" + std::to_string(::geteuid()));
  say(fd, "gid", std::to_string(::getgid()));
  say(fd, "groups", std::to_string(::getgroups(0, nullptr)));
}

// What an ordinary function does must keep working under the filter.
void report_ordinary_work(int fd) {
  pid_t child = ::fork();
  if (child == 0) _exit(7);
  say(fd, "fork", child < 0 ? errno_name(errno) : std::to_string(wait_exit(child)));

  // glibc's posix_spawn tries clone3 first and falls back to clone on ENOSYS.
  pid_t spawned = 0;
  char true_path[] = "/bin/true";
  char* argv[] = {true_path, nullptr};
  int rc = ::posix_spawn(&spawned, true_path, nullptr, nullptr, argv, environ);
  say(fd, "spawn_true", rc != 0 ? errno_name(rc) : std::to_string(wait_exit(spawned)));

  say(fd, "read_file", fs::read_file("/etc/passwd") ? "OK" : errno_name(errno));

  UniqueFd server(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  bool tcp = server && ::bind(server.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
             ::listen(server.get(), 1) == 0 &&
             ::getsockname(server.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  tcp = tcp && client && ::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  UniqueFd accepted(tcp ? ::accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC) : -1);
  tcp = tcp && accepted && ::write(client.get(), "x", 1) == 1;
  char byte = 0;
  tcp = tcp && ::read(accepted.get(), &byte, 1) == 1 && byte == 'x';
  say(fd, "tcp_loopback", tcp ? "OK" : errno_name(errno));

  say(fd, "personality_query", ::personality(0xffffffff) < 0 ? errno_name(errno) : "OK");
  say(fd, "personality_linux", outcome(::personality(PER_LINUX)));
  say(fd, "personality_norandom", outcome(::personality(ADDR_NO_RANDOMIZE)));
  say(fd, "personality_high", outcome(::syscall(SYS_personality, 0x80000000UL)));

  clone_args args{};
  args.exit_signal = SIGCHLD;
  long c3 = ::syscall(SYS_clone3, &args, sizeof args);
  if (c3 == 0) _exit(0);
  if (c3 > 0) wait_exit(static_cast<pid_t>(c3));
  say(fd, "clone3", outcome(c3));
  say(fd, "ptrace_traceme", outcome(::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr)));
  say(fd, "setuid0", outcome(::syscall(SYS_setresuid, 0, 0, 0)));
}

[[noreturn]] void exec_probe(int fd, std::vector<std::string> ops) {
  std::string probe = escape_probe();
  std::vector<char*> argv{probe.data()};
  for (auto& op : ops) argv.push_back(op.data());
  argv.push_back(nullptr);
  ::dup2(fd, STDOUT_FILENO);
  ::execv(probe.c_str(), argv.data());
  say(fd, "exec_probe", errno_name(errno));
  _exit(127);
}

const std::vector<std::string> kProbeAll = {"all"};
// Every probe whose denial this layer guarantees on its own. /proc/sysrq-trigger is writable by
// uid 0 until the launcher mounts it read-only or masks it, so it is probed separately.
const std::vector<std::string> kProbeRoot = {
    "mount",  "umount",      "unshare",        "clone_newuser", "setns",     "pivot_root", "chroot",
    "kcore",  "ptrace_pid1", "module",         "bpf",           "keyctl",    "raw_socket", "clock",
    "reboot", "kexec",       "open_by_handle", "userfaultfd",   "perf_event"};

void check_denied(const Outcome& o, const std::vector<std::string>& names) {
  for (const auto& name : names) {
    const std::string& r = o[name];
    CHECK_MESSAGE((r == "EPERM" || r == "EACCES" || r == "ENOSYS" || r == "ABSENT"), name << " " << r);
  }
}

std::string mountinfo() {
  return fs::read_file("/proc/self/mountinfo").value_or("?");
}

std::string hostname() {
  utsname u{};
  ::uname(&u);
  return u.nodename;
}

}  // namespace

TEST_CASE("privileges: default profile as root denies every escape and keeps ordinary work working") {
  REQUIRE(test::is_root());
  auto p = prepare_privileges({});
  REQUIRE(p);
  std::string mounts_before = mountinfo(), host_before = hostname();
  auto before = test::ResourceSnapshot::take();

  Outcome o = run_applied(*p, true, [](int fd) {
    report_status(fd);
    report_ordinary_work(fd);
    exec_probe(fd, kProbeRoot);
  });
  INFO("child output:\n", o.text);
  CHECK(o["apply"] == "OK -");
  CHECK(o.exit_code() == 0);  // escape_probe: every operation denied
  CHECK(o["NoNewPrivs"] == "1");
  CHECK(o["Seccomp"] == "2");
  CHECK(o["CapEff"] == hex(default_capabilities()));
  CHECK(o["CapPrm"] == hex(default_capabilities()));
  CHECK(o["CapInh"] == hex(default_capabilities()));
  CHECK(o["CapBnd"] == hex(default_capabilities()));
  CHECK(o["CapAmb"] == hex(0));
  CHECK(o["core"] == "0:0");
  CHECK(o["nofile"] == "1024:1024");
  CHECK(o["uid"] == "0:0");
  CHECK(o["groups"] == "0");

  CHECK(o["fork"] == "7");
  CHECK(o["spawn_true"] == "0");
  CHECK(o["read_file"] == "OK");
  CHECK(o["tcp_loopback"] == "OK");
  CHECK(o["personality_query"] == "OK");
  CHECK(o["personality_linux"] == "OK");
  CHECK(o["personality_norandom"] == "EPERM");
  CHECK(o["personality_high"] == "EPERM");
  CHECK(o["clone3"] == "ENOSYS");
  CHECK(o["ptrace_traceme"] == "EPERM");
  check_denied(o, kProbeRoot);
  // Refused by the filter, not just by missing capabilities: unprivileged users may do these.
  for (const char* name : {"unshare", "clone_newuser", "keyctl", "setns", "mount", "ptrace_pid1"})
    CHECK(o[name] == "EPERM");
  CHECK(o["chroot"] == "EPERM");      // no CAP_SYS_CHROOT
  CHECK(o["raw_socket"] == "EPERM");  // no CAP_NET_RAW

  CHECK(mountinfo() == mounts_before);
  CHECK(hostname() == host_before);
  auto after = test::ResourceSnapshot::take();
  CHECK(after.mounts == before.mounts);
  CHECK(after.fds == before.fds);
  CHECK(after.processes == before.processes);
}

TEST_CASE(
    "privileges: escape_probe reports what is not denied (sysrq for uid 0 without the launcher's masks)") {
  auto p = prepare_privileges({});
  REQUIRE(p);
  Outcome o = run_applied(*p, false, [](int fd) { exec_probe(fd, {"sysrq", "mount"}); });
  INFO("child output:\n", o.text);
  CHECK(o["mount"] == "EPERM");
  if (o["sysrq"] == "ABSENT") {
    MESSAGE("this kernel has no /proc/sysrq-trigger");
    CHECK(o.exit_code() == 0);
  } else {
    // Root owns the file and writing it needs no capability: only a read-only or masked /proc helps.
    CHECK(o["sysrq"] == "WRITABLE");
    CHECK(o.exit_code() == 1);
  }
  // And without any privileges applied, the probe sees the host as it is: nothing denied.
  PrivilegeSpec everything;
  everything.cap_add = {"ALL"};
  everything.seccomp = SeccompMode::unconfined;
  auto full = prepare_privileges(everything);
  REQUIRE(full);
  Outcome open = run_applied(*full, false, [](int fd) { exec_probe(fd, {"unshare", "chroot", "keyctl"}); });
  INFO("child output:\n", open.text);
  CHECK(open["unshare"] == "OK");
  CHECK(open["chroot"] == "OK");
  CHECK(open["keyctl"] == "OK");
  CHECK(open.exit_code() == 1);
}

TEST_CASE("privileges: default profile as uid 65534 has no capabilities and every escape is denied") {
  PrivilegeSpec spec;
  spec.uid = 65534;
  spec.gid = 65534;
  auto p = prepare_privileges(spec);
  REQUIRE(p);
  std::string mounts_before = mountinfo();
  Outcome o = run_applied(*p, true, [](int fd) {
    report_status(fd);
    report_ordinary_work(fd);
    exec_probe(fd, kProbeAll);
  });
  INFO("child output:\n", o.text);
  CHECK(o["apply"] == "OK -");
  CHECK(o.exit_code() == 0);
  CHECK(o["uid"] == "65534:65534");
  CHECK(o["gid"] == "65534");
  CHECK(o["groups"] == "0");
  CHECK(o["NoNewPrivs"] == "1");
  CHECK(o["Seccomp"] == "2");
  for (const char* set : {"CapEff", "CapPrm", "CapInh", "CapAmb"}) CHECK(o[set] == hex(0));
  CHECK(o["CapBnd"] == hex(default_capabilities()));
  CHECK(o["fork"] == "7");
  CHECK(o["spawn_true"] == "0");
  CHECK(o["tcp_loopback"] == "OK");
  CHECK(o["setuid0"] == "EPERM");
  check_denied(o, kProbeRoot);
  const std::string& sysrq = o["sysrq"];
  CHECK((sysrq == "EACCES" || sysrq == "ABSENT"));
  CHECK(mountinfo() == mounts_before);
}

TEST_CASE("privileges: --cap-add reaches a non-root user through the ambient set") {
  PrivilegeSpec spec;
  spec.uid = 65534;
  spec.gid = 65534;
  spec.supplementary_gids = {100, 65534};
  spec.cap_add = {"NET_RAW"};
  auto p = prepare_privileges(spec);
  REQUIRE(p);
  Outcome o = run_applied(*p, false, [](int fd) {
    report_status(fd);
    exec_probe(fd, {"raw_socket", "chroot"});
  });
  INFO("child output:\n", o.text);
  CHECK(o["apply"] == "OK -");
  for (const char* set : {"CapEff", "CapPrm", "CapInh", "CapAmb"}) CHECK(o[set] == hex(bit(CAP_NET_RAW)));
  CHECK(o["CapBnd"] == hex(default_capabilities() | bit(CAP_NET_RAW)));
  CHECK(o["groups"] == "2");
  CHECK(o["raw_socket"] == "OK");  // after exec, so through the ambient set
  CHECK(o["chroot"] == "EPERM");
}

TEST_CASE("privileges: --seccomp=unconfined loads no filter but keeps no_new_privs and the capability set") {
  PrivilegeSpec spec;
  spec.seccomp = SeccompMode::unconfined;
  auto p = prepare_privileges(spec);
  REQUIRE(p);
  Outcome o = run_applied(*p, false, [](int fd) {
    report_status(fd);
    exec_probe(fd, {"unshare", "keyctl", "chroot", "mount"});
  });
  INFO("child output:\n", o.text);
  CHECK(o["apply"] == "OK -");
  CHECK(o["Seccomp"] == "0");
  CHECK(o["NoNewPrivs"] == "1");
  CHECK(o["CapEff"] == hex(default_capabilities()));
  CHECK(o["unshare"] == "OK");  // a user namespace needs no capability: only the filter stops it
  CHECK(o["keyctl"] == "OK");
  CHECK(o["chroot"] == "EPERM");
  CHECK(o["mount"] == "EPERM");
}

TEST_CASE("privileges: --seccomp=FILE applies the profile's rules") {
  auto dir = fs::TempDir::make("/tmp", "fnexec-seccomp-");
  REQUIRE(dir);
  auto file = dir->path() / "profile.json";
  REQUIRE(fs::write_file_atomic(file, R"({
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [
      {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
      {"names": ["getppid"], "action": "SCMP_ACT_ERRNO"},
      {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
       "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_EQ"}]}
    ]})"));
  PrivilegeSpec spec;
  spec.seccomp = SeccompMode::file;
  spec.seccomp_file = file.string();
  auto p = prepare_privileges(spec);
  REQUIRE_MESSAGE(p, (p ? "" : p.error().message()));
  Outcome o = run_applied(*p, false, [](int fd) {
    report_status(fd);
    utsname u{};
    say(fd, "uname", outcome(::uname(&u)));
    say(fd, "getppid", outcome(::syscall(SYS_getppid)));
    UniqueFd v4(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    say(fd, "socket_inet", v4 ? "OK" : errno_name(errno));
    say(fd, "socket_inet6", outcome(::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0)));
    exec_probe(fd, {"unshare"});
  });
  INFO("child output:\n", o.text);
  CHECK(o["apply"] == "OK -");
  CHECK(o["Seccomp"] == "2");
  CHECK(o["uname"] == "ENOSYS");
  CHECK(o["getppid"] == "EPERM");
  CHECK(o["socket_inet"] == "OK");
  CHECK(o["socket_inet6"] == "EAFNOSUPPORT");
  CHECK(o["unshare"] == "OK");  // this profile does not deny it, and a user namespace needs no capability
}

#if defined(__x86_64__)
// An i386 getpid through int 0x80, in a child with the default SIGSEGV action: the wait status.
// Kernels without IA32 emulation (or that turn it off, as this project's CI guests do) answer
// int 0x80 with a general protection fault, SIGSEGV, before seccomp ever sees a syscall.
int int80_status(const Privileges* p) {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::signal(SIGSEGV, SIG_DFL);  // doctest's handler would report the child's crash as the test's
    const char* step = "-";
    if (p != nullptr && apply_privileges(*p, &step) != 0) _exit(122);
    long rc = 20;
    __asm__ volatile("int $0x80" : "+a"(rc) : : "memory");
    _exit(rc == ::getpid() ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return status;
}
#endif

TEST_CASE("privileges: the default filter kills a process that uses another ABI") {
  auto p = prepare_privileges({});
  REQUIRE(p);
  // x32 syscalls enter through the native syscall instruction with bit 30 set in the number, so
  // seccomp always sees them, whether or not the kernel was built with x32 support.
  Outcome o = run_applied(*p, false, [](int fd) {
    say(fd, "before", "ok");
#if defined(__x86_64__)
    ::signal(SIGSYS, SIG_DFL);
    long rc = ::syscall(0x40000000L | SYS_getpid);
    say(fd, "x32", outcome(rc));
#endif
  });
  INFO("child output:\n", o.text);
  CHECK(o["apply"] == "OK -");
#if defined(__x86_64__)
  CHECK(o["x32"] == "(missing)");
  REQUIRE(WIFSIGNALED(o.status));
  CHECK(WTERMSIG(o.status) == SIGSYS);

  // i386 through int 0x80: killed by the filter where the kernel delivers it at all.
  int unfiltered = int80_status(nullptr);
  if (WIFSIGNALED(unfiltered) && WTERMSIG(unfiltered) == SIGSEGV) {
    MESSAGE("this kernel does not deliver int 0x80 (no IA32 emulation): the i386 ABI is unreachable");
  } else {
    REQUIRE(WIFEXITED(unfiltered));
    REQUIRE(WEXITSTATUS(unfiltered) == 0);
    int filtered = int80_status(&*p);
    REQUIRE(WIFSIGNALED(filtered));
    CHECK(WTERMSIG(filtered) == SIGSYS);
  }
#endif
}

TEST_CASE("privileges: the default filter answers ENOSYS for syscalls it does not know, EPERM for dangerous ones") {
  auto p = prepare_privileges({});
  REQUIRE(p);
  Outcome o = run_applied(*p, false, [](int fd) {
    // Numbers no kernel has assigned yet stand for syscalls newer than the profile.
    say(fd, "nr_1000", outcome(::syscall(1000, 0, 0, 0)));
    say(fd, "nr_600", outcome(::syscall(600, 0, 0, 0)));
    say(fd, "lsm_list_modules", outcome(::syscall(461, nullptr, nullptr, 0)));  // 6.8, not allowed
    say(fd, "sysfs", outcome(::syscall(SYS_sysfs, 3)));                        // obsolete, not allowed
    say(fd, "mount", outcome(::syscall(SYS_mount, "none", "/mnt", "tmpfs", 0, nullptr)));
    say(fd, "unshare", outcome(::syscall(SYS_unshare, CLONE_NEWUSER)));
    say(fd, "bpf", outcome(::syscall(SYS_bpf, 0, nullptr, 0)));
    say(fd, "io_uring_setup", outcome(::syscall(SYS_io_uring_setup, 1, nullptr)));
    say(fd, "sethostname", outcome(::syscall(SYS_sethostname, "x", 1)));
    say(fd, "socket_vsock", outcome(::socket(40, SOCK_STREAM | SOCK_CLOEXEC, 0)));
    UniqueFd unix_socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    say(fd, "socket_unix", unix_socket ? "OK" : errno_name(errno));
    say(fd, "getpid", ::syscall(SYS_getpid) == ::getpid() ? "OK" : errno_name(errno));
#if defined(__x86_64__)
    say(fd, "fchmodat2", outcome(::syscall(452, AT_FDCWD, "/nonexistent-fnexec-test", 0755, 0)));
#endif
  });
  INFO("child output:\n", o.text);
  CHECK(o["apply"] == "OK -");
  CHECK(o["nr_1000"] == "ENOSYS");
  CHECK(o["nr_600"] == "ENOSYS");
  CHECK(o["lsm_list_modules"] == "ENOSYS");
  CHECK(o["sysfs"] == "ENOSYS");
  for (const char* name : {"mount", "unshare", "bpf", "io_uring_setup", "sethostname"})
    CHECK_MESSAGE(o[name] == "EPERM", name);
  CHECK(o["socket_vsock"] == "EAFNOSUPPORT");
  CHECK(o["socket_unix"] == "OK");
  CHECK(o["getpid"] == "OK");
#if defined(__x86_64__)
  // Allowed by number (newer than libseccomp's table): the kernel itself answers, not the filter.
  CHECK(o["fchmodat2"] == "ENOENT");
#endif
}

TEST_CASE("privileges: drop_bounding_set narrows only the bounding set") {
  auto p = prepare_privileges({});
  REQUIRE(p);
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  UniqueFd r(fds[0]), w(fds[1]);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const char* step = "-";
    int err = drop_bounding_set(*p, &step);
    say(w.get(), "drop", errno_name(err));
    report_status(w.get());
    _exit(0);
  }
  w.reset();
  std::string text(8192, '\0');
  size_t got = 0;
  for (ssize_t n; (n = ::read(r.get(), text.data() + got, text.size() - got)) > 0;)
    got += static_cast<size_t>(n);
  text.resize(got);
  CHECK(wait_exit(pid) == 0);
  auto own = fs::read_file("/proc/self/status");
  REQUIRE(own);
  auto field = [](const std::string& status, const std::string& key) {
    auto at = status.find("\n" + key + ":");
    if (at == std::string::npos) return std::string("?");
    at = status.find_first_not_of(" \t", at + key.size() + 2);
    return status.substr(at, status.find('\n', at) - at);
  };
  CHECK(text.find("drop OK\n") != std::string::npos);
  CHECK(text.find("CapBnd " + hex(default_capabilities()) + "\n") != std::string::npos);
  CHECK(text.find("CapEff " + field(*own, "CapEff") + "\n") != std::string::npos);
  CHECK(text.find("Seccomp 0\n") != std::string::npos);
}

TEST_CASE("privileges: --ulimit values reach the process") {
  PrivilegeSpec spec;
  spec.ulimits = {"nofile=100:200", "nproc=5000", "core=0:0"};
  auto p = prepare_privileges(spec);
  REQUIRE(p);
  Outcome o = run_applied(*p, false, [](int fd) { report_status(fd); });
  INFO("child output:\n", o.text);
  CHECK(o["apply"] == "OK -");
  CHECK(o["nofile"] == "100:200");
  CHECK(o["nproc"] == "5000:5000");
  CHECK(o["core"] == "0:0");
}

TEST_CASE("privileges: a failing step is named with its errno") {
  auto p = prepare_privileges({});
  REQUIRE(p);
  Privileges too_high = *p;
  too_high.rlimits.push_back({RLIMIT_NOFILE, 64, RLIM_INFINITY});  // needs CAP_SYS_RESOURCE: we lack it here
  Privileges empty_filter = *p;
  empty_filter.seccomp_filter.clear();
  for (auto [privileges, expected] :
       {std::pair{&too_high, "EPERM setrlimit"}, std::pair{&empty_filter, "EINVAL seccomp"}}) {
    Outcome o = run_applied(*privileges, false, [](int) {});
    INFO("child output:\n", o.text);
    if (privileges == &too_high && o["apply"] == "OK -") {
      MESSAGE("this process may raise rlimits (CAP_SYS_RESOURCE): the setrlimit failure cannot be provoked");
      continue;
    }
    CHECK(o["apply"] == expected);
    CHECK(o.exit_code() == 122);
  }
}
