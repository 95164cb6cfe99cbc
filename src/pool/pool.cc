// Warm pools: one launcher thread builds every sandbox (it outlives them all, so PR_SET_PDEATHSIG
// only fires when the supervisor dies) and parks it; invoke() takes a parked one, runs it through
// invoke::run_invocation and hands the remains to a cleanup thread, off the caller's path.
// fresh/reuse: the launcher also sends go and waits (in the same poll) for the function's READY;
// invoke() then runs one event through the slot's invoke::FramedSession, and a reuse slot goes back
// to the pool until it is retired.
#include "pool/pool.h"

#include <linux/capability.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "image/store.h"
#include "invoke/session.h"
#include "lambda/runtime_api.h"
#include "lambda/session.h"
#include "net/attachment.h"
#include "sandbox/capabilities.h"
#include "sandbox/image_config.h"
#include "sandbox/launcher.h"
#include "sandbox/netns_pool.h"
#include "sandbox/seccomp.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/unique_fd.h"

namespace fnexec::pool {

std::string_view to_string(StartKind k) {
  return k == StartKind::warm ? "warm" : "cold";
}

void set_protocol_env(std::vector<std::string>& env, Lifecycle lifecycle, std::string_view function) {
  sandbox::set_env(env, "FNEXEC_PROTOCOL=" + std::string(invoke::frames::kProtocol));
  sandbox::set_env(env, "FNEXEC_LIFECYCLE=" + std::string(to_string(lifecycle)));
  sandbox::set_env(env, "FNEXEC_FUNCTION_NAME=" + std::string(function));
}

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Sandboxes being set up at once by the launcher: enough to keep both cores busy while children
// mount, few enough that a cold start does not queue behind a long refill.
constexpr size_t kMaxStarting = 4;
constexpr auto kReadyTimeout = 30s;
constexpr auto kBackoffFirst = 100ms;
constexpr auto kBackoffMax = 30s;
// Refills and cleanup run this much nicer than the daemon: on a small machine they then yield the
// CPU to invocations instead of adding their setup to the latency of the invocation beside them.
constexpr int kBackgroundNice = 10;

int own_nice() {
  errno = 0;
  int n = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
  return errno ? 0 : n;
}

// Nice of the calling thread only (Linux: PRIO_PROCESS with a thread id). Raising nice always
// works; lowering it back needs CAP_SYS_NICE, and without it the thread simply stays nicer.
void set_thread_nice(int nice) {
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), nice);
}

// Every thread of the function (the child of the sandbox's PID 1) to nice: the init of a refilled
// fresh/reuse function ran at the launcher's low priority, its events run at the daemon's.
void renice_function(pid_t pid1, int nice) {
  auto children = fs::read_file("/proc/" + std::to_string(pid1) + "/task/" + std::to_string(pid1) + "/children");
  if (!children) return;
  pid_t function = 0;
  std::from_chars(children->data(), children->data() + children->size(), function);
  if (function <= 0) return;
  std::error_code ec;
  for (auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(function) + "/task", ec)) {
    id_t tid = 0;
    auto name = task.path().filename().string();
    std::from_chars(name.data(), name.data() + name.size(), tid);
    if (tid > 0) (void)::setpriority(PRIO_PROCESS, tid, nice);
  }
}

// One sandbox and its cgroup. Members are destroyed in reverse: the sandbox is killed and reaped
// before its cgroup is emptied and removed.
struct Slot {
  // Network: first, so they are released last, after the sandbox is reaped. A sandbox has one or
  // neither: a recycled namespace (network none) or its own namespace with a bridge attachment.
  sandbox::NetnsLease netns;
  std::optional<net::Attachment> network;
  net::TrafficCounters traffic_seen;  // reuse: the counters after the previous event
  // Held while the sandbox lives (first member: released after it is reaped): its id range is busy.
  std::shared_ptr<const void> id_range_hold;
  std::unique_ptr<cgroup::SandboxCgroup> cgroup;
  std::optional<sandbox::Sandbox> sandbox;
  std::unique_ptr<invoke::EventSession> session;  // fresh/reuse, from go on
  uint64_t generation = 0;
  std::string id;                   // also its cgroup's name
  uint64_t events = 0;              // served so far
  std::optional<uint64_t> init_us;  // reported with its first event
  Clock::time_point idle_since{};
};
using SlotPtr = std::unique_ptr<Slot>;

// What a cold start hands its caller: a ready slot, or why the function's init failed.
struct Launched {
  SlotPtr slot;
  std::string sandbox_id;
  std::optional<invoke::InitOutcome> init_failure;
};

struct Function {
  FunctionSpec spec;
  std::shared_ptr<const sandbox::SandboxSpec> sandbox_spec;  // template; cgroup set per launch
  lambda::FunctionFacts lambda_facts;                        // protocol lambda: what its runtime is told
  std::shared_ptr<const net::BridgeConfig> bridge;           // network bridge, else null
  std::string shape;        // everything that shapes a sandbox; a change drains the pool
  uint64_t generation = 0;  // bumped with shape; older sandboxes are never handed out
  std::deque<SlotPtr> warm;
  uint32_t busy = 0, starting = 0;
  Clock::time_point last_used = Clock::now();
  Clock::time_point retry_after{};
  Clock::duration backoff{};
  uint64_t setup_failures = 0, init_failures = 0;
  bool removed = false;
};

struct ColdRequest {
  std::shared_ptr<Function> function;
  std::promise<Result<Launched>> slot;
};

struct Starting {
  std::shared_ptr<Function> function;
  SlotPtr slot;
  Clock::time_point since;
  std::shared_ptr<ColdRequest> request;  // null for a refill
  // fresh/reuse: go was sent and the function runs its init until READY or init_deadline.
  bool initializing = false;
  Clock::time_point init_deadline{};
  std::chrono::milliseconds init_timeout{};
  invoke::SessionLimits limits;
  Lifecycle lifecycle = Lifecycle::oneshot;
  Protocol protocol = Protocol::fnexec;
  lambda::FunctionFacts lambda_facts;  // protocol lambda
};

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (auto& s : v) out += s + '\0';
  return out;
}

std::string isolation_shape(const sandbox::SandboxSpec& s) {
  std::string out = s.userns == sandbox::UserNamespace::automatic
                        ? std::to_string(s.id_range.host_first) + ':' + std::to_string(s.id_range.count)
                        : std::string("host");
  for (const auto& v : s.volumes) out += '\n' + v.source.string() + '\0' + v.target + (v.read_only ? ":ro" : ":rw");
  for (const auto& d : s.devices)
    out += '\n' + d.path + '\0' + std::to_string(d.mode) + ':' + std::to_string(d.rdev) + ':' + d.access;
  return out;
}

// The key of everything that makes two sandboxes interchangeable.
std::string shape_of(const std::string& digest, const sandbox::SandboxSpec& s, const FunctionSpec& f) {
  auto opt = [](const auto& v) { return v ? std::to_string(*v) : std::string("-"); };
  return digest + '\n' + join(s.argv) + '\n' + join(s.env) + '\n' + s.cwd + '\n' +
         std::to_string(s.privileges.uid) + ':' + std::to_string(s.privileges.gid) + '\n' +
         opt(f.limits.memory_bytes) + ' ' + opt(f.limits.cpus) + ' ' + opt(f.limits.pids) + '\n' +
         std::to_string(s.read_only) + ' ' + std::to_string(s.privileges.bounding) + ' ' +
         std::to_string(s.privileges.effective) + ' ' + opt(f.nofile) + '\n' + f.seccomp_profile + '\n' +
         std::to_string(static_cast<int>(s.network)) + '\n' + std::string(to_string(f.lifecycle)) + ' ' +
         std::string(to_string(f.protocol)) + '\n' + isolation_shape(s);
}

// Network mode bridge: what makes two sandboxes' networks interchangeable.
std::string network_shape(const FunctionSpec::Network& n) {
  return n.mode + '\n' + join(n.dns) + '\n' + join(n.add_hosts) + '\n' + join(n.egress_allow) + '\n' +
         join(n.egress_deny) + '\n' + n.egress_default;
}

// Network mode bridge: the invocation's traffic into its record, from the sandbox's counters
// (which start at zero with the sandbox; a reuse sandbox's previous events are subtracted).
void record_traffic(Slot& slot, invoke::InvocationRecord& record) {
  if (!slot.network) return;
  auto now = slot.network->counters();
  if (!now) {
    spdlog::warn("event=network_counters_failed sandbox={} error=\"{}\"", slot.id, now.error().message());
    return;
  }
  auto& was = slot.traffic_seen;
  record.network = invoke::InvocationRecord::Traffic{now->bytes_out - was.bytes_out, now->packets_out - was.packets_out,
                                                     now->bytes_in - was.bytes_in, now->packets_in - was.packets_in};
  was = *now;
}

// Process-wide: sandbox cgroups are named pool-<pid>-<n>, and two PoolSets in one process (a bench
// run, a test) must not hand out the same name.
std::atomic<uint64_t> next_sandbox_id{0};

class PoolSetImpl final : public PoolSet {
 public:
  PoolSetImpl(image::Store& store, std::shared_ptr<cgroup::Hierarchy> cgroups, PoolSetOptions options,
              UniqueFd wake)
      : store_(store), cgroups_(std::move(cgroups)), options_(options), wake_(std::move(wake)) {
    launcher_ = std::thread([this] { launcher_loop(); });
    cleaner_ = std::thread([this] { cleanup_loop(); });
  }
  ~PoolSetImpl() override { shutdown(0ms); }

  Result<> configure(const FunctionSpec& spec) override;
  void remove(std::string_view name) override;
  bool id_range_in_use(uid_t host_first) const override;
  Result<InvocationResult> invoke(std::string_view name, std::string_view event,
                                  const invoke::EventContext& context = {}) override;
  std::vector<PoolStats> stats() const override;
  void shutdown(std::chrono::milliseconds grace) override;

 private:
  Result<std::shared_ptr<const sandbox::SandboxSpec>> build_sandbox_spec(const FunctionSpec& spec, std::string* shape,
                                                                         lambda::FunctionFacts* facts) const;
  Result<SlotPtr> launch(const cgroup::Limits& limits, const sandbox::SandboxSpec& spec, uint64_t generation,
                         bool init_in_background, const net::BridgeConfig* bridge);
  Result<std::shared_ptr<const net::BridgeConfig>> bridge_config(const FunctionSpec& spec) const;
  void launcher_loop();
  // Under mutex_: the function's refills wait, twice as long as after the last failure.
  void back_off(Function& fn) {
    fn.backoff = std::clamp<Clock::duration>(fn.backoff * 2, kBackoffFirst, kBackoffMax);
    fn.retry_after = Clock::now() + fn.backoff;
  }
  // Under mutex_: a ready sandbox goes to the cold start waiting for it, or into the pool.
  void hand_out(Starting& s);
  // go for a parked fresh/reuse sandbox, and the session that drives its init and events. A
  // Lambda runtime finds its Runtime API listening before it starts (its client retries ~1 s only).
  Result<std::unique_ptr<invoke::EventSession>> start_session(Starting& s);
  // A fresh/reuse function answered its init: READY parks the slot, anything else fails it.
  void finish_init(Starting& s, invoke::InitOutcome init);
  void cleanup_loop();
  void wake() const {
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }
  // Under mutex_: queues sandboxes for destruction and forgets them in the count.
  void discard(std::deque<SlotPtr>& slots) {
    total_ -= static_cast<uint32_t>(slots.size());
    for (auto& s : slots) trash(std::move(s));
    slots.clear();
  }
  void trash(SlotPtr slot) {
    trash_.push_back(std::move(slot));
    trash_cv_.notify_one();
  }
  // Under mutex_: makes room for one more sandbox under the global cap by dropping a parked one of
  // another function, oldest first. False when everything is busy or starting.
  bool make_room(const Function& keep);

  image::Store& store_;
  std::shared_ptr<cgroup::Hierarchy> cgroups_;
  PoolSetOptions options_;
  UniqueFd wake_;  // eventfd: work for the launcher
  // Network namespaces of sandboxes gone, checked pristine, for the next ones; declared before
  // anything that holds a slot, so it outlives them.
  sandbox::NetnsPool netns_pool_;
  // The launcher thread's nice before it made itself nicer, and what it uses for refills (both set
  // by that thread; equal when refills cannot be made nicer).
  int base_nice_ = 0, background_nice_ = 0;

  mutable std::mutex mutex_;
  std::condition_variable idle_cv_;  // busy invocations finished (shutdown waits on it)
  std::map<std::string, std::shared_ptr<Function>, std::less<>> functions_;
  std::deque<std::shared_ptr<ColdRequest>> cold_;
  std::set<sandbox::Sandbox*> running_;
  // Per id range, a token every sandbox in it holds (Slot::id_range_hold); expired: none lives.
  std::map<uid_t, std::weak_ptr<const void>> id_range_holds_;
  uint32_t total_ = 0;  // parked + busy + starting, all functions
  uint32_t busy_ = 0;
  std::atomic<uint64_t> next_event_id_{1};
  bool stopping_ = false;

  std::deque<SlotPtr> trash_;
  std::condition_variable trash_cv_;
  bool cleaner_stop_ = false;

  std::thread launcher_, cleaner_;
};

Result<std::shared_ptr<const sandbox::SandboxSpec>> PoolSetImpl::build_sandbox_spec(const FunctionSpec& f,
                                                                                    std::string* shape,
                                                                                    lambda::FunctionFacts* facts) const {
  auto img = FNEXEC_TRY(store_.resolve(f.image));
  auto spec = std::make_shared<sandbox::SandboxSpec>();
  spec->image_name = f.image;
  spec->layers = img.layers;
  spec->stdio = sandbox::Stdio::pipes;
  spec->mount_dir = store_.root() / "mnt";
  sandbox::ProcessOverrides overrides;
  overrides.entrypoint = f.entrypoint;
  overrides.cmd = f.cmd;
  overrides.env = f.env;
  if (!f.workdir.empty()) overrides.workdir = f.workdir;
  if (!f.user.empty()) overrides.user = f.user;
  auto entrypoint = f.entrypoint.value_or(img.config.entrypoint);
  // Lambda's images: ENTRYPOINT is the runtime, CMD the handler; a handler given replaces the CMD.
  if (f.protocol == Protocol::lambda && !f.handler.empty() && !f.cmd && !entrypoint.empty())
    overrides.cmd = std::vector<std::string>{f.handler};
  sandbox::PrivilegeSpec privileges;
  FNEXEC_TRY(sandbox::apply_image_config(img, overrides, *spec, privileges));
  spec->read_only = f.read_only_rootfs;
  if (f.userns) {
    if (!f.id_range)
      return fail(ErrorKind::invalid, "configure user namespace of function", f.name,
                  "no id range was allocated for it");
    spec->userns = sandbox::UserNamespace::automatic;
    spec->id_range = *f.id_range;
  }
  spec->volumes.insert(spec->volumes.end(), f.volumes.begin(), f.volumes.end());
  spec->devices = f.devices;
  privileges.cap_add = f.cap_add;
  privileges.cap_drop = f.cap_drop;
  if (f.nofile) privileges.ulimits.push_back("nofile=" + std::to_string(*f.nofile));
  FNEXEC_TRY(sandbox::check_seccomp_profile_reference(f.seccomp_profile));
  if (f.seccomp_profile.empty() || f.seccomp_profile == "default") {
    privileges.seccomp = sandbox::SeccompMode::default_profile;
  } else if (f.seccomp_profile == "unconfined") {
    privileges.seccomp = sandbox::SeccompMode::unconfined;
  } else if (f.seccomp_profile.front() == '{') {
    privileges.seccomp = sandbox::SeccompMode::inline_json;
    privileges.seccomp_json = f.seccomp_profile;
  } else {
    privileges.seccomp = sandbox::SeccompMode::file;
    privileges.seccomp_file = (options_.seccomp_profile_dir / (f.seccomp_profile + ".json")).string();
  }
  if (f.protocol == Protocol::lambda) {
    std::vector<std::string> cmd(spec->argv.begin() + static_cast<ptrdiff_t>(std::min(entrypoint.size(), spec->argv.size())),
                                 spec->argv.end());
    facts->name = f.name;
    facts->handler = f.handler.empty() ? lambda::default_handler(entrypoint, cmd) : f.handler;
    facts->task_root = spec->cwd == "/" ? "/var/task" : spec->cwd;
    facts->memory_mb = f.limits.memory_bytes ? *f.limits.memory_bytes >> 20 : 10240;
    lambda::set_runtime_env(spec->env, *facts);
    // The Runtime API's socket is bound to 127.0.0.1 in the sandbox's network namespace.
    spec->network = sandbox::Network::loopback;
  } else if (f.lifecycle != Lifecycle::oneshot) {
    set_protocol_env(spec->env, f.lifecycle, f.name);
  }
  spec->privileges = FNEXEC_TRY(sandbox::prepare_privileges(privileges));
  *shape = shape_of(img.manifest_digest, *spec, f);
  return spec;
}

Result<std::shared_ptr<const net::BridgeConfig>> PoolSetImpl::bridge_config(const FunctionSpec& f) const {
  if (f.network.mode == "none") return nullptr;
  if (f.network.mode != "bridge")
    return fail(ErrorKind::invalid, "use network", f.network.mode, "expected none or bridge");
  auto c = std::make_shared<net::BridgeConfig>();
  c->bridge = options_.bridge;
  FNEXEC_TRY(net::check_bridge_name(c->bridge));
  c->subnet = FNEXEC_TRY(net::parse_ipv4_net(options_.bridge_subnet));
  c->subnet6 = FNEXEC_TRY(net::parse_bridge_subnet6(options_.bridge_subnet6));
  c->state_dir = options_.network_state_dir;
  const auto& n = f.network;
  auto settings =
      FNEXEC_TRY(net::parse_network_settings({n.dns, n.add_hosts, n.egress_allow, n.egress_deny, n.egress_default}));
  c->dns = std::move(settings.dns);
  c->extra_hosts = std::move(settings.extra_hosts);
  c->egress = std::move(settings.egress);
  return std::shared_ptr<const net::BridgeConfig>(std::move(c));
}

Result<> PoolSetImpl::configure(const FunctionSpec& spec) {
  if (spec.name.empty()) return fail(ErrorKind::invalid, "configure function", {}, "the name is empty");
  if (spec.max_concurrency == 0)
    return fail(ErrorKind::invalid, "configure function", spec.name, "max_concurrency must be at least 1");
  if (spec.timeout <= 0ms)
    return fail(ErrorKind::invalid, "configure function", spec.name, "timeout must be positive");
  if (spec.lifecycle != Lifecycle::oneshot && spec.init_timeout <= 0ms)
    return fail(ErrorKind::invalid, "configure function", spec.name, "init_timeout must be positive");
  if (spec.protocol == Protocol::lambda && spec.lifecycle == Lifecycle::oneshot)
    return fail(ErrorKind::invalid, "configure function", spec.name,
                "protocol lambda needs lifecycle reuse (Lambda's model) or fresh");
  std::string shape;
  lambda::FunctionFacts facts;
  auto sandbox_spec = build_sandbox_spec(spec, &shape, &facts);
  if (!sandbox_spec) return std::unexpected(sandbox_spec.error().context("configure function " + spec.name));
  auto bridge = bridge_config(spec);
  if (!bridge) return std::unexpected(bridge.error().context("configure function " + spec.name));
  if (*bridge) shape += '\n' + network_shape(spec.network);

  std::lock_guard lock(mutex_);
  if (stopping_) return fail(ErrorKind::unavailable, "configure function", spec.name, "the pools are shut down");
  auto& fn = functions_[spec.name];
  if (!fn) fn = std::make_shared<Function>();
  if (fn->shape != shape) {
    // An updated image or process never reuses a sandbox of the old one: parked ones go now,
    // starting ones when they report ready (their generation is stale).
    discard(fn->warm);
    ++fn->generation;
    fn->shape = std::move(shape);
    fn->sandbox_spec = std::move(*sandbox_spec);
    fn->lambda_facts = std::move(facts);
    fn->bridge = std::move(*bridge);
    fn->backoff = {};
    fn->retry_after = {};
  }
  fn->spec = spec;
  fn->last_used = Clock::now();
  wake();
  return {};
}

void PoolSetImpl::remove(std::string_view name) {
  std::lock_guard lock(mutex_);
  auto it = functions_.find(name);
  if (it == functions_.end()) return;
  it->second->removed = true;
  discard(it->second->warm);
  functions_.erase(it);
}

bool PoolSetImpl::id_range_in_use(uid_t host_first) const {
  std::lock_guard lock(mutex_);
  auto it = id_range_holds_.find(host_first);
  return it != id_range_holds_.end() && !it->second.expired();
}

bool PoolSetImpl::make_room(const Function& keep) {
  Function* oldest = nullptr;
  for (auto& [_, fn] : functions_)
    if (fn.get() != &keep && !fn->warm.empty() && (!oldest || fn->last_used < oldest->last_used))
      oldest = fn.get();
  if (!oldest) return false;
  trash(std::move(oldest->warm.back()));
  oldest->warm.pop_back();
  --total_;
  return true;
}

Result<InvocationResult> PoolSetImpl::invoke(std::string_view name, std::string_view event,
                                             const invoke::EventContext& context) {
  std::shared_ptr<Function> fn;
  SlotPtr slot;
  std::shared_ptr<ColdRequest> request;
  FunctionSpec spec;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return fail(ErrorKind::unavailable, "invoke function", std::string(name), "shutting down");
    auto it = functions_.find(name);
    if (it == functions_.end())
      return fail(ErrorKind::not_found, "invoke function", std::string(name), "no such function");
    fn = it->second;
    if (fn->busy >= fn->spec.max_concurrency)
      return fail(ErrorKind::unavailable, "invoke function", std::string(name),
                  "at max_concurrency (" + std::to_string(fn->spec.max_concurrency) + ")");
    fn->last_used = Clock::now();
    spec = fn->spec;
    while (!fn->warm.empty()) {
      slot = std::move(fn->warm.front());
      fn->warm.pop_front();
      // A parked sandbox killed from outside (OOM killer, an admin) is dropped, not handed out;
      // so is a framed one that wrote between events or whose function ended.
      bool alive = false;
      if (slot->session) {
        alive = slot->session->idle_and_alive();
      } else {
        pollfd dead{slot->sandbox->pidfd(), POLLIN, 0};
        alive = ::poll(&dead, 1, 0) == 0;
      }
      if (alive) break;
      trash(std::move(slot));
      --total_;
    }
    if (!slot) {
      if (total_ >= options_.max_sandboxes && !make_room(*fn))
        return fail(ErrorKind::unavailable, "invoke function", std::string(name),
                    "all " + std::to_string(options_.max_sandboxes) + " sandboxes are in use");
      ++total_;
      request = std::make_shared<ColdRequest>();
      request->function = fn;
      cold_.push_back(request);
    }
    ++fn->busy;
    ++busy_;
    // A cold start to launch, or the last parked sandbox taken: the launcher starts now. Otherwise
    // the refill waits until this invocation is done, so that on a small machine it does not take
    // the CPU from the invocation it refills for.
    if (request || fn->warm.empty()) wake();
  }
  StartKind start = request ? StartKind::cold : StartKind::warm;

  // done: trashed (oneshot, fresh, retired); kept: a reuse slot back in the pool.
  auto finish = [&](SlotPtr done, SlotPtr kept = nullptr) {
    std::lock_guard lock(mutex_);
    --fn->busy;
    --busy_;
    if (done) {
      --total_;
      running_.erase(&*done->sandbox);
      trash(std::move(done));
    } else if (kept) {
      running_.erase(&*kept->sandbox);
      if (stopping_ || fn->removed || kept->generation != fn->generation) {
        --total_;
        trash(std::move(kept));
      } else {
        kept->idle_since = Clock::now();
        // The most recently used first: the others stay idle and retire after idle_timeout.
        fn->warm.push_front(std::move(kept));
      }
    } else {
      --total_;
    }
    wake();  // the refill of the sandbox this invocation used
    idle_cv_.notify_all();
  };
  InvocationResult result;
  result.start = start;
  result.lifecycle = spec.lifecycle;
  if (request) {
    auto launched = request->slot.get_future().get();
    if (!launched) {
      finish(nullptr);
      return std::unexpected(launched.error());
    }
    if (launched->init_failure) {
      // The launcher has already trashed the sandbox: the caller gets the init's own words.
      finish(nullptr);
      auto& init = *launched->init_failure;
      result.sandbox_id = launched->sandbox_id;
      result.init_us = init.init_us;
      result.retired = "init";
      result.error_type = "Runtime.InitError";
      result.error_body = std::move(init.error_body);
      result.log = init.log.empty() ? init.detail + "\n" : std::move(init.log);
      result.record.exit_code = 1;
      result.record.cgroup_mode = std::string(cgroup::to_string(cgroups_->mode()));
      return result;
    }
    slot = std::move(launched->slot);
  }
  {
    std::lock_guard lock(mutex_);
    running_.insert(&*slot->sandbox);
  }
  result.sandbox_id = slot->id;
  result.sandbox_events = ++slot->events;
  result.init_us = std::exchange(slot->init_us, std::nullopt);

  if (!slot->session) {
    invoke::StdioExchange io;
    io.input = event;
    io.max_output_bytes = spec.max_output_bytes;
    io.max_log_bytes = spec.max_log_bytes;
    invoke::WaitOptions wait;
    wait.timeout = spec.timeout;
    auto record = invoke::run_invocation(*slot->sandbox, slot->cgroup.get(), wait, &io);
    if (record) record_traffic(*slot, *record);
    finish(std::move(slot));
    if (!record) return std::unexpected(record.error().context("invoke function " + spec.name));
    result.record = std::move(*record);
    result.record.cgroup_mode = std::string(cgroup::to_string(cgroups_->mode()));
    result.output = std::move(io.output);
    result.output_too_large = io.output_too_large;
    result.log = std::move(io.log);
    return result;
  }

  std::string event_id = std::to_string(next_event_id_.fetch_add(1, std::memory_order_relaxed));
  auto outcome = slot->session->run_event(event_id, event, spec.timeout, context);
  if (!outcome) {
    spdlog::warn("event=sandbox_event_failed function={} sandbox={} error=\"{}\"", spec.name, slot->id,
                 outcome.error().message());
    finish(std::move(slot));
    return std::unexpected(outcome.error().context("invoke function " + spec.name));
  }
  result.record = std::move(outcome->record);
  record_traffic(*slot, result.record);
  result.record.cgroup_mode = std::string(cgroup::to_string(cgroups_->mode()));
  result.output = std::move(outcome->output);
  result.output_too_large = outcome->output_too_large;
  result.log = std::move(outcome->log);
  result.error_type = std::move(outcome->error_type);
  result.error_body = std::move(outcome->error_body);
  result.retired = std::move(outcome->retired);
  if (!outcome->detail.empty())
    spdlog::info("event=sandbox_retired function={} sandbox={} reason={} detail=\"{}\"", spec.name, slot->id,
                 result.retired, outcome->detail);
  if (result.retired.empty() && spec.lifecycle == Lifecycle::fresh) result.retired = "fresh";
  if (result.retired.empty() && spec.max_events_per_sandbox != 0 && slot->events >= spec.max_events_per_sandbox)
    result.retired = "max_events";
  if (result.retired.empty())
    finish(nullptr, std::move(slot));
  else
    finish(std::move(slot));
  return result;
}

std::vector<PoolStats> PoolSetImpl::stats() const {
  std::lock_guard lock(mutex_);
  std::vector<PoolStats> out;
  for (auto& [name, fn] : functions_)
    out.push_back({name, static_cast<uint32_t>(fn->warm.size()), fn->busy, fn->starting, fn->setup_failures,
                   fn->init_failures});
  return out;
}

void PoolSetImpl::shutdown(std::chrono::milliseconds grace) {
  std::unique_lock lock(mutex_);
  if (!stopping_) {
    stopping_ = true;
    for (auto& [_, fn] : functions_) discard(fn->warm);
    for (auto& r : cold_)
      r->slot.set_value(fail(ErrorKind::unavailable, "start sandbox for", r->function->spec.name, "shutting down"));
    cold_.clear();
    wake();
  }
  if (!idle_cv_.wait_for(lock, grace, [&] { return busy_ == 0; })) {
    for (auto* sb : running_) (void)sb->kill();
    idle_cv_.wait(lock, [&] { return busy_ == 0; });
  }
  lock.unlock();
  if (launcher_.joinable()) launcher_.join();
  {
    std::lock_guard trash_lock(mutex_);
    cleaner_stop_ = true;
    trash_cv_.notify_one();
  }
  if (cleaner_.joinable()) cleaner_.join();
}

Result<SlotPtr> PoolSetImpl::launch(const cgroup::Limits& limits, const sandbox::SandboxSpec& tmpl,
                                    uint64_t generation, bool init_in_background, const net::BridgeConfig* bridge) {
  auto slot = std::make_unique<Slot>();
  slot->generation = generation;
  slot->id = "pool-" + std::to_string(::getpid()) + "-" + std::to_string(next_sandbox_id++);
  if (tmpl.userns == sandbox::UserNamespace::automatic) {
    std::lock_guard lock(mutex_);
    auto& weak = id_range_holds_[tmpl.id_range.host_first];
    slot->id_range_hold = weak.lock();
    if (!slot->id_range_hold) {
      slot->id_range_hold = std::make_shared<char>();
      weak = slot->id_range_hold;
    }
  }
  slot->cgroup = FNEXEC_TRY(cgroups_->create(slot->id, limits));
  sandbox::SandboxSpec spec = tmpl;
  spec.cgroup = slot->cgroup.get();
  // A bridge sandbox gets a namespace of its own: its veth and address must never meet a recycled one.
  if (!bridge && spec.network == sandbox::Network::loopback &&
      sandbox::may_share_recycled_netns(spec.privileges)) {
    slot->netns = sandbox::NetnsLease(&netns_pool_, FNEXEC_TRY(netns_pool_.acquire()));
    spec.netns_fd = slot->netns.fd();
  }
  // A refilled fresh/reuse function runs its init at the launcher's low priority too; it gets the
  // daemon's back at READY (renice_function).
  if (background_nice_ != base_nice_ && !init_in_background) spec.function_nice = base_nice_;
  // The lease decides /etc/hosts, which the sandbox's own mount plan binds.
  if (bridge) {
    slot->network.emplace(FNEXEC_TRY(net::Attachment::prepare(*bridge, spec.hostname)));
    for (auto& v : slot->network->volumes()) spec.volumes.push_back(std::move(v));
  }
  slot->sandbox.emplace(FNEXEC_TRY(sandbox::Sandbox::launch(spec)));
  // While the sandbox is parked: an invocation never waits for its veth, address or egress chain.
  if (slot->network) FNEXEC_TRY(slot->network->connect(slot->sandbox->pid(), slot->sandbox->pidfd()));
  return slot;
}

void PoolSetImpl::hand_out(Starting& s) {
  auto& fn = *s.function;
  fn.backoff = {};
  bool stale = fn.removed || s.slot->generation != fn.generation || stopping_;
  if (s.request) {
    if (stale && !fn.removed && !stopping_) {
      // Reconfigured while this was starting: start one of the new shape instead.
      trash(std::move(s.slot));
      cold_.push_front(std::move(s.request));
      wake();
    } else if (stale) {
      trash(std::move(s.slot));
      s.request->slot.set_value(fail(ErrorKind::unavailable, "start sandbox for", fn.spec.name,
                                     stopping_ ? "shutting down" : "function removed"));
    } else {
      std::string id = s.slot->id;
      s.request->slot.set_value(Launched{std::move(s.slot), std::move(id), std::nullopt});
    }
    return;
  }
  --fn.starting;
  if (stale) {
    --total_;
    trash(std::move(s.slot));
  } else {
    s.slot->idle_since = Clock::now();
    fn.warm.push_back(std::move(s.slot));
  }
}

Result<std::unique_ptr<invoke::EventSession>> PoolSetImpl::start_session(Starting& s) {
  auto& slot = *s.slot;
  if (s.protocol == Protocol::lambda) {
    auto listener = FNEXEC_TRY(lambda::listen_in_sandbox(slot.sandbox->pidfd()));
    FNEXEC_TRY(slot.sandbox->go());
    return lambda::RuntimeApiSession::attach(&*slot.sandbox, slot.cgroup.get(), s.limits, std::move(listener),
                                             s.lambda_facts);
  }
  FNEXEC_TRY(slot.sandbox->go());
  auto framed = FNEXEC_TRY(invoke::FramedSession::attach(&*slot.sandbox, slot.cgroup.get(), s.limits));
  return std::unique_ptr<invoke::EventSession>(std::make_unique<invoke::FramedSession>(std::move(framed)));
}

void PoolSetImpl::finish_init(Starting& s, invoke::InitOutcome init) {
  if (init.ready) {
    s.slot->init_us = init.init_us;
    // Built in the background, it serves events at the daemon's priority.
    if (!s.request && background_nice_ != base_nice_) renice_function(s.slot->sandbox->pid(), base_nice_);
    std::lock_guard lock(mutex_);
    hand_out(s);
    return;
  }
  spdlog::warn("event=function_init_failed function={} sandbox={} init_us={} error=\"{}\"", s.function->spec.name,
               s.slot->id, init.init_us, init.detail);
  std::lock_guard lock(mutex_);
  auto& fn = *s.function;
  ++fn.init_failures;
  back_off(fn);
  std::string id = s.slot->id;
  trash(std::move(s.slot));
  if (s.request) {
    s.request->slot.set_value(Launched{nullptr, std::move(id), std::move(init)});
  } else {
    --fn.starting;
    --total_;
  }
}

void PoolSetImpl::launcher_loop() {
  base_nice_ = background_nice_ = own_nice();
  // Only where the sandbox can give its function the daemon's priority back (CAP_SYS_NICE).
  if (sandbox::held_capabilities() & (uint64_t{1} << CAP_SYS_NICE))
    background_nice_ = std::min(base_nice_ + kBackgroundNice, 19);
  std::vector<Starting> starting;
  for (;;) {
    // 1. Decide what to launch (cold starts first, then refills), and shrink idle pools.
    struct Job {
      std::shared_ptr<Function> function;
      std::shared_ptr<const sandbox::SandboxSpec> spec;
      FunctionSpec fspec;
      uint64_t generation;
      std::shared_ptr<ColdRequest> request;
      lambda::FunctionFacts lambda_facts;
      std::shared_ptr<const net::BridgeConfig> bridge;
    };
    std::vector<Job> jobs;
    auto now = Clock::now();
    Clock::time_point next_check = now + 1s;
    {
      std::lock_guard lock(mutex_);
      if (stopping_) break;
      while (!cold_.empty() && starting.size() + jobs.size() < kMaxStarting) {
        auto r = std::move(cold_.front());
        cold_.pop_front();
        auto& fn = r->function;
        if (fn->removed) {
          r->slot.set_value(fail(ErrorKind::not_found, "start sandbox for", fn->spec.name, "function removed"));
          continue;
        }
        jobs.push_back({fn, fn->sandbox_spec, fn->spec, fn->generation, std::move(r), fn->lambda_facts, fn->bridge});
      }
      for (auto& [name, fn] : functions_) {
        bool idle = now - fn->last_used > fn->spec.idle_timeout;
        if (idle && !fn->warm.empty()) {
          spdlog::debug("event=pool_idle function={} drained={}", name, fn->warm.size());
          discard(fn->warm);
        }
        // reuse: the process idle longest (at the back) retires after idle_timeout, beyond min_warm.
        while (fn->spec.lifecycle == Lifecycle::reuse && fn->warm.size() > fn->spec.min_warm &&
               now - fn->warm.back()->idle_since > fn->spec.idle_timeout) {
          spdlog::debug("event=sandbox_retired function={} sandbox={} reason=idle_timeout", name,
                        fn->warm.back()->id);
          trash(std::move(fn->warm.back()));
          fn->warm.pop_back();
          --total_;
        }
        uint32_t target = idle ? 0 : fn->spec.min_warm;
        if (fn->retry_after > now) {
          next_check = std::min(next_check, fn->retry_after);
          continue;
        }
        while (fn->warm.size() + fn->starting < target && starting.size() + jobs.size() < kMaxStarting &&
               total_ < options_.max_sandboxes) {
          ++fn->starting;
          ++total_;
          jobs.push_back({fn, fn->sandbox_spec, fn->spec, fn->generation, nullptr, fn->lambda_facts, fn->bridge});
        }
      }
    }

    // 2. Launch outside the lock: cgroup creation and clone take a while. A cold start has an
    // invocation waiting for it and is built at the daemon's priority, a refill in the background.
    for (auto& job : jobs) {
      set_thread_nice(job.request ? base_nice_ : background_nice_);
      bool framed = job.fspec.lifecycle != Lifecycle::oneshot;
      auto slot = launch(job.fspec.limits, *job.spec, job.generation, framed && !job.request, job.bridge.get());
      if (slot) {
        Starting st{job.function, std::move(*slot), Clock::now(), std::move(job.request)};
        st.lifecycle = job.fspec.lifecycle;
        st.protocol = job.fspec.protocol;
        st.lambda_facts = std::move(job.lambda_facts);
        st.init_timeout = job.fspec.init_timeout;
        st.limits = {job.fspec.max_output_bytes, job.fspec.max_log_bytes};
        starting.push_back(std::move(st));
        continue;
      }
      spdlog::warn("event=sandbox_launch_failed function={} error=\"{}\"", job.fspec.name, slot.error().message());
      std::lock_guard lock(mutex_);
      auto& fn = *job.function;
      ++fn.setup_failures;
      back_off(fn);
      if (job.request) {
        job.request->slot.set_value(std::unexpected(slot.error()));
      } else {
        --fn.starting;
        --total_;
      }
    }

    // 3. Wait for work, or for a starting sandbox to report ready or failed, or a function to
    // finish its init.
    std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}};
    std::vector<size_t> first_fd;
    for (auto& s : starting) {
      first_fd.push_back(fds.size());
      if (s.initializing) {
        pollfd p[invoke::EventSession::kPollFds];
        s.slot->session->init_pollfds(p);
        fds.insert(fds.end(), p, p + invoke::EventSession::kPollFds);
      } else {
        fds.push_back({s.slot->sandbox->control_fd(), POLLIN, 0});
      }
    }
    auto deadline_of = [](const Starting& s) { return s.initializing ? s.init_deadline : s.since + kReadyTimeout; };
    auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(next_check - Clock::now()).count();
    for (auto& s : starting)
      timeout = std::min<int64_t>(
          timeout, std::chrono::ceil<std::chrono::milliseconds>(deadline_of(s) - Clock::now()).count());
    int n = ::poll(fds.data(), fds.size(), static_cast<int>(std::max<int64_t>(timeout, 0)));
    if (n < 0 && errno != EINTR) {
      spdlog::error("event=pool_poll_failed errno={}", errno);
      std::this_thread::sleep_for(10ms);
      continue;
    }
    if (fds[0].revents) {
      uint64_t v;
      (void)!::read(wake_.get(), &v, sizeof v);
    }
    now = Clock::now();
    std::vector<Starting> still;
    for (size_t i = 0; i < starting.size(); ++i) {
      auto& s = starting[i];
      bool timed_out = now >= deadline_of(s);
      bool readable = false;
      size_t n_fds = s.initializing ? invoke::EventSession::kPollFds : 1;
      for (size_t k = 0; k < n_fds; ++k) readable = readable || fds[first_fd[i] + k].revents;
      if (!readable && !timed_out) {
        still.push_back(std::move(s));
        continue;
      }
      if (s.initializing) {
        auto init = s.slot->session->continue_init();
        if (!init && timed_out) init = s.slot->session->abandon_init(s.init_timeout);
        if (!init) {
          still.push_back(std::move(s));
          continue;
        }
        finish_init(s, std::move(*init));
        continue;
      }
      Result<bool> ready = fail(ErrorKind::internal, "wait for sandbox to be ready", s.function->spec.name,
                                "no ready signal within 30 s");
      if (!timed_out) ready = s.slot->sandbox->wait_ready();
      // Counters start here: setup is never billed to an invocation (fresh/reuse: at each event).
      if (ready && *ready && s.lifecycle == Lifecycle::oneshot) {
        if (auto b = s.slot->cgroup->baseline(); !b) ready = std::unexpected(b.error());
      }
      if (ready && !*ready) {
        auto exit = s.slot->sandbox->reap();
        ready = std::unexpected(!exit                ? exit.error()
                                : exit->setup_error ? *exit->setup_error
                                                    : Error{ErrorKind::internal, 0, "set up sandbox", s.function->spec.name,
                                                            "it exited before it was ready"});
      }
      if (ready && s.lifecycle != Lifecycle::oneshot) {
        // The function starts now and runs its init while the sandbox waits for its first event.
        auto session = start_session(s);
        if (session) {
          s.slot->session = std::move(*session);
          s.initializing = true;
          s.init_deadline = Clock::now() + s.init_timeout;
          still.push_back(std::move(s));
          continue;
        }
        ready = std::unexpected(session.error());
      }
      std::lock_guard lock(mutex_);
      auto& fn = *s.function;
      if (!ready) {
        spdlog::warn("event=sandbox_setup_failed function={} error=\"{}\"", fn.spec.name, ready.error().message());
        ++fn.setup_failures;
        back_off(fn);
        trash(std::move(s.slot));
        if (s.request) {
          s.request->slot.set_value(std::unexpected(ready.error()));
        } else {
          --fn.starting;
          --total_;
        }
        continue;
      }
      hand_out(s);
    }
    starting = std::move(still);
  }

  // Stopping: nothing parked or starting survives; waiting cold starts get an answer.
  std::unique_lock lock(mutex_);
  for (auto& s : starting) {
    if (s.request)
      s.request->slot.set_value(fail(ErrorKind::unavailable, "start sandbox for", s.function->spec.name, "shutting down"));
    else {
      --s.function->starting;
      --total_;
    }
    trash(std::move(s.slot));
  }
  for (auto& r : cold_)
    r->slot.set_value(fail(ErrorKind::unavailable, "start sandbox for", r->function->spec.name, "shutting down"));
  cold_.clear();
  // PR_SET_PDEATHSIG fires when this thread ends, not the process: leaving now would SIGKILL the
  // invocations still running, which shutdown() lets finish within the grace period.
  idle_cv_.wait(lock, [&] { return busy_ == 0; });
}

void PoolSetImpl::cleanup_loop() {
  set_thread_nice(std::min(own_nice() + kBackgroundNice, 19));
  std::unique_lock lock(mutex_);
  for (;;) {
    trash_cv_.wait(lock, [&] { return !trash_.empty() || cleaner_stop_; });
    if (trash_.empty()) return;
    auto slot = std::move(trash_.front());
    trash_.pop_front();
    lock.unlock();
    slot.reset();  // kills and reaps the sandbox, then kills and removes its cgroup
    lock.lock();
  }
}

}  // namespace

Result<std::unique_ptr<PoolSet>> PoolSet::create(image::Store& store, std::shared_ptr<cgroup::Hierarchy> cgroups,
                                                 PoolSetOptions options) {
  if (!cgroups) return fail(ErrorKind::invalid, "create pools", {}, "no cgroup hierarchy given");
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) return fail_errno("create eventfd for pools");
  return std::unique_ptr<PoolSet>(new PoolSetImpl(store, std::move(cgroups), options, std::move(wake)));
}

}  // namespace fnexec::pool
