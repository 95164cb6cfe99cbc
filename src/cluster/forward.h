// Sync forwarding (docs/ARCHITECTURE.md "Cluster"): a sync invocation that finds no capacity on its
// node goes over NATS request-reply to the queue group of the nodes that serve its function; the node
// that admits it runs it and answers with the run. A forwarded request is only ever run or refused
// where it lands, never forwarded again, and sent again only after a node refused it (so it runs at
// most once). The node running it says "alive" every second, so a caller whose node died learns it.
#pragma once

#include <nats/nats.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/connection.h"
#include "cluster/local.h"

namespace fnexec::cluster {

class AsyncQueue;

// How long a caller looks for a node with a free slot (refusals are retried until then), then 429.
inline constexpr std::chrono::milliseconds kForwardWait{1000};
// A node running a forwarded invocation that stays silent this long is taken for dead.
inline constexpr std::chrono::milliseconds kForwardSilence{3000};

// The answer of the node that ran a forwarded invocation.
struct ForwardReply {
  std::string node;  // which node ran it
  std::string run;   // Local::run_forwarded's bytes
};

class SyncForwarder {
 public:
  // A forwarded invocation run here has its record put into queue's results bucket, so
  // GET /v1/invocations/{id} finds it on every node.
  static Result<std::unique_ptr<SyncForwarder>> open(Connection& conn, Local& local, AsyncQueue& queue,
                                                     std::string node);
  ~SyncForwarder();
  SyncForwarder(const SyncForwarder&) = delete;
  SyncForwarder& operator=(const SyncForwarder&) = delete;

  // After a registry change: joins the function's queue group while this node has it, leaves it after.
  void follow(const std::string& function);
  // Sends the event, with its caller's context in headers (event_context.h), to a node of the
  // function's queue group; done is called once, on a nats.c or
  // forwarder thread: the run, or ErrorKind::unavailable (no node took it within kForwardWait, or
  // no NATS), too_large (over NATS max_payload, not sent), protocol (the node that took it went
  // silent or stayed past timeout: it may have run).
  void forward(const std::string& function, std::string event, invoke::EventContext context,
               std::chrono::milliseconds timeout, std::function<void(Result<ForwardReply>)> done);

 private:
  struct Call;
  struct Served;
  struct Group;
  SyncForwarder(Connection& conn, Local& local, AsyncQueue& queue, std::string node);
  static void on_request(natsConnection*, natsSubscription*, natsMsg* msg, void* closure);
  static void on_reply(natsConnection*, natsSubscription*, natsMsg* msg, void* closure);
  void serve(const std::string& function, natsMsg* msg);
  void answer_parts(const std::string& reply_to, const std::string& function, const std::string& run);
  void answer(natsMsg* msg);
  Result<> send(Call& call);
  void tick(std::stop_token stop);

  Connection& conn_;
  Local& local_;
  AsyncQueue& queue_;
  std::string node_;
  std::string inbox_;  // this node's reply prefix: INBOX.<id> per call
  std::unique_ptr<Group> replies_;  // INBOX.*: every reply to this node's calls

  std::mutex mu_;
  std::condition_variable_any wake_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::unique_ptr<Call>> calls_;      // forwarded by this node, waiting
  std::map<uint64_t, std::string> served_;               // run here for others: their reply subjects
  std::map<std::string, std::unique_ptr<Group>> groups_;  // function → its queue subscription
  std::jthread ticker_;
};

}  // namespace fnexec::cluster
