// The daemon's registry pulls: POST /v1/images/pull starts one and answers with its id at once,
// GET /v1/images/pulls/{id} shows its layers' progress, and a pull for the same reference that is
// already queued or running is joined instead of started again (one download), whether the second
// request is another POST or a PUT of a function with that docker:// image. Each pull is recorded in
// the state database as it starts and ends, so its end (or its interruption by a daemon restart,
// State::recover) is still there for GET after a restart.
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "image/remote.h"
#include "image/store.h"
#include "registry/pull.h"
#include "server/state.h"
#include "util/error.h"

namespace fnexec::server {

// The body of POST /v1/images/pull: {"reference": "...", "name": "NAME[:TAG]", "platform":
// "OS/ARCH[/VARIANT]", "tls_verify": false}; only reference is required. Credentials and CAs are
// the daemon's (registry_auth_file, registry_certs_dir in fnexec.conf), never the request's.
Result<registry::PullRequest> parse_pull_request(std::string_view json);

class Pulls {
 public:
  // state: where pulls are recorded (nullptr: in memory only, as in unit tests).
  explicit Pulls(image::Store& store, server::State* state = nullptr, size_t keep_finished = 64)
      : store_(store), state_(state), keep_finished_(keep_finished) {}

  struct Ticket {
    std::string id;
    bool joined = false;  // a pull of the same reference was already queued or running
  };
  // Registers a pull (queued) or joins the one with the same reference, platform and name.
  Result<Ticket> submit(registry::PullRequest request);
  // Runs the pull in this thread unless another thread already does; wait: then waits for its end.
  // Whoever comes first runs it, so a joiner never waits on a job still queued behind it.
  Result<image::ResolvedImage> run(const std::string& id, bool wait);
  // {"id","reference","state","layers":[...],...}; nullopt for an unknown (or long finished) id.
  // A pull that is not in memory is read from the state database.
  std::optional<std::string> status_json(const std::string& id) const;

 private:
  enum class State { queued, running, done, failed };
  struct Job {
    std::string id, key, reference;
    registry::PullRequest request;
    State state = State::queued;
    size_t joined = 0;
    std::vector<image::PullProgress> layers;
    std::optional<Result<image::ResolvedImage>> result;
    int64_t started_ms = 0, finished_ms = 0;
  };

  // The job as the state database keeps it; mu_ held.
  static PullRecord record_of(const Job& job);
  void persist(const Job& job);

  image::Store& store_;
  server::State* state_;
  size_t keep_finished_;
  mutable std::mutex mu_;
  std::condition_variable finished_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;  // by id
  std::map<std::string, std::string> active_;         // key -> id of the queued or running pull
  std::deque<std::string> finished_ids_;              // oldest first, pruned to keep_finished_
};

}  // namespace fnexec::server
