// Warm pools: per function, sandboxes parked at "waiting for go" (namespaces, overlay rootfs, /proc,
// /dev and cgroup ready), so an invocation only hands over the event, execs, reads and accounts.
// This header is the contract the daemon (src/server) builds on.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cgroup/cgroup.h"
#include "invoke/event_session.h"
#include "invoke/invocation.h"
#include "sandbox/spec.h"
#include "util/error.h"

namespace fnexec::image {
class Store;
}

namespace fnexec::pool {

enum class StartKind { warm, cold };
std::string_view to_string(StartKind k);

// How a function's process lives (man 7 fnexec-protocol):
//   oneshot  a fresh process per event: the event on stdin, then EOF; the result is stdout until exit.
//   fresh    the pool starts the process before any event; it runs its init, says READY (fnexec/1
//            frames on stdin/stdout), answers exactly one EVENT, and the sandbox is destroyed.
//   reuse    like fresh, but the process answers events one at a time until max_events_per_sandbox,
//            idle_timeout or a failure retires it: state carries over between events.
enum class Lifecycle { oneshot, fresh, reuse };
// Inline so that the function-document parser (src/server/api.cc) links without the pools: its
// fuzz target does.
inline std::string_view to_string(Lifecycle l) {
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
inline std::optional<Lifecycle> parse_lifecycle(std::string_view text) {
  for (auto l : {Lifecycle::oneshot, Lifecycle::fresh, Lifecycle::reuse})
    if (text == to_string(l)) return l;
  return std::nullopt;
}
// What a fresh/reuse function speaks (man 7 fnexec-protocol):
//   fnexec   fnexec/1 frames on its stdin and stdout.
//   lambda   the Lambda Runtime API, served on 127.0.0.1:9001 in its sandbox's network namespace; an
//            unmodified Lambda runtime (bootstrap, aws-lambda-ric, ...) runs as it does on AWS.
enum class Protocol { fnexec, lambda };
inline std::string_view to_string(Protocol p) { return p == Protocol::lambda ? "lambda" : "fnexec"; }
inline std::optional<Protocol> parse_protocol(std::string_view text) {
  for (auto p : {Protocol::fnexec, Protocol::lambda})
    if (text == to_string(p)) return p;
  return std::nullopt;
}
// Sets what a fresh/reuse function reads at start (FNEXEC_PROTOCOL, FNEXEC_LIFECYCLE,
// FNEXEC_FUNCTION_NAME) in env, for the pools and `fnexec run --lifecycle` alike.
void set_protocol_env(std::vector<std::string>& env, Lifecycle lifecycle, std::string_view function);

// The wait before an async invocation's next delivery after delivery N failed:
// min(initial_ms * multiplier^(N-1), max_ms), so with the defaults 1 s, 2 s, 4 s, ... up to 60 s.
struct RetryBackoff {
  std::chrono::milliseconds initial{1000};  // 0..3600000
  double multiplier = 2.0;                  // 1..10
  std::chrono::milliseconds max{60000};     // initial..21600000 (6 h, Lambda's maximum event age)
  bool operator==(const RetryBackoff&) const = default;
};
inline constexpr uint32_t kDefaultRetries = 2;  // Lambda's default for async invocations
inline constexpr uint32_t kMaxRetries = 10;
// failed_delivery is 1-based: the delivery that just failed.
inline std::chrono::milliseconds retry_delay(const RetryBackoff& b, uint32_t failed_delivery) {
  double ms = static_cast<double>(b.initial.count());
  for (uint32_t i = 1; i < failed_delivery && ms < static_cast<double>(b.max.count()); ++i) ms *= b.multiplier;
  return std::chrono::milliseconds(static_cast<int64_t>(std::min(ms, static_cast<double>(b.max.count()))));
}

// A registered function, as the daemon stores it (PUT /v1/functions/{name}).
struct FunctionSpec {
  std::string name;
  std::string image;  // a stored reference; resolved to a digest when the pool is configured
  std::optional<std::vector<std::string>> entrypoint;  // overrides the image's
  std::optional<std::vector<std::string>> cmd;
  std::vector<std::string> env;  // "K=V", added to the image's
  std::string workdir;
  std::string user;  // "uid[:gid]" or NAME[:GROUP] from the image
  // Security, as `fnexec run`'s flags of the same names.
  bool read_only_rootfs = false;
  std::vector<std::string> cap_add, cap_drop;  // "NET_ADMIN", "CAP_NET_ADMIN" or "ALL"
  // "" or "default", "unconfined", an inline JSON profile, or NAME: PoolSetOptions::seccomp_profile_dir/NAME.json.
  std::string seccomp_profile;
  std::optional<uint64_t> nofile;  // RLIMIT_NOFILE soft and hard; unset: 1024
  // Per-function isolation (issue 15). userns: root inside maps to id_range, this function's own
  // slice of the subordinate ids, which the daemon allocates and records (never in the document);
  // sandboxes of one function share it. volumes: host sources the daemon checked against volume_allow.
  bool userns = false;
  std::optional<sandbox::IdRange> id_range;
  std::vector<sandbox::Volume> volumes;
  // Host devices made again in its /dev; the daemon checked them against device_allow, filled their
  // numbers and added them to limits.devices (the cgroup's device policy).
  std::vector<sandbox::DeviceNode> devices;
  cgroup::Limits limits;
  std::chrono::milliseconds timeout{30000};
  uint32_t min_warm = 1;
  uint32_t max_concurrency = 16;
  std::chrono::seconds idle_timeout{600};
  uint64_t max_output_bytes = 6 << 20;  // stdout cap; beyond it the invocation fails, never truncates
  uint64_t max_log_bytes = 64 << 10;    // stderr kept per invocation (the tail)
  Lifecycle lifecycle = Lifecycle::oneshot;
  uint32_t max_events_per_sandbox = 0;            // reuse: 0 = unlimited
  std::chrono::milliseconds init_timeout{10000};  // fresh/reuse: READY must come within it
  Protocol protocol = Protocol::fnexec;  // fresh/reuse only; lambda needs one of them
  // lambda: _HANDLER, and the CMD given to an image with an entrypoint (Lambda's images take the
  // handler as their CMD); empty: the CMD's first word is the handler.
  std::string handler;
  // idle_timeout above: a reuse sandbox idle that long is retired (beyond min_warm).

  // The network, as `fnexec run`'s flags of the same names (checked when the document is parsed).
  struct Network {
    std::string mode = "none";           // none (loopback only) | bridge
    std::vector<std::string> dns;        // IPv4 nameservers; empty: the host's non-loopback ones
    std::vector<std::string> add_hosts;  // NAME:IP lines of /etc/hosts
    std::vector<std::string> egress_allow, egress_deny;  // CIDR[:PORT]
    std::string egress_default = "allow";                // allow | deny (fnexec.conf default_egress)
    bool operator==(const Network&) const = default;
  } network;
  // Async delivery (docs/ARCHITECTURE.md "Async delivery"): a failed async invocation is delivered
  // again up to `retries` more times, waiting retry_backoff before each, then dead-lettered.
  uint32_t retries = kDefaultRetries;
  RetryBackoff retry_backoff;
};

struct InvocationResult {
  StartKind start = StartKind::cold;
  invoke::InvocationRecord record;  // exit, signal, oom, timeout, wall/cpu/memory from cgroup counters
  std::string output;               // the function's stdout
  bool output_too_large = false;    // stdout passed max_output_bytes: the function was killed
  std::string log;                  // the tail of its stderr, at most max_log_bytes (fresh/reuse:
                                    // what it wrote while handling this event)
  Lifecycle lifecycle = Lifecycle::oneshot;
  uint64_t sandbox_events = 1;      // events this sandbox has served, this one included
  std::optional<uint64_t> init_us;  // on the FIRST event a sandbox serves (fresh/reuse): go to READY
  std::string sandbox_id;           // which sandbox served it (records group by it)
  // "" when the sandbox lives on; else why it was retired: "fresh", "max_events", "error",
  // "timeout", "protocol", "exit", "output_too_large" ("init" when its init failed).
  std::string retired;
  std::optional<std::string> error_body;  // the ERROR / INIT_ERROR json from the function
  // "" | "Function.Error" (an ERROR frame; a reuse sandbox lives on) | "Runtime.ExitError" (exit or
  // crash mid-event) | "Runtime.InitError" (INIT_ERROR, exit or init_timeout before READY) |
  // "Runtime.ProtocolError" (a malformed frame) | "Runtime.OutputTooLarge" | "Runtime.Timeout".
  std::string error_type;
};

struct PoolStats {
  std::string function;
  uint32_t warm = 0;     // parked, ready
  uint32_t busy = 0;     // running an invocation
  uint32_t starting = 0; // being built in the background
  uint64_t setup_failures = 0;  // sandboxes whose setup failed (each one logged; refills back off)
  uint64_t init_failures = 0;   // fresh/reuse: inits that failed or timed out (refills back off)
};

struct PoolSetOptions {
  uint32_t max_sandboxes = 256;  // across all functions: parked + busy + starting
  std::filesystem::path seccomp_profile_dir = "/etc/fnexec/seccomp";  // named seccomp profiles
  // Network mode bridge: the bridge, its subnets and the lease directory (fnexec.conf bridge,
  // bridge_subnet, bridge_subnet6); a function's dns, add_hosts and egress fields complete it per sandbox.
  std::string bridge = "fnexec0";
  std::string bridge_subnet = "10.87.0.0/16";
  std::string bridge_subnet6 = "none";  // fnexec.conf bridge_subnet6; none: IPv4 only
  std::filesystem::path network_state_dir = "/run/fnexec/net";
};

// All pools of one supervisor. Thread-safe. invoke() blocks its caller (the daemon calls it from a
// worker thread, never from the Asio loop); refills happen on a background thread.
class PoolSet {
 public:
  static Result<std::unique_ptr<PoolSet>> create(image::Store& store, std::shared_ptr<cgroup::Hierarchy> cgroups,
                                                 PoolSetOptions options);
  virtual ~PoolSet() = default;  // destroys every sandbox

  // Creates or updates a function's pool: resolves the image, and when anything that shapes a
  // sandbox changed (image digest, limits, argv/env/cwd/user), drains the old sandboxes.
  virtual Result<> configure(const FunctionSpec& spec) = 0;
  virtual void remove(std::string_view name) = 0;
  // Whether a sandbox (parked, busy, starting or being destroyed) still runs in the id range that
  // starts at host_first: a released range is handed to another function only once it is not.
  virtual bool id_range_in_use(uid_t host_first) const = 0;

  // Runs one invocation: a parked sandbox if there is one (warm), else one built on the spot (cold).
  // ErrorKind::unavailable when the function is at max_concurrency or the global cap is reached;
  // ErrorKind::not_found for an unknown function. A failed init of a fresh/reuse function is a
  // result, not an Error: error_type "Runtime.InitError", error_body the INIT_ERROR json if any,
  // log the init's stderr tail.
  // context: what the caller said about itself, for runtimes that read it (protocol lambda).
  virtual Result<InvocationResult> invoke(std::string_view name, std::string_view event,
                                          const invoke::EventContext& context = {}) = 0;

  virtual std::vector<PoolStats> stats() const = 0;
  // Stops refilling, waits up to grace for running invocations, then kills the rest.
  virtual void shutdown(std::chrono::milliseconds grace) = 0;
};

}  // namespace fnexec::pool
