// The API's behaviour, without the network: one Request in, one Reply out through a callback.
// Blocking work (invocations, pool configuration, image imports, SQLite writes) runs on executors the
// daemon provides, so the network loop never waits on a sandbox or the disk.
#pragma once

#include <atomic>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "cluster/local.h"
#include "image/store.h"
#include "pool/pool.h"
#include "server/api.h"
#include "server/isolation.h"
#include "server/metrics.h"
#include "server/record_writer.h"
#include "server/state.h"

namespace fnexec::image {
class Store;
}
namespace fnexec::cluster {
class Node;
}

namespace fnexec::server {

struct Request {
  std::string method;
  std::string target;
  RouteMatch match;
  std::string body;              // every route but images_import
  std::filesystem::path upload;  // images_import: the file holding the body; the service removes it
  // Lambda routes only (the /v1 routes read none): every header, names as sent.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string principal;  // who sent it: "unix", "token" or the SigV4 access key id
};

struct Reply {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// Called exactly once per request, from any thread.
using Respond = std::function<void(Reply)>;
// Runs a job on some other thread.
using Executor = std::function<void(std::function<void()>)>;

// What SIGHUP can change.
struct ServiceLimits {
  Retention retention;
  uint32_t max_in_flight = 64;  // invocations running at once across functions (the worker threads)
  FunctionDefaults function_defaults;  // fnexec.conf default_* keys, for PUTs that leave fields out
  FunctionLimits function_limits;      // fnexec.conf max_* keys of a function document
  uint64_t max_layer_bytes = image::kDefaultMaxLayerBytes;  // unpacked size caps of uploaded images
  uint64_t max_image_bytes = image::kDefaultMaxImageBytes;
  std::string registry_auth_file;      // fnexec.conf: credentials for docker:// images
  std::string registry_certs_dir;      // fnexec.conf: per-registry CA directories
  LambdaSettings lambda;
  IsolationSettings isolation;  // per-function user namespaces and volume_allow
};

// Whether a sync invocation may start now; admitted means it holds a max_concurrency slot.
enum class Admission { admitted, stopping, no_function, not_ready, function_busy, daemon_busy };
struct AdmissionResult {
  Admission status = Admission::admitted;
  std::string message;  // why not, naming the function and the limit
};

// One admitted sync invocation after it ran, or after it could not start (result holds the error;
// ErrorKind::unavailable: no sandbox capacity).
struct SyncRun {
  std::string id;  // the record's id
  pool::FunctionSpec spec;
  Result<pool::InvocationResult> result = std::unexpected(Error{});
  Outcome outcome = Outcome::failed;
  std::string error;  // failure message (the record's error) when outcome is not success
  std::string node;   // cluster: the node that ran it when it was forwarded ("" = this daemon)
  int64_t started_ms = 0, finished_ms = 0;  // as its record has them (0: it did not start)
};

// A function as the service knows it: its spec and why its pool is not ready ("" when it is).
struct FunctionView {
  pool::FunctionSpec spec;
  std::string error;
};

// The image a function's pool runs: the one it was pinned to when configured, whatever its name
// points at since.
struct FunctionImage {
  std::string digest;  // the manifest digest, "sha256:<hex>"
  int64_t size = 0;    // config and compressed layers, as `fnexec image ls` shows it
};

class LambdaApi;
class Pulls;

// cluster::Local: what a cluster node (src/cluster) asks of this daemon; unused without cluster_nats.
class Service : public cluster::Local {
 public:
  // pools and store may be null: the daemon then answers what needs them with 503.
  Service(State& state, pool::PoolSet* pools, image::Store* store, std::string cgroup_mode,
          Executor invocations, Executor admin, ServiceLimits limits);
  ~Service();

  // Loads the functions and configures their pools, retries or dead-letters the async invocations
  // the previous instance was running (State::recover), loads the async queue. Before serving.
  Result<> start(std::vector<QueuedInvocation> interrupted = {});
  void handle(Request request, Respond respond);
  // Starts queued async invocations that have capacity, including those that found the pool set
  // full before. The daemon calls it periodically.
  void pump();
  // New invocations get 503 from now on; queued async ones stay queued for the next start.
  void begin_shutdown();
  // Jobs handed to the executors that have not finished.
  size_t busy() const { return busy_.load(); }
  // Every function's pool holds at least min_warm parked sandboxes (or has failed to configure).
  bool pools_warm() const;
  void set_limits(const ServiceLimits& limits);
  ServiceLimits limits() const;

  // The invocation path shared by /v1 and the Lambda API (lambda_api.cc), each with its own replies.
  // admit() counts a rejection in the metrics; an admitted invocation must go to run_admitted().
  AdmissionResult admit(const std::string& name);
  // Runs on the invocation executor; frees the slot before done() is called.
  // context reaches runtimes that read it (protocol lambda).
  void run_admitted(const std::string& name, std::string event, std::function<void(SyncRun)> done,
                    invoke::EventContext context = {});
  // Cluster mode, after admit() found no slot here: sends the invocation to another node that serves
  // the function (cluster/forward.h) and returns true, done gets the run as if local (429 when no node
  // took it: local_refusal says why this node did not); false without a cluster (event untouched).
  bool forward_sync(const std::string& name, std::string& event, const std::string& local_refusal,
                    std::function<void(SyncRun)> done, invoke::EventContext context = {});
  // Queues an async invocation durably, its context with it; done gets its id.
  void enqueue(const std::string& name, std::string event, std::function<void(Result<std::string>)> done,
               invoke::EventContext context = {});
  std::optional<FunctionView> function(const std::string& name) const;
  // The pinned images of the functions (only: of that one function), by function name; a function
  // whose pool was never configured (no store, a failed pull) has none.
  Result<std::map<std::string, FunctionImage>> function_images(const std::string& only = "") const;
  bool stopping() const;
  State& state() { return state_; }

  // Cluster mode (docs/ARCHITECTURE.md "Cluster"): the registry, async invocations and their records
  // go through node; null (the default) keeps everything local. Set before serving, cleared after.
  void attach_cluster(cluster::Node* node);
  void apply_cluster_function(const std::string& name, const std::string& spec_json) override;
  void remove_cluster_function(const std::string& name) override;
  std::vector<std::string> local_function_names() override;
  std::optional<pool::FunctionSpec> function_spec(const std::string& name) override;
  uint32_t free_async_slots(const std::string& name) override;
  void run_delivery(cluster::Delivery d, std::function<void(cluster::DeliveryResult)> done) override;
  std::optional<std::string> admit_forwarded(const std::string& function) override;
  void run_forwarded(const std::string& function, std::string event, invoke::EventContext context,
                     cluster::ForwardedDone done) override;
  std::string lost_delivery_record(const cluster::Delivery& d, const std::string& error) override;
  std::string node_status_json() override;

 private:
  struct FunctionEntry {
    pool::FunctionSpec spec;
    std::string error;  // why configure() failed, "" when the pool is ready
  };
  struct Job;

  void run_job(Executor& executor, std::function<void()> job);
  // Pins the function's image in the store (so `image rm` and `image gc` leave it alone) and
  // configures its pool with the pinned digest; a failure leaves the previous pin in place.
  Result<> configure_pool(const pool::FunctionSpec& spec);
  // The spec with its volume sources checked against volume_allow (made canonical) and, with
  // userns, the function's id range (allocated and recorded on first use).
  Result<pool::FunctionSpec> isolate(const pool::FunctionSpec& spec);
  void list_functions(Respond& respond);
  void get_function(const std::string& name, Respond& respond);
  void put_function(Request& request, Respond respond);
  void delete_function(const std::string& name, Respond respond);
  void invoke(Request& request, Respond respond);
  SyncRun invoke_sync(const std::string& name, std::string event, const invoke::EventContext& context);
  void pump_queue();  // pump() without retrying after the pool set was full
  void run_async(QueuedInvocation q);
  // A failed async delivery: queued again after its backoff while retries are left, else dead-lettered.
  // An async delivery's end, local or from the cluster: its record's end (the error when it
  // failed), the metrics, and its log stored under the invocation id.
  InvocationEnd end_async_delivery(const std::string& id, const pool::FunctionSpec& spec,
                                   Result<pool::InvocationResult> res, const Retention& retention);
  Result<> settle_failed_delivery(const QueuedInvocation& q, const pool::FunctionSpec& spec,
                                  const InvocationEnd& end, const Retention& retention);
  void list_dead_letters(const Request& request, Respond& respond);
  void get_dead_letter(const std::string& id, Respond& respond);
  void delete_dead_letter(const std::string& id, Respond respond);
  void replay_dead_letter(const std::string& id, Respond respond);
  void release(const std::string& function);
  void logs(const Request& request, Respond& respond);
  void list_invocations(const Request& request, Respond& respond);
  void get_invocation(const std::string& id, Respond& respond);
  void images_list(Respond& respond);
  void images_import(Request& request, Respond respond);
  void images_pull(Request& request, Respond respond);
  void images_pull_get(const std::string& id, Respond& respond);
  std::string pool_json(const std::string& name, const std::vector<pool::PoolStats>& stats) const;

  State& state_;
  pool::PoolSet* pools_;
  image::Store* store_;
  std::string cgroup_mode_;
  Executor invocations_;
  Executor admin_;
  Metrics metrics_;
  RecordWriter records_;  // the sync path's records, committed in batches
  std::atomic<size_t> busy_{0};

  mutable std::mutex mu_;
  ServiceLimits limits_;
  std::map<std::string, FunctionEntry> functions_;
  std::map<std::string, uint32_t> in_flight_;
  uint32_t in_flight_total_ = 0;
  std::deque<QueuedInvocation> pending_;  // async, waiting for capacity
  bool stopping_ = false;
  bool backoff_ = false;  // the pool set had no capacity: wait for the next pump()
  std::unique_ptr<LambdaApi> lambda_;
  std::unique_ptr<Pulls> pulls_;  // registry pulls (POST /v1/images/pull, docker:// functions); null without a store

  // Cluster mode (service_cluster.cc).
  // client_id: the id came from the client (?id=), so a record of it may exist already.
  void enqueue_cluster(const std::string& name, std::string id, bool client_id, std::string event,
                       std::function<void(Result<std::pair<std::string, bool>>)> done,
                       invoke::EventContext context = {});
  cluster::DeliveryResult run_cluster_delivery(const cluster::Delivery& d);
  void cluster_route(const Request& request, Respond respond);
  // GET/DELETE /v1/dead-letters/{id} and POST .../replay against the cluster's dead-letter stream.
  void cluster_dead_letter(Route route, const std::string& id, Respond respond);
  // The record from the results bucket; `local` (this node's row) when the bucket has none (expired, NATS down).
  void cluster_invocation(const std::string& id, std::optional<std::string> local, Respond respond);
  std::atomic<cluster::Node*> cluster_{nullptr};
};

// 32 lowercase hex digits from getrandom(2).
std::string new_invocation_id();
int64_t now_ms();

}  // namespace fnexec::server
