// This daemon as a member of a cluster (docs/ARCHITECTURE.md "Cluster"): the NATS connection, the
// shared function registry, the async queue and the heartbeats, started after the Service loaded its
// local state and stopped before it goes.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "cluster/async_queue.h"
#include "cluster/connection.h"
#include "cluster/forward.h"
#include "cluster/kv.h"
#include "cluster/local.h"
#include "cluster/registry.h"

namespace fnexec::cluster {

inline constexpr const char* kNodesBucket = "fnexec-nodes";
// A node missing this long (no heartbeat) drops out of GET /v1/cluster.
inline constexpr std::chrono::seconds kNodeTtl{10};
inline constexpr std::chrono::seconds kHeartbeatInterval{2};

class Node {
 public:
  static Result<std::unique_ptr<Node>> start(const Options& options, Local& local);
  ~Node();

  const std::string& name() const { return options_.node; }
  FunctionRegistry& registry() { return *registry_; }
  AsyncQueue& queue() { return *queue_; }
  SyncForwarder& forwarder() { return *forwarder_; }
  bool connected() const { return conn_->connected(); }
  // GET /v1/cluster: this node's view of the connection and every live node's last heartbeat.
  Result<std::string> status_json();

 private:
  Node(Options options, Local& local) : options_(std::move(options)), local_(local) {}
  void heartbeat_loop(std::stop_token stop);

  Options options_;
  Local& local_;
  int64_t started_ms_ = 0;
  std::unique_ptr<Connection> conn_;
  std::optional<KvBucket> nodes_;
  std::unique_ptr<AsyncQueue> queue_;
  std::unique_ptr<SyncForwarder> forwarder_;
  // after queue_ and forwarder_: its watch thread calls their follow()
  std::unique_ptr<FunctionRegistry> registry_;
  std::jthread heartbeat_;
};

}  // namespace fnexec::cluster
