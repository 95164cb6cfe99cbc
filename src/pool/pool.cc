// Warm pools: one launcher thread builds every sandbox (it outlives them all, so PR_SET_PDEATHSIG
// only fires when the supervisor dies) and parks it; invoke() takes a parked one, runs it through
// invoke::run_invocation and hands the remains to a cleanup thread, off the caller's path.
#include "pool/pool.h"

#include <linux/capability.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "image/store.h"
#include "sandbox/capabilities.h"
#include "sandbox/image_config.h"
#include "sandbox/launcher.h"
#include "util/log.h"
#include "util/unique_fd.h"

namespace fnexec::pool {

std::string_view to_string(StartKind k) {
  return k == StartKind::warm ? "warm" : "cold";
}

std::string_view to_string(Lifecycle l) {
  switch (l) {
    case Lifecycle::fresh:
      return "fresh";
    case Lifecycle::reuse:
      return "reuse";
    case Lifecycle::oneshot:
      break;
  }
  return "oneshot";
}

std::optional<Lifecycle> parse_lifecycle(std::string_view text) {
  for (auto l : {Lifecycle::oneshot, Lifecycle::fresh, Lifecycle::reuse})
    if (text == to_string(l)) return l;
  return std::nullopt;
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

// One sandbox and its cgroup. Members are destroyed in reverse: the sandbox is killed and reaped
// before its cgroup is emptied and removed.
struct Slot {
  std::unique_ptr<cgroup::SandboxCgroup> cgroup;
  std::optional<sandbox::Sandbox> sandbox;
  uint64_t generation = 0;
};
using SlotPtr = std::unique_ptr<Slot>;

struct Function {
  FunctionSpec spec;
  std::shared_ptr<const sandbox::SandboxSpec> sandbox_spec;  // template; cgroup set per launch
  std::string shape;        // everything that shapes a sandbox; a change drains the pool
  uint64_t generation = 0;  // bumped with shape; older sandboxes are never handed out
  std::deque<SlotPtr> warm;
  uint32_t busy = 0, starting = 0;
  Clock::time_point last_used = Clock::now();
  Clock::time_point retry_after{};
  Clock::duration backoff{};
  uint64_t setup_failures = 0;
  bool removed = false;
};

struct ColdRequest {
  std::shared_ptr<Function> function;
  std::promise<Result<SlotPtr>> slot;
};

struct Starting {
  std::shared_ptr<Function> function;
  SlotPtr slot;
  Clock::time_point since;
  std::shared_ptr<ColdRequest> request;  // null for a refill
};

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (auto& s : v) out += s + '\0';
  return out;
}

// The key of everything that makes two sandboxes interchangeable.
std::string shape_of(const std::string& digest, const sandbox::SandboxSpec& s, const FunctionSpec& f) {
  auto opt = [](const auto& v) { return v ? std::to_string(*v) : std::string("-"); };
  return digest + '\n' + join(s.argv) + '\n' + join(s.env) + '\n' + s.cwd + '\n' +
         std::to_string(s.privileges.uid) + ':' + std::to_string(s.privileges.gid) + '\n' +
         opt(f.limits.memory_bytes) + ' ' + opt(f.limits.cpus) + ' ' + opt(f.limits.pids) + '\n' +
         std::to_string(static_cast<int>(s.network));
}

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
  Result<InvocationResult> invoke(std::string_view name, std::string_view event) override;
  std::vector<PoolStats> stats() const override;
  void shutdown(std::chrono::milliseconds grace) override;

 private:
  Result<std::shared_ptr<const sandbox::SandboxSpec>> build_sandbox_spec(const FunctionSpec& spec,
                                                                         std::string* shape) const;
  Result<SlotPtr> launch(const cgroup::Limits& limits, const sandbox::SandboxSpec& spec, uint64_t generation);
  void launcher_loop();
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
  // The launcher thread's nice before it made itself nicer, and what it uses for refills (both set
  // by that thread; equal when refills cannot be made nicer).
  int base_nice_ = 0, background_nice_ = 0;

  mutable std::mutex mutex_;
  std::condition_variable idle_cv_;  // busy invocations finished (shutdown waits on it)
  std::map<std::string, std::shared_ptr<Function>, std::less<>> functions_;
  std::deque<std::shared_ptr<ColdRequest>> cold_;
  std::set<sandbox::Sandbox*> running_;
  uint32_t total_ = 0;  // parked + busy + starting, all functions
  uint32_t busy_ = 0;
  uint64_t next_id_ = 0;
  bool stopping_ = false;

  std::deque<SlotPtr> trash_;
  std::condition_variable trash_cv_;
  bool cleaner_stop_ = false;

  std::thread launcher_, cleaner_;
};

Result<std::shared_ptr<const sandbox::SandboxSpec>> PoolSetImpl::build_sandbox_spec(const FunctionSpec& f,
                                                                                    std::string* shape) const {
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
  sandbox::PrivilegeSpec privileges;
  FNEXEC_TRY(sandbox::apply_image_config(img, overrides, *spec, privileges));
  spec->privileges = FNEXEC_TRY(sandbox::prepare_privileges(privileges));
  *shape = shape_of(img.manifest_digest, *spec, f);
  return spec;
}

Result<> PoolSetImpl::configure(const FunctionSpec& spec) {
  if (spec.name.empty()) return fail(ErrorKind::invalid, "configure function", {}, "the name is empty");
  if (spec.max_concurrency == 0)
    return fail(ErrorKind::invalid, "configure function", spec.name, "max_concurrency must be at least 1");
  if (spec.timeout <= 0ms)
    return fail(ErrorKind::invalid, "configure function", spec.name, "timeout must be positive");
  std::string shape;
  auto sandbox_spec = build_sandbox_spec(spec, &shape);
  if (!sandbox_spec) return std::unexpected(sandbox_spec.error().context("configure function " + spec.name));

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

Result<InvocationResult> PoolSetImpl::invoke(std::string_view name, std::string_view event) {
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
      // A parked sandbox killed from outside (OOM killer, an admin) is dropped, not handed out.
      pollfd dead{slot->sandbox->pidfd(), POLLIN, 0};
      if (::poll(&dead, 1, 0) == 0) break;
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

  auto finish = [&](SlotPtr done) {
    std::lock_guard lock(mutex_);
    --fn->busy;
    --busy_;
    --total_;
    if (done) {
      running_.erase(&*done->sandbox);
      trash(std::move(done));
    }
    wake();  // the refill of the sandbox this invocation used
    idle_cv_.notify_all();
  };
  if (request) {
    auto launched = request->slot.get_future().get();
    if (!launched) {
      finish(nullptr);
      return std::unexpected(launched.error());
    }
    slot = std::move(*launched);
  }
  {
    std::lock_guard lock(mutex_);
    running_.insert(&*slot->sandbox);
  }

  InvocationResult result;
  result.start = start;
  invoke::StdioExchange io;
  io.input = event;
  io.max_output_bytes = spec.max_output_bytes;
  io.max_log_bytes = spec.max_log_bytes;
  invoke::WaitOptions wait;
  wait.timeout = spec.timeout;
  auto record = invoke::run_invocation(*slot->sandbox, slot->cgroup.get(), wait, &io);
  finish(std::move(slot));
  if (!record) return std::unexpected(record.error().context("invoke function " + spec.name));
  result.record = std::move(*record);
  result.record.cgroup_mode = std::string(cgroup::to_string(cgroups_->mode()));
  result.output = std::move(io.output);
  result.output_too_large = io.output_too_large;
  result.log = std::move(io.log);
  return result;
}

std::vector<PoolStats> PoolSetImpl::stats() const {
  std::lock_guard lock(mutex_);
  std::vector<PoolStats> out;
  for (auto& [name, fn] : functions_)
    out.push_back({name, static_cast<uint32_t>(fn->warm.size()), fn->busy, fn->starting, fn->setup_failures});
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
                                    uint64_t generation) {
  auto slot = std::make_unique<Slot>();
  slot->generation = generation;
  std::string id;
  {
    std::lock_guard lock(mutex_);
    id = "pool-" + std::to_string(::getpid()) + "-" + std::to_string(next_id_++);
  }
  slot->cgroup = FNEXEC_TRY(cgroups_->create(id, limits));
  sandbox::SandboxSpec spec = tmpl;
  spec.cgroup = slot->cgroup.get();
  if (background_nice_ != base_nice_) spec.function_nice = base_nice_;
  slot->sandbox.emplace(FNEXEC_TRY(sandbox::Sandbox::launch(spec)));
  return slot;
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
        jobs.push_back({fn, fn->sandbox_spec, fn->spec, fn->generation, std::move(r)});
      }
      for (auto& [name, fn] : functions_) {
        bool idle = now - fn->last_used > fn->spec.idle_timeout;
        if (idle && !fn->warm.empty()) {
          spdlog::debug("event=pool_idle function={} drained={}", name, fn->warm.size());
          discard(fn->warm);
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
          jobs.push_back({fn, fn->sandbox_spec, fn->spec, fn->generation, nullptr});
        }
      }
    }

    // 2. Launch outside the lock: cgroup creation and clone take a while. A cold start has an
    // invocation waiting for it and is built at the daemon's priority, a refill in the background.
    for (auto& job : jobs) {
      set_thread_nice(job.request ? base_nice_ : background_nice_);
      auto slot = launch(job.fspec.limits, *job.spec, job.generation);
      if (slot) {
        starting.push_back({job.function, std::move(*slot), Clock::now(), std::move(job.request)});
        continue;
      }
      spdlog::warn("event=sandbox_launch_failed function={} error=\"{}\"", job.fspec.name, slot.error().message());
      std::lock_guard lock(mutex_);
      auto& fn = *job.function;
      ++fn.setup_failures;
      fn.backoff = std::clamp<Clock::duration>(fn.backoff * 2, kBackoffFirst, kBackoffMax);
      fn.retry_after = Clock::now() + fn.backoff;
      if (job.request) {
        job.request->slot.set_value(std::unexpected(slot.error()));
      } else {
        --fn.starting;
        --total_;
      }
    }

    // 3. Wait for work, or for a starting sandbox to report ready or failed.
    std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}};
    for (auto& s : starting) fds.push_back({s.slot->sandbox->control_fd(), POLLIN, 0});
    auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(next_check - Clock::now()).count();
    for (auto& s : starting)
      timeout = std::min<int64_t>(
          timeout, std::chrono::duration_cast<std::chrono::milliseconds>(s.since + kReadyTimeout - Clock::now()).count());
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
      bool timed_out = now - s.since > kReadyTimeout;
      if (!fds[i + 1].revents && !timed_out) {
        still.push_back(std::move(s));
        continue;
      }
      Result<bool> ready = fail(ErrorKind::internal, "wait for sandbox to be ready", s.function->spec.name,
                                "no ready signal within 30 s");
      if (!timed_out) ready = s.slot->sandbox->wait_ready();
      // Counters start here: setup is never billed to an invocation.
      if (ready && *ready) {
        if (auto b = s.slot->cgroup->baseline(); !b) ready = std::unexpected(b.error());
      }
      if (ready && !*ready) {
        auto exit = s.slot->sandbox->reap();
        ready = std::unexpected(!exit                ? exit.error()
                                : exit->setup_error ? *exit->setup_error
                                                    : Error{ErrorKind::internal, 0, "set up sandbox", s.function->spec.name,
                                                            "it exited before it was ready"});
      }
      std::lock_guard lock(mutex_);
      auto& fn = *s.function;
      if (!ready) {
        spdlog::warn("event=sandbox_setup_failed function={} error=\"{}\"", fn.spec.name, ready.error().message());
        ++fn.setup_failures;
        fn.backoff = std::clamp<Clock::duration>(fn.backoff * 2, kBackoffFirst, kBackoffMax);
        fn.retry_after = now + fn.backoff;
        trash(std::move(s.slot));
        if (s.request) {
          s.request->slot.set_value(std::unexpected(ready.error()));
        } else {
          --fn.starting;
          --total_;
        }
        continue;
      }
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
          s.request->slot.set_value(std::move(s.slot));
        }
        continue;
      }
      --fn.starting;
      if (stale) {
        --total_;
        trash(std::move(s.slot));
      } else {
        fn.warm.push_back(std::move(s.slot));
      }
    }
    starting = std::move(still);
  }

  // Stopping: nothing parked or starting survives; waiting cold starts get an answer.
  std::lock_guard lock(mutex_);
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
