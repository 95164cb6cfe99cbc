#include "bench/api.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "bench/peers.h"
#include "cgroup/cgroup.h"
#include "server/client.h"
#include "server/json.h"
#include "util/fs.h"
#include "util/unique_fd.h"

extern char** environ;

namespace fnexec::bench {

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;

// One keep-alive connection per invoking thread (slot), shared by every api target, plus one for
// registration and pool polling. The runner runs one entry's batch at a time, so no two targets
// want a slot at once; the lock per slot makes that a rule rather than an assumption, and costs an
// uncontended mutex.
class Connections {
 public:
  Connections(server::Endpoint endpoint, unsigned slots) : endpoint_(std::move(endpoint)) {
    for (unsigned i = 0; i < slots + 1; ++i) slots_.push_back(std::make_unique<Slot>());
  }

  // Opens every connection now, so no timed invocation pays for a connect.
  Result<> connect_all() {
    for (auto& s : slots_) FNEXEC_TRY(on(*s, [](server::Client&) { return server::HttpResponse{}; }));
    return {};
  }

  Result<server::HttpResponse> request(unsigned slot, std::string_view method, std::string_view target,
                                       std::string_view body, std::string_view content_type) {
    return on(*slots_[slot % (slots_.size() - 1)],
              [&](server::Client& c) { return c.request(method, target, body, content_type); });
  }
  // On the administrative connection.
  Result<server::HttpResponse> admin(std::string_view method, std::string_view target,
                                     std::string_view body = {}) {
    return on(*slots_.back(), [&](server::Client& c) { return c.request(method, target, body); });
  }
  Result<server::HttpResponse> admin_upload(std::string_view target, const stdfs::path& file) {
    return on(*slots_.back(), [&](server::Client& c) { return c.upload(target, file.string()); });
  }

  const server::Endpoint& endpoint() const { return endpoint_; }

 private:
  struct Slot {
    std::mutex mu;
    std::optional<server::Client> client;
  };
  // Runs call on the slot's connection, opened first if it is not yet (the client itself reconnects).
  template <class Call>
  Result<server::HttpResponse> on(Slot& s, Call&& call) {
    std::lock_guard lock(s.mu);
    if (!s.client) s.client.emplace(FNEXEC_TRY(server::Client::connect(endpoint_)));
    return call(*s.client);
  }

  server::Endpoint endpoint_;
  std::vector<std::unique_ptr<Slot>> slots_;  // the last one is the administrative connection
};

namespace {

Error http_failure(const server::HttpResponse& r, std::string what, std::string on) {
  return fail(ErrorKind::internal, std::move(what), std::move(on),
              fmt::format("HTTP {}: {}", r.status, server::error_message(r)))
      .error();
}

// The pool's parked sandboxes, from GET /v1/functions/{name}.
Result<uint64_t> parked(Connections& c, const std::string& function) {
  auto r = FNEXEC_TRY(c.admin("GET", "/v1/functions/" + function));
  if (r.status != 200) return std::unexpected(http_failure(r, "read the pool of", function));
  simdjson::dom::parser parser;
  simdjson::padded_string padded(r.body);
  simdjson::dom::element doc;
  uint64_t warm = 0;
  if (parser.parse(padded).get(doc) || doc["pool"]["warm"].get(warm))
    return fail(ErrorKind::internal, "read the pool of", function, "no pool.warm in the reply: " + r.body);
  std::string_view error;
  if (!doc["pool"]["error"].get(error))
    return fail(ErrorKind::unavailable, "fill the pool of", function, std::string(error));
  return warm;
}

// Polls until the pool holds min_warm parked sandboxes; false when the time ran out first.
Result<bool> wait_for_pool(Connections& c, const std::string& function, uint64_t min_warm,
                           std::chrono::milliseconds limit) {
  auto deadline = Clock::now() + limit;
  for (;;) {
    if (FNEXEC_TRY(parked(c, function)) >= min_warm) return true;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

class ApiTarget final : public Target {
 public:
  ApiTarget(std::shared_ptr<Connections> connections, std::string function, bool warm, uint32_t min_warm)
      : connections_(std::move(connections)),
        function_(std::move(function)),
        invoke_target_("/v1/functions/" + function_ + "/invoke"),
        warm_(warm),
        min_warm_(min_warm) {}

  Result<> invoke(std::string_view event, std::string& output, unsigned slot) override {
    output.clear();
    auto r =
        FNEXEC_TRY(connections_->request(slot, "POST", invoke_target_, event, "application/octet-stream"));
    if (r.status != 200) return std::unexpected(http_failure(r, "invoke over the API", function_));
    if (r.header("fnexec-start") != (warm_ ? "warm" : "cold")) ++unexpected_;
    output = std::move(r.body);
    return {};
  }

  void before_batch() override {
    // Each batch starts from a full pool, as the in-process warm target's does.
    if (warm_) (void)wait_for_pool(*connections_, function_, min_warm_, std::chrono::seconds(30));
  }

  std::string remarks() const override {
    uint64_t n = unexpected_;
    if (!n) return {};
    return warm_ ? fmt::format("{} invocations missed the daemon's pool and started cold", n)
                 : fmt::format("{} invocations were served warm although the pool keeps none parked", n);
  }

 private:
  std::shared_ptr<Connections> connections_;
  std::string function_, invoke_target_;
  bool warm_;
  uint32_t min_warm_;
  std::atomic<uint64_t> unexpected_{0};
};

std::string describe_exit(int status) {
  return WIFEXITED(status) ? fmt::format("exited with status {}", WEXITSTATUS(status))
                           : fmt::format("was killed by signal {}", WTERMSIG(status));
}

// The last lines of the daemon's log, for an error message.
std::string log_tail(const stdfs::path& log) {
  auto text = fs::read_file(log);
  if (!text || text->empty()) return "(its log is empty)";
  std::string t = *text;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  size_t start = t.size() > 1500 ? t.size() - 1500 : 0;
  if (auto nl = t.find('\n', start); start > 0 && nl != std::string::npos) start = nl + 1;
  return t.substr(start);
}

// Waits up to limit for pid to exit and reaps it; false when it is still running.
bool reap_within(pid_t pid, std::chrono::milliseconds limit) {
  auto deadline = Clock::now() + limit;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

Result<std::unique_ptr<ApiServer>> ApiServer::start(const ApiOptions& options) {
  // Built before anything is made, so every return below leaves the destructor to clean up.
  std::unique_ptr<ApiServer> self(new ApiServer(options));
  server::Endpoint endpoint;
  if (options.socket) {
    endpoint.socket = *options.socket;
  } else {
    FNEXEC_TRY(self->launch_own_daemon());
    endpoint.socket = (self->dir_ / "fnexec.sock").string();
  }
  self->connections_ = std::make_shared<Connections>(endpoint, options.max_concurrency);
  FNEXEC_TRY(self->connections_->connect_all());
  FNEXEC_TRY(self->provide_image());
  return self;
}

Result<> ApiServer::launch_own_daemon() {
  std::string templ = (options_.work / "api-XXXXXX").string();
  if (!::mkdtemp(templ.data())) return fail_errno("create the daemon's directory in", options_.work.string());
  dir_ = templ;
  auto socket = dir_ / "fnexec.sock", config = dir_ / "fnexec.conf", log = dir_ / "serve.log";

  // A prefix of its own, per bench process: the daemon removes every sandbox cgroup under its
  // prefix at start, and must never meet the bench's own pools (prefix "fnexec") or another bench's.
  std::string prefix = fmt::format("fnexec-bench-api-{}", ::getpid());
  unsigned c = options_.max_concurrency;
  // default_userns off: the series measures the API path against in-process pools, which run on
  // host ids; the per-function user namespace's cost is fnexec-bench-pool --userns.
  std::string conf = fmt::format(
      "cgroup_prefix = {}\nlog_level = warn\nshutdown_grace = 2s\ninvocation_workers = {}\n"
      "max_sandboxes = {}\ndefault_userns = false\n",
      prefix, std::max(64u, 2 * c), std::max(256u, 8 * (c + 1) + 16));
  FNEXEC_TRY(fs::write_file_atomic(config, conf));

  std::vector<std::string> argv{"fnexec",   "serve",         "--config",    config.string(),
                                "--socket", socket.string(), "--state-dir", (dir_ / "state").string()};
  StartOptions start;
  if (!options_.cgroups) {
    argv.insert(argv.end(), {"--cgroups", "disabled"});
  } else {
    // sandbox_parents() are OWN/<the bench's prefix>/sandboxes, one per hierarchy.
    for (const auto& p : options_.cgroups->sandbox_parents())
      cgroup_trees_.push_back(stdfs::path(p).parent_path().parent_path() / prefix);
    if (options_.cgroups->mode() == cgroup::Mode::v2) {
      // On v2 the bench sits in OWN/fnexec/supervisor, and a child there would reuse that layout.
      // A supervisor leaf with sandboxes/ beside it under the new prefix is the layout the daemon
      // then takes as its own; its detection wants the controllers offered in that leaf already.
      auto tree = cgroup_trees_.front();
      for (const auto& d : {tree, tree / "supervisor", tree / "sandboxes"})
        if (::mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) return fail_errno("create cgroup", d.string());
      FNEXEC_TRY(fs::write_file(tree / "cgroup.subtree_control", "+memory +cpu +pids"));
      start.join_cgroup = (tree / "supervisor").string();
    }
  }
  // Not the bench's service manager's daemon: no readiness messages to it.
  for (char** e = environ; *e; ++e)
    if (!std::string_view(*e).starts_with("NOTIFY_SOCKET=")) start.env.emplace_back(*e);
  if (start.env.empty()) start.env.emplace_back("PATH=/usr/sbin:/usr/bin:/sbin:/bin");
  // A bench that dies without its destructors (SIGKILL) still stops its daemon.
  start.parent_death_signal = SIGTERM;

  UniqueFd null_in(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  UniqueFd null_out(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  UniqueFd log_fd(::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!null_in || !null_out) return fail_errno("open /dev/null");
  if (!log_fd) return fail_errno("create", log.string());
  Command cmd{options_.fnexec_binary.string(), argv, -1};
  pid_ = FNEXEC_TRY(start_command(cmd, null_in.get(), null_out.get(), log_fd.get(), start));
  return wait_until_healthy(socket, log);
}

Result<> ApiServer::wait_until_healthy(const stdfs::path& socket, const stdfs::path& log) {
  auto deadline = Clock::now() + std::chrono::seconds(60);
  for (;;) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return fail(ErrorKind::unavailable, "start fnexec serve for --via-api", socket.string(),
                  fmt::format("it {}: {}", describe_exit(status), log_tail(log)));
    }
    if (auto c = server::Client::connect({socket.string(), {}, {}})) {
      auto r = c->request("GET", "/healthz");
      if (r && r->status == 200) return {};
    }
    if (Clock::now() > deadline)
      return fail(ErrorKind::unavailable, "start fnexec serve for --via-api", socket.string(),
                  "no answer on /healthz within 60 s: " + log_tail(log));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Result<> ApiServer::provide_image() {
  auto& c = *connections_;
  if (options_.image) {
    image_ref_ = *options_.image;
    return {};
  }
  // The archive is reproducible (mkimage --mtime 0): a daemon that has its digest needs no upload.
  auto list = FNEXEC_TRY(c.admin("GET", "/v1/images"));
  if (list.status != 200)
    return std::unexpected(http_failure(list, "list the images of", c.endpoint().socket));
  if (list.body.find('"' + options_.archive_digest + '"') != std::string::npos) {
    image_ref_ = options_.archive_digest;
    return {};
  }
  std::string encoded_name = options_.archive_name;
  if (auto colon = encoded_name.find(':'); colon != std::string::npos) encoded_name.replace(colon, 1, "%3A");
  auto r = FNEXEC_TRY(c.admin_upload("/v1/images?name=" + encoded_name, options_.archive));
  if (r.status != 201)
    return std::unexpected(http_failure(r, "upload the bench image to", c.endpoint().socket));
  simdjson::dom::parser parser;
  simdjson::padded_string padded(r.body);
  std::string_view digest;
  if (parser.parse(padded)["digest"].get(digest))
    return fail(ErrorKind::internal, "upload the bench image to", c.endpoint().socket,
                "no digest in the reply: " + r.body);
  image_ref_ = std::string(digest);
  if (options_.socket)
    notes_.push_back(fmt::format(
        "the bench image {} ({}) was imported into the daemon at {} and stays in its store "
        "(the API has no image removal; `fnexec image rm {}` with that daemon's --root)",
        options_.archive_name, image_ref_, *options_.socket, options_.archive_name));
  return {};
}

Result<std::shared_ptr<Target>> ApiServer::add_function(const std::string& function,
                                                        const std::vector<std::string>& argv, bool warm,
                                                        pool::Lifecycle lifecycle, uint32_t min_warm) {
  std::string name = (warm ? "bench-api-" : "bench-api-cold-") + function;
  if (lifecycle != pool::Lifecycle::oneshot) name += "-" + std::string(pool::to_string(lifecycle));
  // Pool sizes as the in-process warm target's: more parked than the highest concurrency, and a
  // max_concurrency no level reaches (above it the daemon answers 429).
  min_warm = warm ? std::max(min_warm, options_.max_concurrency + 1) : 0;
  uint32_t max_concurrency = std::max({16u, 2 * (options_.max_concurrency + 1), min_warm});
  server::JsonWriter w;
  w.begin_object().field("image", image_ref_).field("entrypoint", argv);
  w.field("lifecycle", pool::to_string(lifecycle));
  w.field("cmd", std::vector<std::string>{}).field("min_warm", min_warm);
  w.field("max_concurrency", max_concurrency).field("timeout_ms", uint64_t{30000}).end_object();
  auto r = FNEXEC_TRY(connections_->admin("PUT", "/v1/functions/" + name, w.str()));
  if (r.status != 200 && r.status != 201) return std::unexpected(http_failure(r, "register function", name));
  registered_.push_back(name);
  if (r.status == 200)
    notes_.push_back(
        fmt::format("function {} existed on the daemon before; the bench replaced and removed it", name));
  if (warm && !FNEXEC_TRY(wait_for_pool(*connections_, name, min_warm, std::chrono::seconds(120))))
    return fail(ErrorKind::unavailable, "fill the pool of", name,
                fmt::format("fewer than {} sandboxes parked after 120 s", min_warm));
  return std::make_shared<ApiTarget>(connections_, name, warm, min_warm);
}

void ApiServer::stop_own_daemon() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    // shutdown_grace is 2 s; the rest is for destroying the parked sandboxes.
    if (!reap_within(pid_, std::chrono::seconds(30))) {
      spdlog::warn("fnexec serve pid={} still running 30 s after SIGTERM; killing it", pid_);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }
  for (const auto& tree : cgroup_trees_)
    if (auto r = cgroup::kill_and_remove_tree(tree); !r)
      spdlog::warn("cannot remove the bench daemon's cgroups: {}", r.error().message());
  if (!dir_.empty()) {
    std::error_code ec;
    stdfs::remove_all(dir_, ec);
    if (ec) spdlog::warn("cannot remove {}: {}", dir_.string(), ec.message());
  }
}

ApiServer::~ApiServer() {
  if (options_.socket && connections_) {
    for (const auto& name : registered_) {
      auto r = connections_->admin("DELETE", "/v1/functions/" + name);
      if (!r || (r->status != 204 && r->status != 404))
        spdlog::warn("cannot remove function {} from the daemon at {}: {}", name, *options_.socket,
                     r ? server::error_message(*r) : r.error().message());
    }
  }
  connections_.reset();
  stop_own_daemon();
}

}  // namespace fnexec::bench
