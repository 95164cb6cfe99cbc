#include "cluster/node.h"

#include <fmt/format.h>

#include <condition_variable>

#include "server/json.h"
#include "util/log.h"

namespace fnexec::cluster {

namespace {

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Result<std::unique_ptr<Node>> Node::start(const Options& options, Local& local) {
  std::unique_ptr<Node> n(new Node(options, local));
  n->started_ms_ = wall_ms();
  n->conn_ = FNEXEC_TRY(Connection::open(options));
  n->nodes_.emplace(FNEXEC_TRY(KvBucket::open(*n->conn_, kNodesBucket, kNodeTtl)));
  n->queue_ = FNEXEC_TRY(AsyncQueue::open(*n->conn_, local, options.result_ttl));
  n->forwarder_ = FNEXEC_TRY(SyncForwarder::open(*n->conn_, local, *n->queue_, options.node));
  auto* q = n->queue_.get();
  auto* fw = n->forwarder_.get();
  n->registry_ = FNEXEC_TRY(FunctionRegistry::open(*n->conn_, local, [q, fw](const std::string& f) {
    q->follow(f);
    fw->follow(f);
  }));
  // Functions this node already has consume and serve now; the registry's catch-up corrects the set.
  for (const auto& f : local.local_function_names()) {
    q->follow(f);
    fw->follow(f);
  }
  n->heartbeat_ = std::jthread([p = n.get()](std::stop_token st) { p->heartbeat_loop(st); });
  spdlog::info("cluster: node={} joined via {}", options.node, n->conn_->url());
  return n;
}

Node::~Node() {
  heartbeat_.request_stop();
  if (heartbeat_.joinable()) heartbeat_.join();
  // The registry first: its watch thread calls into the queue.
  registry_.reset();
  forwarder_.reset();
  queue_.reset();
  if (nodes_ && conn_->connected()) (void)nodes_->remove(options_.node);  // leave at once, not after the TTL
  nodes_.reset();
  conn_.reset();
}

void Node::heartbeat_loop(std::stop_token stop) {
  std::mutex mu;
  std::condition_variable_any cv;
  while (!stop.stop_requested()) {
    if (conn_->connected()) {
      server::JsonWriter w;
      w.begin_object().field("node", options_.node).field("started_ms", started_ms_).field("time_ms", wall_ms());
      w.key("local").raw(local_.node_status_json()).end_object();
      if (auto r = nodes_->put(options_.node, w.take()); !r)
        spdlog::debug("cluster: heartbeat: {}", r.error().message());
    }
    std::unique_lock lock(mu);
    cv.wait_for(lock, stop, kHeartbeatInterval, [] { return false; });
  }
}

Result<std::string> Node::status_json() {
  server::JsonWriter w;
  w.begin_object().field("node", options_.node).field("connected", conn_->connected());
  w.field("nats_url", conn_->connected() ? conn_->url() : std::string()).field("reconnects", conn_->reconnects());
  auto pending = queue_->pending();
  w.key("async_pending");
  pending ? w.value(*pending) : w.null();
  w.key("nodes").begin_array();
  if (conn_->connected())
    for (const auto& key : FNEXEC_TRY(nodes_->keys()))
      if (auto e = nodes_->get(key); e && *e && !(*e)->deleted) w.raw((*e)->value);
  w.end_array().end_object();
  return w.take();
}

}  // namespace fnexec::cluster
