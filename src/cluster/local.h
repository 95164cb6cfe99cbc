// What the cluster asks of the daemon it runs in; the Service implements it. Calls come from the
// cluster's own threads and must not block on sandboxes: long work goes to the daemon's executors.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "pool/pool.h"

namespace fnexec::cluster {

// One delivery of an async event from the invocation stream.
struct Delivery {
  std::string function;
  std::string id;             // the invocation id = the message's Nats-Msg-Id
  std::string event;
  invoke::EventContext context;  // the Lambda caller's, from the message's headers (event_context.h)
  uint64_t delivery = 1;      // 1-based (JetStream's NumDelivered)
  uint64_t max_deliveries = 1;  // retries + 1
  int64_t queued_ms = 0;      // when it was enqueued (the stream's timestamp)
  int64_t retry_delay_ms = 0;  // the wait before the next delivery if this one fails
};

// What running it gave.
struct DeliveryResult {
  bool success = false;
  std::string outcome;      // success | error | timeout | ... | failed
  std::string error;        // the failure message, "" on success
  std::string error_type;   // Function.Error, Runtime.ExitError, ... ("" if none)
  std::string record_json;  // the finished record as GET /v1/invocations/{id} shows it, delivery included
};

// run_forwarded's answer: the run encoded for the caller; then, after the caller's reply went out,
// record() builds its record for the results bucket (called at most once, inside the callback).
using ForwardedDone =
    std::function<void(std::string run, const std::string& id, const std::function<std::string()>& record)>;

class Local {
 public:
  virtual ~Local() = default;
  // The registry: a document from the cluster bucket (function_spec_json form) or a deletion.
  virtual void apply_cluster_function(const std::string& name, const std::string& spec_json) = 0;
  virtual void remove_cluster_function(const std::string& name) = 0;
  virtual std::vector<std::string> local_function_names() = 0;
  virtual std::optional<pool::FunctionSpec> function_spec(const std::string& name) = 0;
  // Async slots the function has free now (max_concurrency and the daemon cap; 0 if not ready).
  virtual uint32_t free_async_slots(const std::string& name) = 0;
  // Takes a slot and runs d on an invocation thread; done is called there, the slot freed after it.
  virtual void run_delivery(Delivery d, std::function<void(DeliveryResult)> done) = 0;
  // The record of an event whose last delivery never stored its end (its node died): done, outcome
  // lost, with error, as GET /v1/invocations/{id} shows it. Nothing runs.
  virtual std::string lost_delivery_record(const Delivery& d, const std::string& error) = 0;
  // Sync forwarding (cluster/forward.h): a sync invocation another node had no capacity for.
  // admit_forwarded takes a slot (nullopt) or says why not; run_forwarded runs it on an invocation
  // thread as a local sync invocation (never forwarding it again) with its caller's context, frees
  // the slot and calls done with the run encoded for the caller and its record.
  virtual std::optional<std::string> admit_forwarded(const std::string& function) = 0;
  virtual void run_forwarded(const std::string& function, std::string event, invoke::EventContext context,
                             ForwardedDone done) = 0;
  // This node's capacity and pools, a JSON object for its heartbeat.
  virtual std::string node_status_json() = 0;
};

}  // namespace fnexec::cluster
