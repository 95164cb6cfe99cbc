#include "cluster/publisher.h"

#include <fmt/format.h>

namespace fnexec::cluster {

namespace {
// How long an ack may take before done gets a timeout (the caller decides: retry, nak, fail).
constexpr int64_t kAckWaitMs = 5000;
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
  return p;
}

Publisher::~Publisher() {
  if (!js_) return;
  jsPubOptions po;
  natslib().jsPubOptions_Init(&po);
  po.MaxWait = kAckWaitMs;
  natslib().js_PublishAsyncComplete(js_, &po);
  natslib().jsCtx_Destroy(js_);
  // Acks that never came (NATS gone): their callers learn it now.
  std::map<natsMsg*, PublishDone> left;
  {
    std::lock_guard lock(mu_);
    left.swap(pending_);
  }
  for (auto& [_, done] : left)
    done(std::unexpected(PublishError{nats_fail(NATS_TIMEOUT, "wait for a JetStream ack").error(), {}}));
}

void Publisher::publish(natsMsg* msg, const jsPubOptions* options, PublishDone done) {
  jsPubOptions po;
  if (options) {
    po = *options;
  } else {
    natslib().jsPubOptions_Init(&po);
  }
  if (po.MaxWait == 0) po.MaxWait = kAckWaitMs;
  {
    std::lock_guard lock(mu_);
    pending_.emplace(msg, std::move(done));
  }
  natsMsg* owned = msg;
  if (auto s = natslib().js_PublishMsgAsync(js_, &owned, &po); s != NATS_OK) {
    PublishDone failed;
    {
      std::lock_guard lock(mu_);
      auto it = pending_.find(msg);
      failed = std::move(it->second);
      pending_.erase(it);
    }
    natslib().natsMsg_Destroy(owned);  // still ours when the call failed
    failed(std::unexpected(PublishError{nats_fail(s, "publish to", natslib().natsMsg_GetSubject(msg)).error(), {}}));
  }
}

void Publisher::on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* self) {
  auto* p = static_cast<Publisher*>(self);
  PublishDone done;
  {
    std::lock_guard lock(p->mu_);
    if (auto it = p->pending_.find(msg); it != p->pending_.end()) {
      done = std::move(it->second);
      p->pending_.erase(it);
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
