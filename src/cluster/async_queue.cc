#include "cluster/async_queue.h"

#include <fmt/format.h>

#include <chrono>

#include "cluster/retry.h"
#include "server/json.h"
#include "util/log.h"

namespace fnexec::cluster {

namespace {

constexpr int64_t kNanosPerMs = 1000000;
// How long a delivered event may stay unacked beyond its function's timeout before JetStream gives
// it to another node (the node that had it died): the record write and ack after the run.
constexpr std::chrono::milliseconds kAckMargin{5000};
// Events fetched at once per function, at most: each holds a slot of this node until it ran.
constexpr int kMaxBatch = 64;
// Longest a fetch waits for an event; it returns at once when one arrives.
constexpr int64_t kFetchWaitMs = 1000;
// Events and dead letters with the same id within this window are dropped by JetStream.
constexpr std::chrono::minutes kDuplicateWindow{10};

std::string invoke_subject(const std::string& function) {
  return "fnexec.invoke." + subject_token(function);
}
std::string durable_of(const std::string& function) {
  return "fn-" + subject_token(function);
}

std::string header(natsMsg* msg, const char* name) {
  const char* v = nullptr;
  return natslib().natsMsgHeader_Get(msg, name, &v) == NATS_OK && v ? v : "";
}

Result<> ensure_stream(Connection& conn, const char* name, const char* subject) {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr{};
  natsStatus s = natslib().js_GetStreamInfo(&si, conn.js(), name, nullptr, &jerr);
  if (s == NATS_OK) {
    natslib().jsStreamInfo_Destroy(si);
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

AsyncQueue::AsyncQueue(Connection& conn, Local& local, KvBucket results)
    : conn_(conn), local_(local), results_(std::move(results)) {}

Result<std::unique_ptr<AsyncQueue>> AsyncQueue::open(Connection& conn, Local& local, std::chrono::milliseconds result_ttl) {
  FNEXEC_TRY(ensure_stream(conn, kInvocationStream, "fnexec.invoke.*"));
  FNEXEC_TRY(ensure_stream(conn, kDeadLetterStream, "fnexec.dead.*"));
  auto results = FNEXEC_TRY(KvBucket::open(conn, kResultsBucket, result_ttl));
  return std::unique_ptr<AsyncQueue>(new AsyncQueue(conn, local, std::move(results)));
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
                                 const std::string& queued_record_json) {
  // The queued record goes first: a node may run the event and store its result before a later put.
  FNEXEC_TRY(results_.put(id, queued_record_json));
  natsMsg* msg = nullptr;
  auto subject = invoke_subject(function);
  if (auto s = natslib().natsMsg_Create(&msg, subject.c_str(), nullptr, event.data(), static_cast<int>(event.size()));
      s != NATS_OK)
    return nats_fail(s, "create event message", function);
  jsPubOptions po;
  natslib().jsPubOptions_Init(&po);
  po.MsgId = id.c_str();
  po.ExpectStream = kInvocationStream;
  jsPubAck* ack = nullptr;
  jsErrCode jerr{};
  natsStatus s = natslib().js_PublishMsg(&ack, conn_.js(), msg, &po, &jerr);
  natslib().natsMsg_Destroy(msg);
  if (s != NATS_OK) return nats_fail(s, "publish async event of function " + function, kInvocationStream);
  bool fresh = !ack->Duplicate;
  natslib().jsPubAck_Destroy(ack);
  return fresh;
}

Result<std::optional<std::string>> AsyncQueue::result(const std::string& id) {
  auto e = FNEXEC_TRY(results_.get(id));
  if (!e || e->deleted) return std::nullopt;
  return std::move(e->value);
}

void AsyncQueue::wake() {
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
  auto subject = invoke_subject(function);
  jsConsumerConfig cc;
  natslib().jsConsumerConfig_Init(&cc);
  cc.Durable = durable.c_str();
  cc.FilterSubject = subject.c_str();
  cc.AckPolicy = js_AckExplicit;
  cc.DeliverPolicy = js_DeliverAll;
  cc.AckWait = ack_wait.count() * kNanosPerMs;
  cc.MaxDeliver = static_cast<int64_t>(policy.max_deliveries());
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
  std::mutex wait_mu;
  while (!stop.stop_requested()) {
    uint32_t free = local_.free_async_slots(c.function);
    if (free == 0 || !conn_.connected()) {
      std::unique_lock lock(wait_mu);
      capacity_.wait_for(lock, stop, std::chrono::milliseconds(100), [] { return false; });
      continue;
    }
    natsMsgList list{};
    jsErrCode jerr{};
    natsStatus s = natslib().natsSubscription_Fetch(&list, c.sub, static_cast<int>(std::min<uint32_t>(free, kMaxBatch)),
                                          kFetchWaitMs, &jerr);
    if (s == NATS_TIMEOUT) continue;
    if (s != NATS_OK) {
      if (!stop.stop_requested())
        spdlog::debug("cluster: function={} fetch: {}", c.function, nats_fail(s, "fetch").error().message());
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    for (int i = 0; i < list.Count; ++i) {
      deliver(list.Msgs[i], c.function, c.policy.max_deliveries(), c.policy);
      list.Msgs[i] = nullptr;  // deliver() owns it now
    }
    natslib().natsMsgList_Destroy(&list);
  }
}

void AsyncQueue::deliver(natsMsg* msg, const std::string& function, uint64_t max_deliveries,
                         const RetryPolicy& policy) {
  Delivery d;
  d.function = function;
  d.id = header(msg, "Nats-Msg-Id");
  if (auto* data = natslib().natsMsg_GetData(msg)) d.event.assign(data, static_cast<size_t>(natslib().natsMsg_GetDataLength(msg)));
  d.max_deliveries = max_deliveries;
  jsMsgMetaData* meta = nullptr;
  if (natslib().natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
    d.delivery = meta->NumDelivered;
    d.queued_ms = meta->Timestamp / kNanosPerMs;
    natslib().jsMsgMetaData_Destroy(meta);
  }
  auto delay = policy.delay_after(d.delivery);
  d.retry_delay_ms = delay.count();
  local_.run_delivery(d, [this, msg, d, delay](DeliveryResult r) {
    bool last = r.success || d.delivery >= d.max_deliveries;
    // The record is stored before the ack: a node dying in between makes a duplicate, never a loss.
    if (auto w = results_.put(d.id, r.record_json); !w)
      spdlog::error("cluster: invocation={} result not stored: {}", d.id, w.error().message());
    if (!r.success && last)
      if (auto w = dead_letter(d, r); !w)
        spdlog::error("cluster: invocation={} dead letter not stored: {}", d.id, w.error().message());
    natsStatus s = last ? natslib().natsMsg_Ack(msg, nullptr) : natslib().natsMsg_NakWithDelay(msg, delay.count(), nullptr);
    if (s != NATS_OK)
      spdlog::warn("cluster: invocation={} {} failed: {} (it will be delivered again)", d.id,
                   last ? "ack" : "nak", natslib().natsStatus_GetText(s));
    natslib().natsMsg_Destroy(msg);
  });
}

Result<> AsyncQueue::dead_letter(const Delivery& d, const DeliveryResult& r) {
  auto subject = "fnexec.dead." + subject_token(d.function);
  natsMsg* msg = nullptr;
  if (auto s = natslib().natsMsg_Create(&msg, subject.c_str(), nullptr, d.event.data(), static_cast<int>(d.event.size()));
      s != NATS_OK)
    return nats_fail(s, "create dead letter", d.id);
  natslib().natsMsgHeader_Set(msg, "Fnexec-Invocation-Id", d.id.c_str());
  natslib().natsMsgHeader_Set(msg, "Fnexec-Function", d.function.c_str());
  natslib().natsMsgHeader_Set(msg, "Fnexec-Attempts", std::to_string(d.delivery).c_str());
  natslib().natsMsgHeader_Set(msg, "Fnexec-Outcome", r.outcome.c_str());
  natslib().natsMsgHeader_Set(msg, "Fnexec-Error", r.error.c_str());
  natslib().natsMsgHeader_Set(msg, "Fnexec-Error-Type", r.error_type.c_str());
  natslib().natsMsgHeader_Set(msg, "Fnexec-Queued-Ms", std::to_string(d.queued_ms).c_str());
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  natslib().natsMsgHeader_Set(msg, "Fnexec-Time-Ms", std::to_string(now).c_str());
  jsPubOptions po;
  natslib().jsPubOptions_Init(&po);
  po.MsgId = d.id.c_str();  // a node that dies before its ack makes no second dead letter
  jsPubAck* ack = nullptr;
  jsErrCode jerr{};
  natsStatus s = natslib().js_PublishMsg(&ack, conn_.js(), msg, &po, &jerr);
  natslib().natsMsg_Destroy(msg);
  if (s != NATS_OK) return nats_fail(s, "publish dead letter", kDeadLetterStream);
  natslib().jsPubAck_Destroy(ack);
  return {};
}

Result<std::string> AsyncQueue::dead_letters_json(const std::string& function, uint64_t limit) {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr{};
  if (auto s = natslib().js_GetStreamInfo(&si, conn_.js(), kDeadLetterStream, nullptr, &jerr); s != NATS_OK)
    return nats_fail(s, "read stream", kDeadLetterStream);
  uint64_t first = si->State.FirstSeq, last = si->State.LastSeq, count = si->State.Msgs;
  natslib().jsStreamInfo_Destroy(si);
  server::JsonWriter w;
  w.begin_object().key("dead_letters").begin_array();
  uint64_t listed = 0;
  for (uint64_t seq = first; count && seq <= last && listed < limit; ++seq) {
    natsMsg* msg = nullptr;
    natsStatus s = natslib().js_GetMsg(&msg, conn_.js(), kDeadLetterStream, seq, nullptr, &jerr);
    if (s == NATS_NOT_FOUND) continue;  // deleted
    if (s != NATS_OK) return nats_fail(s, "read dead letter", std::to_string(seq));
    auto fn = header(msg, "Fnexec-Function");
    // The subject names the function too (fnexec.dead.TOKEN), when js_GetMsg gives it.
    if (const char* subject = natslib().natsMsg_GetSubject(msg); fn.empty() && subject && *subject) {
      fn = subject;
      fn = fn.substr(fn.rfind('.') + 1);
      std::replace(fn.begin(), fn.end(), '~', '.');
    }
    if (function.empty() || fn == function) {
      auto num = [&](const char* h) { return static_cast<int64_t>(std::strtoll(header(msg, h).c_str(), nullptr, 10)); };
      w.begin_object().field("seq", seq).field("id", header(msg, "Fnexec-Invocation-Id")).field("function", fn);
      w.field("attempts", num("Fnexec-Attempts")).field("outcome", header(msg, "Fnexec-Outcome"));
      w.field("error", header(msg, "Fnexec-Error"));
      auto type = header(msg, "Fnexec-Error-Type");
      w.key("error_type");
      type.empty() ? w.null() : w.value(type);
      w.field("queued_ms", num("Fnexec-Queued-Ms")).field("time_ms", num("Fnexec-Time-Ms"));
      w.end_object();
      ++listed;
    }
    natslib().natsMsg_Destroy(msg);
  }
  w.end_array().end_object();
  return w.take();
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
