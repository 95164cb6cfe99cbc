#include "cluster/async_queue.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <chrono>

#include "cluster/event_context.h"
#include "cluster/publisher.h"
#include "cluster/retry.h"
#include "cluster/settle.h"
#include "util/log.h"

namespace fnexec::cluster {

namespace {

constexpr int64_t kNanosPerMs = 1000000;
// How long a delivered event may stay unacked beyond its function's timeout before JetStream gives
// it to another node (the node that had it died): the record write and ack after the run.
constexpr std::chrono::milliseconds kAckMargin{5000};
// A result write is retried until this long before AckWait ends (counted from the fetch, which
// comes a little after JetStream's delivery), so a redelivery never races the first run's write.
constexpr std::chrono::milliseconds kResultRetryMargin{2000};
// Events fetched at once per function, at most: each holds a slot of this node until it ran.
constexpr int kMaxBatch = 64;
// Longest a fetch waits for an event; it returns at once when one arrives.
constexpr int64_t kFetchWaitMs = 1000;
// Events and dead letters with the same id within this window are dropped by JetStream.
constexpr std::chrono::minutes kDuplicateWindow{10};
// A forwarded sync call's record (store_record) is sent again this long.
constexpr std::chrono::seconds kStoredRecordRetry{60};
constexpr const char* kInvokePrefix = "fnexec.invoke.";
// A fetch thread with no free slot looks again after this even without wake(): a sync invocation's
// end frees a slot without waking it.
constexpr std::chrono::milliseconds kCapacityPoll{50};

// One subject per event, so that GET /v1/invocations/{id} finds a queued event by its subject.
std::string invoke_subject(const std::string& function, const std::string& id) {
  return kInvokePrefix + subject_token(function) + "." + id;
}
std::string invoke_filter(const std::string& function) {
  return kInvokePrefix + subject_token(function) + ".*";
}
std::string durable_of(const std::string& function) {
  return "fn-" + subject_token(function);
}

Result<> ensure_stream(Connection& conn, const char* name, const char* subject) {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr{};
  natsStatus s = natslib().js_GetStreamInfo(&si, conn.js(), name, nullptr, &jerr);
  if (s == NATS_OK) {
    bool ours = si->Config && si->Config->SubjectsLen == 1 && std::string_view(si->Config->Subjects[0]) == subject;
    std::string had = si->Config && si->Config->SubjectsLen > 0 ? si->Config->Subjects[0] : "";
    natslib().jsStreamInfo_Destroy(si);
    if (!ours)
      return fail(ErrorKind::invalid, "use stream", name,
                  fmt::format("it has subject '{}' where this fnexec uses '{}' (made by an older fnexec?); "
                              "delete it (nats stream rm {}) when no event in it is needed",
                              had, subject, name));
    return {};
  }
  if (s != NATS_NOT_FOUND) return nats_fail(s, "look up stream", name);
  jsStreamConfig cfg;
  natslib().jsStreamConfig_Init(&cfg);
  const char* subjects[] = {subject};
  cfg.Name = name;
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  // Work queue: an event is gone from the stream once acked; dead letters stay until deleted.
  cfg.Retention = std::string_view(name) == kInvocationStream ? js_WorkQueuePolicy : js_LimitsPolicy;
  cfg.Storage = js_FileStorage;
  cfg.Replicas = conn.replicas();
  cfg.Duplicates = std::chrono::duration_cast<std::chrono::nanoseconds>(kDuplicateWindow).count();
  s = natslib().js_AddStream(&si, conn.js(), &cfg, nullptr, &jerr);
  if (s == NATS_OK) {
    natslib().jsStreamInfo_Destroy(si);
    return {};
  }
  // Another node created it meanwhile.
  if (natslib().js_GetStreamInfo(&si, conn.js(), name, nullptr, &jerr) == NATS_OK) {
    natslib().jsStreamInfo_Destroy(si);
    return {};
  }
  return nats_fail(s, "create stream", name);
}

}  // namespace

std::optional<RecordState> record_state(std::string_view record_json) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(record_json);
  simdjson::dom::element doc;
  std::string_view status;
  if (parser.parse(padded).get(doc) || doc["status"].get(status)) return std::nullopt;
  RecordState out;
  out.done = status == "done";
  if (uint64_t delivery; !doc["delivery"].get(delivery)) out.delivery = delivery;
  if (int64_t queued; !doc["queued_ms"].get(queued)) out.queued_ms = queued;
  return out;
}

std::string result_subject(const std::string& id) {
  return fmt::format("$KV.{}.{}", kResultsBucket, id);
}

std::string subject_token(const std::string& function) {
  std::string t = function;
  std::replace(t.begin(), t.end(), '.', '~');
  return t;
}

struct AsyncQueue::Consumer {
  std::string function;
  natsSubscription* sub = nullptr;
  std::chrono::milliseconds ack_wait{0};
  RetryPolicy policy;
  std::jthread thread;
  ~Consumer() {
    thread.request_stop();
    if (thread.joinable()) thread.join();
    if (sub) natslib().natsSubscription_Destroy(sub);
  }
};

AsyncQueue::AsyncQueue(Connection& conn, Local& local, KvBucket results, std::unique_ptr<Publisher> publisher)
    : conn_(conn), local_(local), results_(std::move(results)), publisher_(std::move(publisher)), dead_letters_(conn) {}

Result<std::unique_ptr<AsyncQueue>> AsyncQueue::open(Connection& conn, Local& local, std::chrono::milliseconds result_ttl) {
  FNEXEC_TRY(ensure_stream(conn, kInvocationStream, "fnexec.invoke.*.*"));
  FNEXEC_TRY(ensure_stream(conn, kDeadLetterStream, "fnexec.dead.*"));
  auto results = FNEXEC_TRY(KvBucket::open(conn, kResultsBucket, result_ttl));
  auto publisher = FNEXEC_TRY(Publisher::open(conn));
  return std::unique_ptr<AsyncQueue>(new AsyncQueue(conn, local, std::move(results), std::move(publisher)));
}

AsyncQueue::~AsyncQueue() {
  std::map<std::string, std::unique_ptr<Consumer>> consumers;
  {
    std::lock_guard lock(mu_);
    consumers.swap(consumers_);
    for (auto& [_, c] : consumers) c->thread.request_stop();
  }
  capacity_.notify_all();
  consumers.clear();  // joins each fetch thread
}

Result<bool> AsyncQueue::enqueue(const std::string& function, const std::string& id, std::string_view event,
                                 const invoke::EventContext& context) {
  // Only the event: a queued record in the results bucket cost a second publish and its ack per
  // event (docs/ARCHITECTURE.md "Cluster": messages per event); lookup() reads the stream instead.
  struct Ack {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<std::expected<Published, PublishError>> result;
  };
  auto ack = std::make_shared<Ack>();
  natsMsg* msg = nullptr;
  auto subject = invoke_subject(function, id);
  if (auto s = natslib().natsMsg_Create(&msg, subject.c_str(), nullptr, event.data(), static_cast<int>(event.size()));
      s != NATS_OK)
    return nats_fail(s, "create event message", function);
  set_context_headers(msg, context);
  jsPubOptions po;
  natslib().jsPubOptions_Init(&po);
  po.MsgId = id.c_str();
  po.ExpectStream = kInvocationStream;
  publisher_->publish(msg, &po, [ack](std::expected<Published, PublishError> r) {
    std::lock_guard lock(ack->mu);
    ack->result = std::move(r);
    ack->cv.notify_all();
  });
  std::unique_lock lock(ack->mu);
  ack->cv.wait(lock, [&] { return ack->result.has_value(); });
  if (!*ack->result) {
    const auto& e = ack->result->error().error;
    return fail(e.kind, "publish async event of function " + function, kInvocationStream, e.message());
  }
  return !(*ack->result)->duplicate;
}

Result<bool> AsyncQueue::enqueued(const std::string& id) {
  auto found = FNEXEC_TRY(lookup(id));
  // A record: a node ran it (done, or queued for its next delivery), so it was in the stream.
  return found.record || found.queued;
}

void AsyncQueue::store_record(const std::string& id, std::string_view record_json) {
  natsMsg* record = nullptr;
  auto subject = result_subject(id);
  if (auto s = natslib().natsMsg_Create(&record, subject.c_str(), nullptr, record_json.data(),
                                        static_cast<int>(record_json.size()));
      s != NATS_OK) {
    spdlog::warn("cluster: invocation={} record not stored: {}", id, natslib().natsStatus_GetText(s));
    return;
  }
  publisher_->publish_until(record, nullptr, std::chrono::steady_clock::now() + kStoredRecordRetry,
                            [id](std::expected<Published, PublishError> r) {
                              if (!r)
                                spdlog::warn("cluster: invocation={} record not stored: {}", id,
                                             r.error().error.message());
                            });
}

Result<std::optional<std::string>> AsyncQueue::result(const std::string& id) {
  auto e = FNEXEC_TRY(results_.get(id));
  if (!e || e->deleted) return std::nullopt;
  return std::move(e->value);
}

Result<std::optional<QueuedEvent>> AsyncQueue::queued(const std::string& id) {
  // Any function's subject of this id; the stream keeps an index per subject, so this is one read.
  auto subject = kInvokePrefix + std::string("*.") + id;
  natsMsg* msg = nullptr;
  jsErrCode jerr{};
  natsStatus s = natslib().js_GetLastMsg(&msg, conn_.js(), kInvocationStream, subject.c_str(), nullptr, &jerr);
  if (s == NATS_NOT_FOUND) return std::nullopt;
  if (s != NATS_OK) return nats_fail(s, "look up queued event " + id, kInvocationStream);
  std::string_view token = natslib().natsMsg_GetSubject(msg);
  token.remove_prefix(std::min(token.size(), std::string_view(kInvokePrefix).size()));
  token = token.substr(0, token.rfind('.'));
  QueuedEvent out{std::string(token), natslib().natsMsg_GetTime(msg) / kNanosPerMs};
  std::replace(out.function.begin(), out.function.end(), '~', '.');
  natslib().natsMsg_Destroy(msg);
  return out;
}

Result<InvocationLookup> AsyncQueue::lookup(const std::string& id) {
  InvocationLookup out;
  // An id from a request path could hold a NATS wildcard or token separator and name another
  // event's key or subject; enqueued ids never do (a-z 0-9 - _).
  if (id.empty() || id.find_first_of(".*> \t\r\n") != std::string::npos) return out;
  if ((out.record = FNEXEC_TRY(result(id)))) return out;
  if ((out.queued = FNEXEC_TRY(queued(id)))) return out;
  // It may have run and been acked (removed) between the two reads; its record was stored first.
  out.record = FNEXEC_TRY(result(id));
  return out;
}

void AsyncQueue::wake() {
  {
    std::lock_guard lock(mu_);
    ++wakes_;
  }
  capacity_.notify_all();
}

void AsyncQueue::follow(const std::string& function) {
  auto spec = local_.function_spec(function);
  std::unique_ptr<Consumer> old;
  std::lock_guard lock(mu_);
  auto it = consumers_.find(function);
  if (!spec) {
    if (it != consumers_.end()) {
      old = std::move(it->second);
      consumers_.erase(it);
      old->thread.request_stop();
    }
    return;
  }
  auto policy = retry_policy(*spec);
  auto ack_wait = spec->timeout + kAckMargin;
  if (it != consumers_.end() && it->second->ack_wait == ack_wait &&
      it->second->policy == policy)
    return;
  if (it != consumers_.end()) {
    old = std::move(it->second);
    consumers_.erase(it);
    old->thread.request_stop();
  }
  auto durable = durable_of(function);
  auto subject = invoke_filter(function);
  jsConsumerConfig cc;
  natslib().jsConsumerConfig_Init(&cc);
  cc.Durable = durable.c_str();
  cc.FilterSubject = subject.c_str();
  cc.AckPolicy = js_AckExplicit;
  cc.DeliverPolicy = js_DeliverAll;
  cc.AckWait = ack_wait.count() * kNanosPerMs;
  // Unlimited: a node settles a delivery past the policy itself (deliver()), so an event whose last
  // ack or write was lost is not left in the stream unacked once JetStream's count runs out.
  cc.MaxDeliver = -1;
  cc.MaxAckPending = 100000;
  jsConsumerInfo* ci = nullptr;
  jsErrCode jerr{};
  natsStatus s = natslib().js_AddConsumer(&ci, conn_.js(), kInvocationStream, &cc, nullptr, &jerr);
  // Every node adds the same consumer; a changed function (timeout, retries) updates it.
  if (s != NATS_OK) s = natslib().js_UpdateConsumer(&ci, conn_.js(), kInvocationStream, &cc, nullptr, &jerr);
  if (s != NATS_OK) {
    spdlog::error("cluster: function={} consumer {} not created: {}", function, durable,
                  nats_fail(s, "create consumer").error().message());
    return;
  }
  natslib().jsConsumerInfo_Destroy(ci);
  jsSubOptions so;
  natslib().jsSubOptions_Init(&so);
  so.Stream = kInvocationStream;
  so.Consumer = durable.c_str();
  auto c = std::make_unique<Consumer>();
  c->function = function;
  c->ack_wait = ack_wait;
  c->policy = policy;
  if (s = natslib().js_PullSubscribe(&c->sub, conn_.js(), subject.c_str(), durable.c_str(), nullptr, &so, &jerr); s != NATS_OK) {
    spdlog::error("cluster: function={} pull subscription failed: {}", function,
                  nats_fail(s, "subscribe").error().message());
    return;
  }
  auto* raw = c.get();
  c->thread = std::jthread([this, raw](std::stop_token st) { fetch_loop(*raw, st); });
  spdlog::info("cluster: function={} consuming {} (ack_wait={}ms max_deliver={})", function, durable,
               ack_wait.count(), policy.max_deliveries());
  consumers_[function] = std::move(c);
}

void AsyncQueue::fetch_loop(Consumer& c, std::stop_token stop) {
  while (!stop.stop_requested()) {
    uint64_t seen;
    {
      std::lock_guard lock(mu_);
      seen = wakes_;
    }
    uint32_t free = local_.free_async_slots(c.function);
    if (free == 0 || !conn_.connected()) {
      // Until a slot is freed (wake() counts up) or kCapacityPoll passed; a wake() between the
      // look at the slots and this wait is not lost, since the count moved.
      std::unique_lock lock(mu_);
      capacity_.wait_for(lock, stop, kCapacityPoll, [&] { return wakes_ != seen; });
      continue;
    }
    natsMsgList list{};
    // One pull request per fetch: with no_wait and expires together JetStream answers as soon as it
    // has any event (up to the batch) and waits up to expires when it has none. natsSubscription_Fetch
    // sent a no_wait request first and, when it found nothing, a second one that waits.
    jsFetchRequest req;
    natslib().jsFetchRequest_Init(&req);
    req.Batch = static_cast<int>(std::min<uint32_t>(free, kMaxBatch));
    req.Expires = kFetchWaitMs * kNanosPerMs;
    req.NoWait = true;
    natsStatus s = natslib().natsSubscription_FetchRequest(&list, c.sub, &req);
    if (s == NATS_TIMEOUT || s == NATS_NOT_FOUND) continue;
    if (s != NATS_OK) {
      if (!stop.stop_requested())
        spdlog::debug("cluster: function={} fetch: {}", c.function, nats_fail(s, "fetch").error().message());
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    for (int i = 0; i < list.Count; ++i) {
      deliver(list.Msgs[i], c.function, c.policy.max_deliveries(), c.policy, c.ack_wait);
      list.Msgs[i] = nullptr;  // deliver() owns it now
    }
    natslib().natsMsgList_Destroy(&list);
  }
}

void AsyncQueue::deliver(natsMsg* msg, const std::string& function, uint64_t max_deliveries,
                         const RetryPolicy& policy, std::chrono::milliseconds ack_wait) {
  // The result write is tried again until shortly before JetStream would give the event to
  // another node: storing it late beats running the event twice.
  auto store_until = std::chrono::steady_clock::now() + ack_wait - kResultRetryMargin;
  Delivery d;
  d.function = function;
  d.id = msg_header(msg, "Nats-Msg-Id");
  if (auto* data = natslib().natsMsg_GetData(msg)) d.event.assign(data, static_cast<size_t>(natslib().natsMsg_GetDataLength(msg)));
  d.context = context_from_headers(msg);
  d.max_deliveries = max_deliveries;
  jsMsgMetaData* meta = nullptr;
  if (natslib().natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
    d.delivery = meta->NumDelivered;
    d.queued_ms = meta->Timestamp / kNanosPerMs;
    natslib().jsMsgMetaData_Destroy(meta);
  }
  if (d.delivery > 1 && ack_if_done(msg, d)) return;
  if (d.delivery > max_deliveries) {
    // The last allowed delivery did not store its end: its node died, or NATS refused its writes
    // until AckWait. Its retries are spent, so it ends here as lost, in the dead letters, unrun.
    DeliveryResult lost;
    lost.outcome = "lost";
    lost.error = fmt::format("delivery {} of {} did not finish: the node running it stopped, or could not store "
                             "its result within AckWait",
                             max_deliveries, max_deliveries);
    lost.record_json = local_.lost_delivery_record(d, lost.error);
    spdlog::warn("cluster: invocation={} delivery={}: {}; dead-lettered", d.id, d.delivery, lost.error);
    return settle_delivery(*publisher_, dead_letters_, msg, d, lost, {}, store_until);
  }
  auto delay = policy.delay_after(d.delivery);
  d.retry_delay_ms = delay.count();
  // The ack (or nak) goes once the record (and dead letter) are stored: a node dying in between
  // makes a duplicate, never a loss. The writes do not hold this invocation thread (and its slot).
  local_.run_delivery(d, [this, msg, d, delay, store_until](DeliveryResult r) {
    settle_delivery(*publisher_, dead_letters_, msg, d, r, delay, store_until);
  });
}

bool AsyncQueue::ack_if_done(natsMsg* msg, const Delivery& d) {
  // Its ack was lost after its result was stored: it went out through a NATS server that died, or
  // while the consumer elected a leader. Only redeliveries pay this read; the first run has none.
  auto record = result(d.id);
  if (!record && d.delivery > d.max_deliveries) {
    // Settling it as lost could overwrite a result stored after all: the next delivery looks again.
    spdlog::warn("cluster: invocation={} delivery={}: cannot read its result ({}); left for the next delivery", d.id,
                 d.delivery, record.error().message());
    natslib().natsMsg_Destroy(msg);
    return true;
  }
  if (!record) {
    spdlog::warn("cluster: invocation={} delivery={}: cannot read its result ({}); running it", d.id, d.delivery,
                 record.error().message());
    return false;
  }
  auto state = *record ? record_state(**record) : std::nullopt;
  if (!state || !state->done) return false;
  // Waits for JetStream's answer: a lost ack here would bring it once more after AckWait.
  jsErrCode jerr{};
  natsStatus s = natslib().natsMsg_AckSync(msg, nullptr, &jerr);
  if (s == NATS_OK)
    spdlog::info("cluster: invocation={} delivery={}: done already (delivery {}), acked without running it again",
                 d.id, d.delivery, state->delivery);
  else
    spdlog::warn("cluster: invocation={} delivery={}: done already, ack failed: {} (it comes once more)", d.id,
                 d.delivery, nats_fail(s, "ack").error().message());
  natslib().natsMsg_Destroy(msg);
  return true;
}

Result<uint64_t> AsyncQueue::pending() {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr{};
  if (auto s = natslib().js_GetStreamInfo(&si, conn_.js(), kInvocationStream, nullptr, &jerr); s != NATS_OK)
    return nats_fail(s, "read stream", kInvocationStream);
  uint64_t n = si->State.Msgs;
  natslib().jsStreamInfo_Destroy(si);
  return n;
}

}  // namespace fnexec::cluster
