// Async invocations through JetStream: stream FNEXEC_INVOCATIONS (work-queue retention, subject
// fnexec.invoke.<function>.<id>), one durable pull consumer per function shared by every node, results
// in the KV bucket fnexec-results (with a TTL), dead letters in stream FNEXEC_DEAD_LETTERS.
// Each node fetches only as many events as it has free slots, so work goes where there is capacity.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "cluster/dead_letters.h"
#include "cluster/kv.h"
#include "cluster/local.h"

namespace fnexec::cluster {

class Publisher;

inline constexpr const char* kInvocationStream = "FNEXEC_INVOCATIONS";
inline constexpr const char* kResultsBucket = "fnexec-results";

// A function name as one subject token and consumer name: '.' (allowed in names) separates tokens
// in NATS, so it becomes '~' (not allowed in names, so no two names collide).
std::string subject_token(const std::string& function);
// The subject a put of invocation id's record in the results bucket goes to.
std::string result_subject(const std::string& id);

// The fields of a stored record (results bucket) that decide a client's retry and a redelivery.
struct RecordState {
  bool done = false;      // status "done": the event ran to its end (success, or its last failure)
  uint64_t delivery = 1;  // the delivery that ran, or the next one of a queued retry
  int64_t queued_ms = 0;
};
// nullopt for a record that is not JSON with a status.
std::optional<RecordState> record_state(std::string_view record_json);

// An event in the invocation stream that no node has stored a record of yet.
struct QueuedEvent {
  std::string function;
  int64_t queued_ms = 0;  // the stream's timestamp of its publish
};
// What the cluster knows of an invocation id: its stored record, else its event still in the stream.
struct InvocationLookup {
  std::optional<std::string> record;
  std::optional<QueuedEvent> queued;
};

class AsyncQueue {
 public:
  static Result<std::unique_ptr<AsyncQueue>> open(Connection& conn, Local& local, std::chrono::milliseconds result_ttl);
  ~AsyncQueue();

  // Publishes the event on its own subject with id as its Nats-Msg-Id (JetStream drops a second
  // publish of the same id within the duplicate window) and its caller's context in headers
  // (event_context.h), and waits for JetStream's ack. Returns false for a duplicate. No record is
  // written: until a node stores one, lookup() finds the event in the stream.
  Result<bool> enqueue(const std::string& function, const std::string& id, std::string_view event,
                       const invoke::EventContext& context = {});
  // A client's retry of an enqueue with its own id: true when a record is stored or the event is in
  // the stream, so nothing is published again. False when neither is (the first publish failed,
  // e.g. the stream had no leader for seconds after a NATS server died): enqueue() sends it again,
  // which JetStream drops if the first one was stored after all (same Nats-Msg-Id).
  Result<bool> enqueued(const std::string& id);
  // Puts a record into the results bucket without waiting (a forwarded sync invocation's, so GET
  // /v1/invocations/{id} finds it on every node); a refused put is sent again for up to a minute.
  void store_record(const std::string& id, std::string_view record_json);
  // The record of an async invocation of any node, as GET /v1/invocations/{id} shows it.
  Result<std::optional<std::string>> result(const std::string& id);
  // The record, else the event waiting in the stream (one direct read by its subject). The record is
  // read again after a miss in the stream: a node stores it before the ack removes the event.
  Result<InvocationLookup> lookup(const std::string& id);
  // After a registry change: creates or updates the function's consumer and its fetch thread, or
  // stops the thread of a deleted function (the durable consumer stays for the other nodes).
  void follow(const std::string& function);
  // A slot was freed: fetch threads waiting for capacity look again now.
  void wake();
  // GET/DELETE /v1/dead-letters[/{id}[/replay]] in cluster mode.
  DeadLetters& dead_letters() { return dead_letters_; }
  // Events waiting in the stream (GET /v1/cluster).
  Result<uint64_t> pending();

 private:
  struct Consumer;
  AsyncQueue(Connection& conn, Local& local, KvBucket results, std::unique_ptr<Publisher> publisher);
  void fetch_loop(Consumer& c, std::stop_token stop);
  void deliver(natsMsg* msg, const std::string& function, uint64_t max_deliveries, const struct RetryPolicy& policy,
               std::chrono::milliseconds ack_wait);
  // A redelivery of an event whose result is stored: acked (and true), not run again. True too for a
  // delivery past the policy whose result cannot be read: left unacked for the next one.
  bool ack_if_done(natsMsg* msg, const Delivery& d);
  Result<std::optional<QueuedEvent>> queued(const std::string& id);

  Connection& conn_;
  Local& local_;
  KvBucket results_;
  std::unique_ptr<Publisher> publisher_;  // before consumers_: their deliveries publish until joined
  DeadLetters dead_letters_;
  std::mutex mu_;
  std::condition_variable_any capacity_;
  uint64_t wakes_ = 0;  // wake() calls, under mu_
  std::map<std::string, std::unique_ptr<Consumer>> consumers_;
};

}  // namespace fnexec::cluster
