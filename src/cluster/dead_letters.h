// The cluster's dead letters: stream FNEXEC_DEAD_LETTERS, one message per event whose last delivery
// failed, on subject fnexec.dead.<invocation id> (so one lookup finds an entry), its event as the
// data, its facts in Fnexec-* headers and its caller's context in the headers an event carries in
// the invocation stream (event_context.h), so a replay gives the runtime what the first delivery did.
// GET/DELETE /v1/dead-letters/{id} and .../replay in cluster mode (docs/ARCHITECTURE.md "Cluster").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cluster/connection.h"
#include "cluster/local.h"

namespace fnexec::cluster {

inline constexpr const char* kDeadLetterStream = "FNEXEC_DEAD_LETTERS";

struct DeadLetterEntry {
  uint64_t seq = 0;  // the stream sequence; a replay's note moves the entry to a new one
  std::string id;    // the invocation id
  std::string function;
  uint64_t attempts = 0;
  std::string outcome, error, error_type;
  int64_t queued_ms = 0, time_ms = 0;
  std::string replayed_as;           // the invocation its replay queued, "" if none
  invoke::EventContext context;      // the Lambda caller's, as the event's deliveries had it
  std::optional<std::string> event;  // only from find()
};

class DeadLetters {
 public:
  explicit DeadLetters(Connection& conn) : conn_(conn) {}
  // The entry for the event of delivery d and its last result r, to publish with Publisher (the
  // caller retries it until it is stored, settle.h). Its Nats-Msg-Id header is the invocation id, so
  // a publish sent again (the ack lost, or a later delivery settling it) makes no second entry within
  // the stream's duplicate window.
  Result<natsMsg*> entry_message(const Delivery& d, const DeliveryResult& r);
  // Oldest first, seq > after; function "" = all; without events.
  Result<std::vector<DeadLetterEntry>> list(const std::string& function, uint64_t after, uint64_t limit);
  // With its event; nullopt when there is none.
  Result<std::optional<DeadLetterEntry>> find(const std::string& id);
  // false when there was none.
  Result<bool> remove(const std::string& id);
  // Notes that e was replayed as new_id: the entry is written again with the note, the old one deleted.
  Result<> mark_replayed(const DeadLetterEntry& e, const std::string& new_id);

 private:
  Result<natsMsg*> message(const DeadLetterEntry& e, const std::string& event, bool dedupe);
  Connection& conn_;
};

}  // namespace fnexec::cluster
