// JetStream publishes that do not wait on the caller's thread (js_PublishMsgAsync): the server's ack
// (or error, or MaxWait timeout) calls `done` on nats.c's thread. Several publishes in flight share
// one round trip's wait, which is what lets an enqueue and a worker's result write stay off the
// critical path (docs/ARCHITECTURE.md "Cluster", measured in bench/cluster-async.sh).
#pragma once

#include <nats/nats.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "cluster/connection.h"

namespace fnexec::cluster {

// What the server answered: the ack's duplicate flag, or the error (its JetStream code in `code`).
struct Published {
  bool duplicate = false;
};
// JetStream's "wrong last sequence" (JSStreamWrongLastSequenceErr), which nats.c 3.4 does not name.
inline constexpr int kWrongLastSequence = 10071;
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
  // publish(), where a failure (the stream elects a leader after a NATS server died, no ack in
  // time, not connected) is sent again after a backoff until `until`; done sees the last error
  // only then. A failed expectation (kWrongLastSequence) is final. options are copied and kept for
  // the retries, so they must not point anywhere (no MsgId, no Expect*Stream/Id). For writes that
  // must land, e.g. an async result before its ack.
  void publish_until(natsMsg* msg, const jsPubOptions* options, std::chrono::steady_clock::time_point until,
                     PublishDone done);

 private:
  struct Pending {
    PublishDone done;
    std::optional<std::chrono::steady_clock::time_point> until;  // publish_until: sent again until then
    std::chrono::milliseconds backoff{100};
    jsPubOptions options{};  // publish_until's, for its retries
  };
  Publisher() = default;
  static void on_ack(jsCtx* js, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* self);
  void send(natsMsg* msg, const jsPubOptions& options, Pending pending);
  // Under mu_: queues msg to be sent again if its deadline allows (it stays ours), else false.
  bool retry_later(natsMsg* msg, Pending& pending);
  void retry_loop(std::stop_token stop);

  jsCtx* js_ = nullptr;
  std::mutex mu_;
  // Keyed by the message: nats.c hands the same pointer back to on_ack.
  std::map<natsMsg*, Pending> pending_;
  // publish_until's messages waiting for their next try, by when; under mu_.
  std::multimap<std::chrono::steady_clock::time_point, std::pair<natsMsg*, Pending>> retries_;
  bool stopping_ = false;  // under mu_: the destructor runs, failures are final
  std::condition_variable_any retry_cv_;
  std::jthread retry_thread_;
};

}  // namespace fnexec::cluster
