// fnexec over its HTTP API as bench targets (`fnexec bench --via-api`): each invocation is
// `POST /v1/functions/{name}/invoke` on the daemon's unix socket with the event as body, timed until
// the reply (the result) is read; one keep-alive connection per invoking thread.
//   warm-api: a function whose pool keeps more sandboxes parked than the highest concurrency (a hit)
//   cold-api: a function with min_warm 0, so every invocation builds its sandbox (Fnexec-Start: cold)
// The daemon is one the bench starts (this binary as `fnexec serve` on a socket, state dir and
// cgroup prefix of its own, all removed at the end) or a running one (--socket), where only the
// bench's functions (bench-api-*) are registered and removed again.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/runner.h"
#include "pool/pool.h"
#include "util/error.h"

namespace fnexec::cgroup {
class Hierarchy;
}

namespace fnexec::bench {

struct ApiOptions {
  std::optional<std::string> socket;  // a running daemon; nullopt: start one
  std::filesystem::path work;         // where the own daemon's directory goes (the scratch tmpfs)
  std::filesystem::path fnexec_binary = "/proc/self/exe";
  // The image the functions run: a reference the daemon already has (IMAGE with --socket), or else
  // the oci-archive to upload unless the daemon has archive_digest already.
  std::optional<std::string> image;
  std::filesystem::path archive;
  std::string archive_digest;
  std::string archive_name = "bench:busybox";  // the name it is uploaded under
  std::shared_ptr<cgroup::Hierarchy> cgroups;  // the bench's (the own daemon's prefix goes next to
                                               // its); nullptr: the own daemon runs --cgroups=disabled
  unsigned max_concurrency = 1;                // the highest level asked: pool sizes and caps follow it
};

class Connections;

// The daemon and what the bench put into it. The destructor removes it all: the functions (from a
// running daemon), or the own daemon (SIGTERM, then SIGKILL after a grace period), its cgroup
// prefix tree and its directory, also when start() or add_function() failed halfway.
class ApiServer {
 public:
  static Result<std::unique_ptr<ApiServer>> start(const ApiOptions& options);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Registers bench-api-NAME[-LIFECYCLE] (warm: min_warm, at least one above the highest
  // concurrency; returns once the pool is full) or bench-api-cold-NAME (min_warm 0), running argv,
  // and returns its target.
  Result<std::shared_ptr<Target>> add_function(const std::string& name, const std::vector<std::string>& argv,
                                               bool warm, pool::Lifecycle lifecycle = pool::Lifecycle::oneshot,
                                               uint32_t min_warm = 0);
  // What the reader of the results must know (an image left in a running daemon's store).
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  explicit ApiServer(const ApiOptions& options) : options_(options) {}
  Result<> launch_own_daemon();
  Result<> wait_until_healthy(const std::filesystem::path& socket, const std::filesystem::path& log);
  Result<> provide_image();
  void stop_own_daemon();

  ApiOptions options_;
  std::shared_ptr<Connections> connections_;
  std::string image_ref_;
  std::vector<std::string> registered_;
  std::vector<std::string> notes_;
  // The own daemon.
  pid_t pid_ = -1;
  std::filesystem::path dir_;                        // socket, state dir, config, log
  std::vector<std::filesystem::path> cgroup_trees_;  // OWN/<prefix> in each hierarchy
};

}  // namespace fnexec::bench
