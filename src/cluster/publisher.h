// JetStream publishes that do not wait on the caller's thread (js_PublishMsgAsync): the server's ack
// (or error, or MaxWait timeout) calls `done` on nats.c's thread. Several publishes in flight share
// one round trip's wait, which is what lets an enqueue and a worker's result write stay off the
// critical path (docs/ARCHITECTURE.md "Cluster", measured in bench/cluster-async.sh).
#pragma once

#include <nats/nats.h>

#include <functional>
#include <map>
#include <mutex>

#include "cluster/connection.h"

namespace fnexec::cluster {

// What the server answered: the ack's duplicate flag, or the error (its JetStream code in `code`).
struct Published {
  bool duplicate = false;
};
struct PublishError {
  Error error;
  jsErrCode code{};
};
using PublishDone = std::function<void(std::expected<Published, PublishError>)>;

class Publisher {
 public:
  static Result<std::unique_ptr<Publisher>> open(Connection& conn);
  // Waits for the acks still pending (up to 5 s); done is called for each first.
  ~Publisher();
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // Takes msg. done runs once, on nats.c's thread (ack or error) or on this one (not sent): keep it
  // short, it must not publish synchronously. options may be null; MaxWait defaults to 5 s.
  void publish(natsMsg* msg, const jsPubOptions* options, PublishDone done);

 private:
  Publisher() = default;
  static void on_ack(jsCtx* js, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* self);

  jsCtx* js_ = nullptr;
  std::mutex mu_;
  // Keyed by the message: nats.c hands the same pointer back to on_ack.
  std::map<natsMsg*, PublishDone> pending_;
};

}  // namespace fnexec::cluster
