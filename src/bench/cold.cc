// fnexec cold: a fresh sandbox per invocation (all namespaces incl. net, overlay, cgroup, seccomp),
// launched and run by the same Sandbox::launch and run_invocation that `fnexec run` uses.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

#include "bench/bench_features.h"
#include "bench/fnexec_targets.h"
#include "cgroup/cgroup.h"
#include "invoke/invocation.h"
#include "sandbox/launcher.h"
#include "sandbox/privileges.h"
#include "util/unique_fd.h"

namespace fnexec::bench {

namespace {

#if !FNEXEC_BENCH_HAS_STDIO_PIPES
// The sandbox inherits fds 0 and 1 of the launching process as the function's stdin and stdout:
// SandboxSpec has no stdio fields. So the event pipe and the result pipe are put on 0 and 1 for
// the clone and put back after, under one lock. Every other pipe end exists only inside the lock,
// so no sandbox init can hold another invocation's stdin open (which would keep cat from its EOF).
std::mutex g_stdio_swap;

class StdioSwap {
 public:
  StdioSwap(int in, int out)
      : saved_in_(::fcntl(0, F_DUPFD_CLOEXEC, 3)), saved_out_(::fcntl(1, F_DUPFD_CLOEXEC, 3)) {
    ::dup2(in, 0);
    ::dup2(out, 1);
  }
  ~StdioSwap() {
    restore(saved_in_, 0);
    restore(saved_out_, 1);
  }

 private:
  static void restore(UniqueFd& saved, int fd) {
    if (saved)
      ::dup2(saved.get(), fd);
    else
      ::close(fd);
  }
  UniqueFd saved_in_, saved_out_;
};

// Pipes big enough for the whole event and the whole result, so neither side needs a thread to
// feed or drain them while the sandbox runs.
Result<int> grow_pipe(int fd, size_t need) {
  int size = ::fcntl(fd, F_GETPIPE_SZ);
  if (size >= 0 && static_cast<size_t>(size) >= need) return size;
  size = ::fcntl(fd, F_SETPIPE_SZ, static_cast<int>(std::max<size_t>(need, 4096)));
  if (size < 0 || static_cast<size_t>(size) < need)
    return fail(ErrorKind::invalid, "fit the event into a pipe", fmt::format("{} bytes", need),
                "fnexec cold in the bench takes events up to /proc/sys/fs/pipe-max-size");
  return size;
}

#endif

class ColdTarget final : public Target {
 public:
  ColdTarget(sandbox::SandboxSpec spec, std::shared_ptr<cgroup::Hierarchy> cgroups)
      : spec_(std::move(spec)), cgroups_(std::move(cgroups)) {}

  Result<> invoke(std::string_view event, std::string& output, unsigned) override {
    output.clear();
    std::unique_ptr<cgroup::SandboxCgroup> cg;
    if (cgroups_)
      cg = FNEXEC_TRY(cgroups_->create(fmt::format("bench-{}-{}", ::getpid(), next_id_++), cgroup::Limits{}));
    sandbox::SandboxSpec spec = spec_;
    spec.cgroup = cg.get();

    invoke::WaitOptions wait;
    wait.timeout = std::chrono::seconds(30);
#if FNEXEC_BENCH_HAS_STDIO_PIPES
    spec.stdio = sandbox::Stdio::pipes;
    auto sb = sandbox::Sandbox::launch(spec);
    if (!sb) return std::unexpected(sb.error());
    invoke::StdioExchange exchange;
    exchange.input = event;
    auto rec = invoke::run_invocation(*sb, cg.get(), wait, &exchange);
    output = std::move(exchange.output);
#else
    UniqueFd out_read;
    std::optional<Result<sandbox::Sandbox>> launched;
    {
      std::lock_guard lock(g_stdio_swap);
      int in[2], out[2];
      if (::pipe2(in, O_CLOEXEC) != 0) return fail_errno("create the event pipe");
      UniqueFd in_read(in[0]), in_write(in[1]);
      if (::pipe2(out, O_CLOEXEC) != 0) return fail_errno("create the result pipe");
      out_read.reset(out[0]);
      UniqueFd out_write(out[1]);
      FNEXEC_TRY(grow_pipe(in_write.get(), event.size()));
      FNEXEC_TRY(grow_pipe(out_write.get(), event.size()));
      for (size_t done = 0; done < event.size();) {
        ssize_t w = ::write(in_write.get(), event.data() + done, event.size() - done);
        if (w < 0) return fail_errno("write the event");
        done += static_cast<size_t>(w);
      }
      in_write.reset();
      StdioSwap swap(in_read.get(), out_write.get());
      launched.emplace(sandbox::Sandbox::launch(spec));
    }
    if (!*launched) return std::unexpected(launched->error());
    auto rec = invoke::run_invocation(**launched, cg.get(), wait);
    // PID 1 has exited, so everything the function wrote is in the pipe; other sandboxes' inits
    // may still hold its read end, which is harmless.
    ::fcntl(out_read.get(), F_SETFL, O_NONBLOCK);
    char buf[65536];
    for (ssize_t r; (r = ::read(out_read.get(), buf, sizeof buf)) > 0;)
      output.append(buf, static_cast<size_t>(r));
#endif
    if (cg) {
      if (auto d = cg->destroy(); !d) return std::unexpected(d.error());
    }
    if (!rec) return std::unexpected(rec.error());
    if (rec->setup_error) return std::unexpected(*rec->setup_error);
    if (rec->exit_code != 0)
      return fail(ErrorKind::internal, "run", spec_.image_name, fmt::format("exit code {}", rec->exit_code));
    return {};
  }

 private:
  sandbox::SandboxSpec spec_;
  std::shared_ptr<cgroup::Hierarchy> cgroups_;
  static inline std::atomic<uint64_t> next_id_{0};
};

}  // namespace

Result<std::shared_ptr<Target>> make_cold_target(const FnexecFunction& fn) {
  sandbox::SandboxSpec spec;
  spec.layers = fn.image.layers;
  spec.image_name = fn.image.reference.empty() ? fn.image.manifest_digest : fn.image.reference;
  spec.argv = fn.argv;
  // What `fnexec run IMAGE -- ARGV` gives a function with an image config that sets nothing.
  spec.env = fn.image.config.env;
  bool has_path = false;
  for (const auto& e : spec.env) has_path |= e.starts_with("PATH=");
  if (!has_path)
    spec.env.insert(spec.env.begin(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  spec.env.push_back("HOSTNAME=" + spec.hostname);
  spec.env.push_back("HOME=/root");
  spec.cwd = fn.image.config.working_dir.empty() ? "/" : fn.image.config.working_dir;
  spec.network = sandbox::Network::loopback;
  spec.privileges = FNEXEC_TRY(sandbox::prepare_privileges(sandbox::PrivilegeSpec{}));
  spec.mount_dir = fn.mount_dir;
  return std::make_shared<ColdTarget>(std::move(spec), fn.cgroups);
}

}  // namespace fnexec::bench
