#include "cluster/publisher.h"

#include <fmt/format.h>

namespace fnexec::cluster {

namespace {
// How long an ack may take before done gets a timeout (the caller decides: retry, nak, fail).
constexpr int64_t kAckWaitMs = 5000;
// publish_until's backoff doubles up to this: a JetStream leader election takes seconds.
constexpr std::chrono::milliseconds kMaxRetryBackoff{1000};

// The caller's options, or nats.c's defaults.
jsPubOptions options_or_defaults(const jsPubOptions* options) {
  jsPubOptions po;
  if (options) {
    po = *options;
  } else {
    natslib().jsPubOptions_Init(&po);
  }
  return po;
}

std::unexpected<PublishError> not_sent(natsStatus s, natsMsg* msg) {
  return std::unexpected(PublishError{nats_fail(s, "publish to", natslib().natsMsg_GetSubject(msg)).error(), {}});
}
}  // namespace

Result<std::unique_ptr<Publisher>> Publisher::open(Connection& conn) {
  std::unique_ptr<Publisher> p(new Publisher());
  jsOptions jo;
  natslib().jsOptions_Init(&jo);
  jo.Wait = kAckWaitMs;
  jo.PublishAsync.AckHandler = on_ack;
  jo.PublishAsync.AckHandlerClosure = p.get();
  // Bounded: a publish beyond this many waits (StallWait) instead of growing memory without limit.
  jo.PublishAsync.MaxPending = 4096;
  if (auto s = natslib().natsConnection_JetStream(&p->js_, conn.nats(), &jo); s != NATS_OK)
    return nats_fail(s, "open JetStream context for asynchronous publishes");
  p->retry_thread_ = std::jthread([raw = p.get()](std::stop_token stop) { raw->retry_loop(stop); });
  return p;
}

Publisher::~Publisher() {
  std::multimap<std::chrono::steady_clock::time_point, std::pair<natsMsg*, Pending>> unsent;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  if (retry_thread_.joinable()) {
    retry_thread_.request_stop();
    retry_thread_.join();
  }
  {
    std::lock_guard lock(mu_);
    unsent.swap(retries_);
  }
  for (auto& [_, entry] : unsent) {
    auto& [msg, pending] = entry;
    pending.done(not_sent(NATS_CONNECTION_CLOSED, msg));
    natslib().natsMsg_Destroy(msg);
  }
  if (!js_) return;
  jsPubOptions po;
  natslib().jsPubOptions_Init(&po);
  po.MaxWait = kAckWaitMs;
  natslib().js_PublishAsyncComplete(js_, &po);
  natslib().jsCtx_Destroy(js_);
  // Acks that never came (NATS gone): their callers learn it now.
  std::map<natsMsg*, Pending> left;
  {
    std::lock_guard lock(mu_);
    left.swap(pending_);
  }
  for (auto& [_, pending] : left)
    pending.done(std::unexpected(PublishError{nats_fail(NATS_TIMEOUT, "wait for a JetStream ack").error(), {}}));
}

void Publisher::publish(natsMsg* msg, const jsPubOptions* options, PublishDone done) {
  send(msg, options_or_defaults(options), Pending{std::move(done), std::nullopt});
}

void Publisher::publish_until(natsMsg* msg, const jsPubOptions* options, std::chrono::steady_clock::time_point until,
                              PublishDone done) {
  auto po = options_or_defaults(options);
  send(msg, po, Pending{std::move(done), until, {}, po});
}

void Publisher::send(natsMsg* msg, const jsPubOptions& options, Pending pending) {
  jsPubOptions po = options;
  if (po.MaxWait == 0) po.MaxWait = kAckWaitMs;
  {
    std::lock_guard lock(mu_);
    pending_.emplace(msg, std::move(pending));
  }
  natsMsg* owned = msg;
  if (auto s = natslib().js_PublishMsgAsync(js_, &owned, &po); s != NATS_OK) {
    // Still ours when the call failed.
    Pending failed;
    {
      std::lock_guard lock(mu_);
      auto it = pending_.find(msg);
      failed = std::move(it->second);
      pending_.erase(it);
      if (retry_later(msg, failed)) return;
    }
    auto error = not_sent(s, msg);  // names the subject: before the message goes
    natslib().natsMsg_Destroy(owned);
    failed.done(std::move(error));
  }
}

bool Publisher::retry_later(natsMsg* msg, Pending& pending) {
  auto when = std::chrono::steady_clock::now() + pending.backoff;
  if (stopping_ || !pending.until || when >= *pending.until) return false;
  pending.backoff = std::min(pending.backoff * 2, kMaxRetryBackoff);
  retries_.emplace(when, std::pair{msg, std::move(pending)});
  retry_cv_.notify_one();
  return true;
}

void Publisher::retry_loop(std::stop_token stop) {
  std::unique_lock lock(mu_);
  while (!stop.stop_requested()) {
    if (retries_.empty()) {
      retry_cv_.wait(lock, stop, [&] { return !retries_.empty(); });
      continue;
    }
    auto due = retries_.begin()->first;
    if (std::chrono::steady_clock::now() < due) {
      // Until it is due, or an earlier one came.
      retry_cv_.wait_until(lock, stop, due, [&] { return !retries_.empty() && retries_.begin()->first < due; });
      continue;
    }
    auto [msg, pending] = std::move(retries_.begin()->second);
    retries_.erase(retries_.begin());
    lock.unlock();
    auto options = pending.options;
    send(msg, options, std::move(pending));
    lock.lock();
  }
}

void Publisher::on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* self) {
  auto* p = static_cast<Publisher*>(self);
  PublishDone done;
  {
    std::lock_guard lock(p->mu_);
    if (auto it = p->pending_.find(msg); it != p->pending_.end()) {
      Pending pending = std::move(it->second);
      p->pending_.erase(it);
      // Kept, not destroyed: it goes out again from the retry thread.
      if (!pa && !(pae && pae->ErrCode == kWrongLastSequence) && p->retry_later(msg, pending)) return;
      done = std::move(pending.done);
    }
  }
  if (done) {
    if (pa) {
      done(Published{pa->Duplicate});
    } else {
      std::string text = pae && pae->ErrText ? pae->ErrText : "";
      natsStatus s = pae ? pae->Err : NATS_ERR;
      auto err = fail(s == NATS_TIMEOUT ? ErrorKind::unavailable : ErrorKind::internal, "publish to",
                      natslib().natsMsg_GetSubject(msg), text.empty() ? natslib().natsStatus_GetText(s) : text);
      done(std::unexpected(PublishError{err.error(), pae ? pae->ErrCode : jsErrCode{}}));
    }
  }
  natslib().natsMsg_Destroy(msg);
}

}  // namespace fnexec::cluster
