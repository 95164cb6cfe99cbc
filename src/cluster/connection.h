// The daemon's one connection to NATS (nats.c) and its JetStream context. nats.c reconnects on its own
// (forever, every reconnect_wait); its callbacks run on nats.c's threads and only log and flip a flag.
#pragma once

#include "cluster/nats_api.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "util/error.h"

namespace fnexec::cluster {

// fnexec.conf cluster_* keys (fnexec.conf(5)).
struct Options {
  std::vector<std::string> servers;  // nats://HOST:PORT, from cluster_nats (comma-separated)
  std::string node;                  // this daemon's name in the cluster; default: hostname:pid of the socket
  std::string creds_file;            // cluster_nats_creds: a NATS .creds file (JWT + NKey seed)
  std::string user, password;        // cluster_nats_user / cluster_nats_password
  std::string tls_ca;                // cluster_nats_tls_ca: CA bundle; setting any tls key turns TLS on
  std::string tls_cert, tls_key;     // cluster_nats_tls_cert / _key: client certificate
  std::chrono::milliseconds result_ttl{std::chrono::hours(24)};  // cluster_result_ttl
  // cluster_replicas: copies of every stream and bucket this node creates (1 for one nats-server,
  // 3 for a 3-server NATS cluster, so one server can go); ones that exist are used as they are.
  int replicas = 1;
  bool enabled() const { return !servers.empty(); }
};

// Splits "nats://a:4222,nats://b:4222"; each must be nats:// or tls:// HOST:PORT.
Result<std::vector<std::string>> parse_servers(const std::string& list);

// "cannot WHAT ON: nats.c's status text (and its last error)".
std::unexpected<Error> nats_fail(natsStatus status, std::string what, std::string on = {});

// A message header's value, "" when absent.
std::string msg_header(natsMsg* msg, const char* name);

class Connection {
 public:
  // Connects once (the daemon refuses to start without NATS); later losses reconnect in the background.
  static Result<std::unique_ptr<Connection>> open(const Options& options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  natsConnection* nats() const { return conn_; }
  jsCtx* js() const { return js_; }
  bool connected() const { return connected_.load(); }
  std::string url() const;
  uint64_t reconnects() const { return reconnects_.load(); }
  int replicas() const { return replicas_; }

 private:
  Connection() = default;
  static void on_disconnected(natsConnection* nc, void* self);
  static void on_reconnected(natsConnection* nc, void* self);
  static void on_error(natsConnection* nc, natsSubscription* sub, natsStatus err, void* self);
  static void on_closed(natsConnection* nc, void* self);

  natsOptions* opts_ = nullptr;
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  int replicas_ = 1;
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> reconnects_{0};
  std::atomic<bool> closing_{false};
  // nats.c calls back on its own thread after natsConnection_Close returns: the destructor waits for
  // the closed callback, the last one, before this object goes.
  std::mutex closed_mu_;
  std::condition_variable closed_cv_;
  bool closed_ = false;
};

}  // namespace fnexec::cluster
