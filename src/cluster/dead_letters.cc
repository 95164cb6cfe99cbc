#include "cluster/dead_letters.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "cluster/event_context.h"

namespace fnexec::cluster {

namespace {

std::string subject_of(const std::string& id) {
  return "fnexec.dead." + id;
}

int64_t number(natsMsg* msg, const char* name) {
  return std::strtoll(msg_header(msg, name).c_str(), nullptr, 10);
}

DeadLetterEntry read_entry(natsMsg* msg, uint64_t seq, bool with_event) {
  DeadLetterEntry e;
  e.seq = seq;
  e.id = msg_header(msg, "Fnexec-Invocation-Id");
  // The subject names it too (fnexec.dead.<id>); nats.c 3.4 has been seen to drop the header here.
  if (const char* subject = natslib().natsMsg_GetSubject(msg); e.id.empty() && subject && *subject) {
    std::string_view sv(subject);
    e.id = sv.substr(sv.rfind('.') + 1);
  }
  e.function = msg_header(msg, "Fnexec-Function");
  e.attempts = static_cast<uint64_t>(number(msg, "Fnexec-Attempts"));
  e.outcome = msg_header(msg, "Fnexec-Outcome");
  e.error = msg_header(msg, "Fnexec-Error");
  e.error_type = msg_header(msg, "Fnexec-Error-Type");
  e.queued_ms = number(msg, "Fnexec-Queued-Ms");
  e.time_ms = number(msg, "Fnexec-Time-Ms");
  e.replayed_as = msg_header(msg, "Fnexec-Replayed-As");
  e.context = context_from_headers(msg);
  if (with_event) {
    const char* data = natslib().natsMsg_GetData(msg);
    e.event = data ? std::string(data, static_cast<size_t>(natslib().natsMsg_GetDataLength(msg))) : std::string();
  }
  return e;
}

}  // namespace

Result<natsMsg*> DeadLetters::entry_message(const Delivery& d, const DeliveryResult& r) {
  DeadLetterEntry e;
  e.id = d.id;
  e.function = d.function;
  // A delivery past the policy only settles the last one (AsyncQueue::deliver): it made no attempt.
  e.attempts = std::min(d.delivery, d.max_deliveries);
  e.outcome = r.outcome;
  e.error = r.error;
  e.error_type = r.error_type;
  e.queued_ms = d.queued_ms;
  e.context = d.context;
  e.time_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  return message(e, d.event, true);
}

Result<natsMsg*> DeadLetters::message(const DeadLetterEntry& e, const std::string& event, bool dedupe) {
  auto subject = subject_of(e.id);
  natsMsg* msg = nullptr;
  if (auto s = natslib().natsMsg_Create(&msg, subject.c_str(), nullptr, event.data(), static_cast<int>(event.size()));
      s != NATS_OK)
    return nats_fail(s, "create dead letter", e.id);
  natslib().natsMsgHeader_Set(msg, "Fnexec-Invocation-Id", e.id.c_str());
  natslib().natsMsgHeader_Set(msg, "Fnexec-Function", e.function.c_str());
  natslib().natsMsgHeader_Set(msg, "Fnexec-Attempts", std::to_string(e.attempts).c_str());
  natslib().natsMsgHeader_Set(msg, "Fnexec-Outcome", e.outcome.c_str());
  natslib().natsMsgHeader_Set(msg, "Fnexec-Error", e.error.c_str());
  natslib().natsMsgHeader_Set(msg, "Fnexec-Error-Type", e.error_type.c_str());
  natslib().natsMsgHeader_Set(msg, "Fnexec-Queued-Ms", std::to_string(e.queued_ms).c_str());
  natslib().natsMsgHeader_Set(msg, "Fnexec-Time-Ms", std::to_string(e.time_ms).c_str());
  if (!e.replayed_as.empty()) natslib().natsMsgHeader_Set(msg, "Fnexec-Replayed-As", e.replayed_as.c_str());
  set_context_headers(msg, e.context);
  // As headers, not jsPubOptions: the message may be sent again by Publisher::publish_until, which
  // keeps no pointers of its options.
  if (dedupe) natslib().natsMsgHeader_Set(msg, "Nats-Msg-Id", e.id.c_str());
  natslib().natsMsgHeader_Set(msg, "Nats-Expected-Stream", kDeadLetterStream);
  return msg;
}

Result<std::vector<DeadLetterEntry>> DeadLetters::list(const std::string& function, uint64_t after, uint64_t limit) {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr{};
  if (auto s = natslib().js_GetStreamInfo(&si, conn_.js(), kDeadLetterStream, nullptr, &jerr); s != NATS_OK)
    return nats_fail(s, "read stream", kDeadLetterStream);
  uint64_t first = std::max(si->State.FirstSeq, after + 1), last = si->State.LastSeq, count = si->State.Msgs;
  natslib().jsStreamInfo_Destroy(si);
  std::vector<DeadLetterEntry> out;
  // One get per sequence: the list is meant to stay short (entries are replayed or removed).
  for (uint64_t seq = first; count && seq <= last && out.size() < limit; ++seq) {
    natsMsg* msg = nullptr;
    natsStatus s = natslib().js_GetMsg(&msg, conn_.js(), kDeadLetterStream, seq, nullptr, &jerr);
    if (s == NATS_NOT_FOUND) continue;  // deleted
    if (s != NATS_OK) return nats_fail(s, "read dead letter", std::to_string(seq));
    auto e = read_entry(msg, seq, false);
    natslib().natsMsg_Destroy(msg);
    if (function.empty() || e.function == function) out.push_back(std::move(e));
  }
  return out;
}

Result<std::optional<DeadLetterEntry>> DeadLetters::find(const std::string& id) {
  natsMsg* msg = nullptr;
  jsErrCode jerr{};
  auto subject = subject_of(id);
  natsStatus s = natslib().js_GetLastMsg(&msg, conn_.js(), kDeadLetterStream, subject.c_str(), nullptr, &jerr);
  if (s == NATS_NOT_FOUND) return std::nullopt;
  if (s != NATS_OK) return nats_fail(s, "read dead letter " + id, kDeadLetterStream);
  auto e = read_entry(msg, natslib().natsMsg_GetSequence(msg), true);
  natslib().natsMsg_Destroy(msg);
  return e;
}

Result<bool> DeadLetters::remove(const std::string& id) {
  auto e = FNEXEC_TRY(find(id));
  if (!e) return false;
  jsErrCode jerr{};
  if (auto s = natslib().js_DeleteMsg(conn_.js(), kDeadLetterStream, e->seq, nullptr, &jerr); s != NATS_OK)
    return nats_fail(s, "delete dead letter " + id, kDeadLetterStream);
  return true;
}

Result<> DeadLetters::mark_replayed(const DeadLetterEntry& e, const std::string& new_id) {
  DeadLetterEntry noted = e;
  noted.replayed_as = new_id;
  // Without a Nats-Msg-Id: the original's id is still in the duplicate window and would drop it.
  natsMsg* msg = FNEXEC_TRY(message(noted, e.event.value_or(""), false));
  jsPubAck* ack = nullptr;
  jsErrCode jerr{};
  natsStatus published = natslib().js_PublishMsg(&ack, conn_.js(), msg, nullptr, &jerr);
  natslib().natsMsg_Destroy(msg);
  if (published != NATS_OK) return nats_fail(published, "publish dead letter " + e.id, kDeadLetterStream);
  natslib().jsPubAck_Destroy(ack);
  if (auto s = natslib().js_DeleteMsg(conn_.js(), kDeadLetterStream, e.seq, nullptr, &jerr); s != NATS_OK && s != NATS_NOT_FOUND)
    return nats_fail(s, "delete replayed dead letter " + e.id, kDeadLetterStream);
  return {};
}

}  // namespace fnexec::cluster
