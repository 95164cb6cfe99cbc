// Test fixture of the serve suites: a real `fnexec serve` process on a tmpfs, readiness from
// sd_notify on a socket the test owns, curl and the CLI as clients.
#pragma once

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "server/json.h"
#include "support/fixtures.h"
#include "support/proc.h"
#include "util/unique_fd.h"

extern char** environ;

namespace fnexec::test::serve {

namespace stdfs = std::filesystem;

inline std::string slurp(const stdfs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_file(const stdfs::path& p, const std::string& data, mode_t mode = 0644) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << data;
  ::chmod(p.c_str(), mode);
}

// A datagram socket standing in for systemd's NOTIFY_SOCKET.
class NotifySocket {
 public:
  explicit NotifySocket(stdfs::path path) : path_(std::move(path)) {
    fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  // Waits for a message containing `want`; returns every message seen until then. Gives up after
  // a minute so a broken daemon fails the test instead of hanging it.
  std::string wait_for(const std::string& want) {
    std::string seen;
    for (int i = 0; i < 600; ++i) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, 100) == 1) {
        char buf[4096];
        ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
        if (n > 0) {
          std::string msg(buf, static_cast<size_t>(n));
          seen += msg + "\n";
          if (msg.find(want) != std::string::npos) return seen;
        }
      }
    }
    FAIL("no " << want << " on NOTIFY_SOCKET; got: " << seen);
    return seen;
  }
  const stdfs::path& path() const { return path_; }

 private:
  stdfs::path path_;
  UniqueFd fd_;
};

struct Http {
  int status = 0;
  std::string body;
  std::string headers;
  std::string header(const std::string& name) const {
    std::regex re("(^|\\n)" + name + ": ([^\\r\\n]*)", std::regex::icase);
    std::smatch m;
    return std::regex_search(headers, m, re) ? std::string(m[2]) : std::string();
  }
};

// The daemon under test. State and socket live on a tmpfs; each daemon has its own cgroup prefix,
// so its start-up cleanup never touches another test's (or another fnexec's) sandboxes.
class Daemon {
 public:
  explicit Daemon(std::string config_extra = "") : config_extra_(std::move(config_extra)) {
    static std::atomic<int> n{0};
    int k = n++;
    prefix_ = "fnexec-test-serve-" + std::to_string(::getpid()) + "-" + std::to_string(k);
    // Its own slice of ids (64 functions of 65536), so concurrent test daemons never share host ids.
    subid_first_ = (uint64_t{1} << 29) + ((static_cast<uint64_t>(::getpid()) * 16 + k) % 512) * (uint64_t{64} << 16);
  }
  ~Daemon() {
    stop(SIGKILL);
    test::remove_own_cgroup_tree(prefix_);
  }

  stdfs::path socket() const { return scratch_ / "fnexec.sock"; }
  stdfs::path state_dir() const { return scratch_ / "state"; }
  stdfs::path config() const { return scratch_ / "fnexec.conf"; }
  // The test's own subordinate-id files (fnexec.conf subuid_file, subgid_file): functions get
  // per-function user namespaces as on a host with a fnexec line in /etc/subuid, /etc/subgid.
  uint64_t subid_first() const { return subid_first_; }
  std::string subid_config() const {
    std::string line = "fnexec-test:" + std::to_string(subid_first_) + ":" + std::to_string(uint64_t{64} << 16) + "\n";
    write_file(scratch_ / "subuid", line);
    write_file(scratch_ / "subgid", line);
    return "subid_user = fnexec-test\nsubuid_file = " + (scratch_ / "subuid").string() +
           "\nsubgid_file = " + (scratch_ / "subgid").string() + "\n";
  }
  const test::ScratchTmpfs& scratch() const { return scratch_; }
  std::string log() const { return slurp(scratch_ / "daemon.log"); }
  pid_t pid() const { return pid_; }

  // Starts `fnexec serve` and waits for READY=1. extra: more flags.
  void start(const std::vector<std::string>& extra = {}) {
    import_test_images();
    // 0600: a config holding access_key secrets must not be readable by others (fnexec.conf(5)).
    write_file(config(), "cgroup_prefix = " + prefix_ + "\nlog_level = debug\n" + subid_config() + config_extra_, 0600);
    pid_ = spawn(extra);
    REQUIRE(pid_ > 0);
    notify_.wait_for("READY=1");
  }
  // Starts it and returns its exit status and log, for daemons that must refuse to start.
  std::pair<int, std::string> start_expecting_failure(const std::vector<std::string>& extra) {
    write_file(config(), "cgroup_prefix = " + prefix_ + "\n" + subid_config() + config_extra_);
    pid_t pid = spawn(extra);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), log()};
  }
  // Sends sig and reaps; returns the exit status (128+N for a signal).
  int stop(int sig = SIGTERM) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  void signal(int sig) { ::kill(pid_, sig); }
  NotifySocket& notify() { return notify_; }
  // Runs the daemon through this command (absolute path first), e.g. nsenter into a network
  // namespace; it must exec fnexec in the same process, so that pid() and stop() reach the daemon.
  std::vector<std::string> launcher_prefix;

  Http curl(const std::string& method, const std::string& path, const std::optional<std::string>& body = {},
            std::vector<std::string> extra = {}) const {
    static std::atomic<int> n{0};
    int k = n++;
    auto out = scratch_ / ("curl-body-" + std::to_string(k));
    auto hdr = scratch_ / ("curl-headers-" + std::to_string(k));
    std::vector<std::string> argv = {"curl", "-sS", "-X", method, "-o", out, "-D", hdr, "-w", "%{http_code}"};
    if (std::find(extra.begin(), extra.end(), "--tcp") == extra.end()) {
      argv.insert(argv.end(), {"--unix-socket", socket().string()});
      argv.push_back("http://localhost" + path);
    } else {
      extra.erase(std::find(extra.begin(), extra.end(), "--tcp"));
    }
    test::ProcOptions o;
    if (body) {
      argv.insert(argv.end(), {"--data-binary", "@-", "-H", "Content-Type: application/json"});
      o.stdin_data = *body;
      if (body->empty()) argv.back() = "Content-Length: 0";
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = test::run(argv, o);
    INFO("curl " << method << " " << path << ": " << r.err);
    Http h;
    h.status = std::atoi(r.out.c_str());
    h.body = slurp(out);
    h.headers = slurp(hdr);
    std::error_code ec;
    stdfs::remove(out, ec);
    stdfs::remove(hdr, ec);
    return h;
  }
  test::ProcResult cli(std::vector<std::string> args, const std::string& stdin_data = "") const {
    args.insert(args.end(), {"--socket", socket().string()});
    test::ProcOptions o;
    o.stdin_data = stdin_data;
    return test::fnexec(args, o);
  }

 private:
  // The daemon resolves a function's image when it is created, so the images the tests name
  // (hello:latest, busybox:1: busybox-static from mkimage) are in the store before the first start.
  void import_test_images() {
    if (stdfs::exists(state_dir() / "refs.json")) return;
    static const test::ScratchTmpfs images("64m");
    static const stdfs::path archive = [] {
      auto path = images / "busybox.tar";
      auto mk = test::run({test::rootfs_tool("mkimage").string(), "--busybox", "--cmd", "cat", "--oci-archive", path.string()});
      REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
      return path;
    }();
    for (const char* name : {"hello:latest", "busybox:1"}) {
      auto r = test::fnexec({"--root", state_dir().string(), "image", "import", archive.string(), "--name", name});
      REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    }
  }

  pid_t spawn(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {
        test::fnexec_bin().string(), "serve",       "--config",          config().string(), "--socket",
        socket().string(),           "--state-dir", state_dir().string()};
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.begin(), launcher_prefix.begin(), launcher_prefix.end());
    std::vector<std::string> env_store;
    for (char** e = environ; *e; ++e)
      if (!std::string_view(*e).starts_with("NOTIFY_SOCKET=")) env_store.emplace_back(*e);
    env_store.push_back("NOTIFY_SOCKET=" + notify_.path().string());
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env_store) envp.push_back(e.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    auto log_path = (scratch_ / "daemon.log").string();
    posix_spawn_file_actions_addopen(&fa, 2, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    REQUIRE(rc == 0);
    return pid;
  }

  test::ScratchTmpfs scratch_{"512m"};
  std::string config_extra_;
  std::string prefix_;
  uint64_t subid_first_ = 0;
  NotifySocket notify_{scratch_ / "notify.sock"};
  pid_t pid_ = -1;
};

inline bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

// Each line is a comment or `name{labels} value` of a family declared by a TYPE line.
inline std::map<std::string, double> parse_metrics(const std::string& text) {
  static const std::regex sample(
      R"re(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$)re");
  std::set<std::string> families;
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("# TYPE ")) {
      families.insert(line.substr(7, line.find(' ', 7) - 7));
      continue;
    }
    if (line.starts_with("# HELP ")) continue;
    std::smatch m;
    REQUIRE_MESSAGE(std::regex_match(line, m, sample), "not Prometheus text: " << line);
    std::string name = m[1], family = name;
    for (std::string suffix : {"_bucket", "_sum", "_count"})
      if (!families.contains(family) && family.ends_with(suffix))
        family.resize(family.size() - suffix.size());
    CHECK_MESSAGE(families.contains(family), "sample before its TYPE: " << line);
    out[name + std::string(m[2])] = m[3] == "+Inf" ? INFINITY : std::stod(m[3]);
  }
  return out;
}

// A raw connection to the daemon's socket, for requests curl and the CLI will not send.
inline UniqueFd connect_unix(const stdfs::path& socket) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

// Reads until EOF; fails the test (instead of hanging) after a minute without data.
inline std::string read_to_eof(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    REQUIRE_MESSAGE(::poll(&p, 1, 60000) == 1, "no reply within a minute; got: " << out);
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

inline uint16_t free_tcp_port() {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

// Polls until pred() holds; fails the test (instead of hanging) after a minute.
template <class Pred>
inline void wait_until(Pred pred, const char* what) {
  for (int i = 0; i < 1200; ++i) {
    if (pred()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("gave up waiting for " << std::string(what));  // doctest prints a const char* as a pointer
}

// A daemon with a busybox image imported through the API.
struct InvokeDaemon : Daemon {
  explicit InvokeDaemon(std::string extra = "") : Daemon(std::move(extra)) {
    start();
    auto archive = scratch() / "busybox.tar";
    auto mk = test::run({test::rootfs_tool("mkimage").string(), "--busybox", "--ref", "bb:1", "--oci-archive",
                         archive.string()});
    REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    auto up = curl("POST", "/v1/images?name=bb%3A1", std::nullopt, {"--data-binary", "@" + archive.string()});
    REQUIRE_MESSAGE(up.status == 201, up.body);
  }
  void create(const std::string& name, const std::string& script, const std::string& fields = "") {
    std::string body = R"({"image":"bb:1","cmd":["/bin/sh","-c",)" + server::json_string(script) + "]" +
                       (fields.empty() ? "" : "," + fields) + "}";
    auto r = curl("PUT", "/v1/functions/" + name, body);
    REQUIRE_MESSAGE(r.status == 201, r.body);
  }
  uint64_t warm(const std::string& name) {
    auto r = curl("GET", "/v1/functions/" + name);
    std::smatch m;
    static const std::regex re(R"re("pool":\{"warm":(\d+))re");
    return std::regex_search(r.body, m, re) ? std::stoull(m[1]) : 0;
  }
  Http invoke(const std::string& name, const std::string& event, const std::string& query = "") {
    return curl("POST", "/v1/functions/" + name + "/invoke" + query, event);
  }
};

inline const std::string kHello =
    R"({"image":"hello:latest","memory_mb":64,"min_warm":0,"max_concurrency":2})";

}  // namespace fnexec::test::serve
