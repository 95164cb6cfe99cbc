// The peers fnexec is measured against, on the same rootfs and the same event: `floor` (fork+exec
// of the function's own binary with pipes, no isolation; for python/node/c the same handler as a
// plain host process), `pipe` (python/node/c: one long-lived host process per client thread
// answering fnexec/1 frames over pipes, the floor for the lifecycle reuse), `bwrap --unshare-all`,
// `crun run` and `runc run` (busybox applets). Each is used only when installed; otherwise it is listed as skipped with the reason.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench/runner.h"
#include "util/error.h"

namespace fnexec::bench {

// A process started with CLONE_VM|CLONE_VFORK (as posix_spawn does, so a large bench process does
// not pay for copying its page tables), optionally inside the mount namespace mntns_fd.
struct Command {
  std::string path;               // absolute executable path
  std::vector<std::string> argv;  // argv[0] may differ from path (busybox applets)
  int mntns_fd = -1;
};

// Runs it with input on stdin and stdout collected into output; an exit status other than 0 is an
// error carrying the tail of its stderr.
Result<> run_command(const Command& cmd, std::string_view input, std::string& output);

struct StartOptions {
  std::string join_cgroup;       // a cgroup directory the child moves itself into before exec; "": ours
  int parent_death_signal = 0;   // sent to the child when the calling thread ends (PR_SET_PDEATHSIG)
  std::vector<std::string> env;  // the child's environment ("K=V"); empty: ours
};

// Starts it with stdin, stdout and stderr on the given fds and returns its pid, not waited for.
Result<pid_t> start_command(const Command& cmd, int in, int out, int err, const StartOptions& options = {});

// A target that keeps one long-lived process per slot, started with FNEXEC_PROTOCOL=fnexec/1 and
// FNEXEC_LIFECYCLE=reuse, and sends each event as an EVENT frame; the first READY is awaited when
// the process starts (untimed, in before_batch), so an invocation is one frame each way.
std::shared_ptr<Target> framed_pipe_target(Command cmd, std::string function_name, unsigned slots);

// A target that runs one of these commands per invocation (per_slot[slot % size]); "{id}" in an
// argument becomes a fresh id (container names).
std::shared_ptr<Target> command_target(std::vector<Command> per_slot);

struct PeerOptions {
  std::filesystem::path rootfs;        // the function's merged root filesystem, used read-only
  std::filesystem::path work;          // scratch directory for OCI bundles (tmpfs)
  std::vector<std::string> peers;      // any of floor, pipe, bwrap, crun, runc
  std::vector<std::string> functions;  // busybox applets true, cat; runtime functions python, node, c
  unsigned max_concurrency = 1;
};

struct PeerSet {
  std::vector<Entry> entries;  // expected_output is left for the caller
  std::vector<Skipped> skipped;
  std::vector<std::string> notes;
};

// Entries keep what they need (bundles, the mount namespace fd for crun, the cgroup directories to
// remove at the end) alive through their targets.
Result<PeerSet> prepare_peers(const PeerOptions& options);

// The cgroup path (the same in every v1 hierarchy) below our own cgroup in all of them: the
// longest of our per-hierarchy paths, when the others are its prefixes; nullopt when there is none.
std::optional<std::string> common_own_cgroup(std::string_view proc_self_cgroup);

}  // namespace fnexec::bench
