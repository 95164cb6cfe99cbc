// One invocation of a launched sandbox: start it, wait with a deadline, kill on timeout, account.
// Shared by `fnexec run` and the daemon.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "sandbox/launcher.h"
#include "util/error.h"

namespace fnexec::cgroup {
class SandboxCgroup;
}

namespace fnexec::invoke {

// What one invocation cost and how it ended. Counters the kernel does not give stay nullopt.
struct InvocationRecord {
  uint64_t wall_us = 0;  // from go to PID 1 reaped
  std::optional<uint64_t> cpu_user_us;
  std::optional<uint64_t> cpu_system_us;
  std::optional<uint64_t> memory_peak_bytes;
  int exit_code = 0;          // what `fnexec run` exits with: the function's, 128+N, 124, 125-127, 137
  std::optional<int> signal;  // the signal that ended the function
  bool oom_killed = false;
  bool timed_out = false;
  // The kernel could not reset the peak at go (cgroup v2 before 6.12): it includes the sandbox's setup.
  bool memory_peak_includes_setup = false;
  std::string cgroup_mode = "disabled";
  std::optional<Error> setup_error;  // set when exit_code is 125, 126 or 127 because of setup
  // Network mode bridge only: the sandbox's traffic from fnexec's nftables counters.
  struct Traffic {
    uint64_t bytes_out = 0, packets_out = 0, bytes_in = 0, packets_in = 0;
  };
  std::optional<Traffic> network;
};

// {"wall_us":..,"cpu_user_us":..|null,...}; "network":{..} only when the record has traffic counters
std::string to_json(const InvocationRecord& r);

struct WaitOptions {
  std::optional<std::chrono::nanoseconds> timeout;
  // Forward SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH received by this
  // process to the sandbox's PID 1 while waiting (a CLI in the foreground wants this).
  bool forward_signals = false;
  // Also without stdio: return once init reported the function's status (its processes are gone
  // and reaped by then), not when PID 1 has exited and its namespaces are torn down.
  bool answer_on_status = false;
};

// The event and the result of a sandbox launched with Stdio::pipes (pooled sandboxes).
struct StdioExchange {
  std::string_view input;  // written to stdin, which is then closed; a function that never reads it is fine
  uint64_t max_output_bytes = UINT64_MAX;  // beyond it the sandbox is killed and output_too_large set
  uint64_t max_log_bytes = 64 << 10;       // the tail of stderr kept
  std::string output;                      // stdout; empty when output_too_large
  bool output_too_large = false;
  std::string log;  // the last max_log_bytes of stderr
};

// Sends go, then waits in one ppoll on the pidfd, the stdio pipes (when stdio is given) and the
// deadline; at the deadline SIGKILLs PID 1 (which takes the pid namespace with it) and kills the
// cgroup. Counters are read from the cgroup: deltas when the caller took cgroup->baseline().
Result<InvocationRecord> run_invocation(sandbox::Sandbox& sandbox, cgroup::SandboxCgroup* cgroup,
                                        const WaitOptions& options, StdioExchange* stdio = nullptr);

// The cgroup's counters (deltas when baseline() was taken) into rec's cpu, memory and oom fields.
void record_usage(const cgroup::SandboxCgroup& cgroup, InvocationRecord& rec);

// What `fnexec run` exits with for a function's wait status: its exit code, 128+N for signal N.
int exit_code_of(int wait_status);

// "500ms", "2s", "1m", "1h", "1.5s", "250us"; a bare number is seconds.
Result<std::chrono::nanoseconds> parse_duration(std::string_view text);

}  // namespace fnexec::invoke
