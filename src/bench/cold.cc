// fnexec cold: a fresh sandbox per invocation (all namespaces incl. net, overlay, cgroup, seccomp),
// launched and run by the same Sandbox::launch and run_invocation that `fnexec run` uses.
#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <optional>

#include "bench/fnexec_targets.h"
#include "cgroup/cgroup.h"
#include "invoke/invocation.h"
#include "sandbox/launcher.h"
#include "sandbox/privileges.h"
#include "util/unique_fd.h"

namespace fnexec::bench {

namespace {

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
    spec.stdio = sandbox::Stdio::pipes;
    std::optional<sandbox::Sandbox> sb;
    if (auto launched = sandbox::Sandbox::launch(spec); launched)
      sb.emplace(std::move(*launched));
    else
      return std::unexpected(launched.error());
    invoke::StdioExchange exchange;
    exchange.input = event;
    auto rec = invoke::run_invocation(*sb, cg.get(), wait, &exchange);
    output = std::move(exchange.output);
    // Killed and reaped first, as the pools do: removing the cgroup of a sandbox whose PID 1 is
    // still tearing down its namespaces would freeze, kill and poll it (cgroup v1).
    sb.reset();
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
