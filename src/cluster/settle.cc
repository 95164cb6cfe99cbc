#include "cluster/settle.h"

#include <atomic>
#include <memory>

#include "cluster/async_queue.h"
#include "cluster/publisher.h"
#include "util/log.h"

namespace fnexec::cluster {

namespace {

// The writes of one delivery's end; the last one to be stored acks the event.
struct Settling {
  natsMsg* msg = nullptr;
  std::string id;
  bool last = false;
  std::chrono::milliseconds retry_delay{0};
  std::atomic<int> writes{0};
  std::atomic<bool> stored{true};
  ~Settling() { natslib().natsMsg_Destroy(msg); }

  // On nats.c's thread (publisher.h): the ack or nak is fire-and-forget, no round trip.
  void written(const char* what, const std::expected<Published, PublishError>& w) {
    if (!w) {
      stored = false;
      spdlog::error("cluster: invocation={} {} not stored: {} (it will be delivered again)", id, what,
                    w.error().error.message());
    }
    if (--writes > 0 || !stored) return;
    natsStatus s = last ? natslib().natsMsg_Ack(msg, nullptr)
                        : natslib().natsMsg_NakWithDelay(msg, retry_delay.count(), nullptr);
    if (s != NATS_OK)
      spdlog::warn("cluster: invocation={} {} failed: {} (it will be delivered again)", id,
                   last ? "ack" : "nak", natslib().natsStatus_GetText(s));
  }
};

}  // namespace

void settle_delivery(Publisher& publisher, DeadLetters& dead_letters, natsMsg* msg, const Delivery& d,
                     const DeliveryResult& r, std::chrono::milliseconds retry_delay,
                     std::chrono::steady_clock::time_point store_until) {
  auto settling = std::make_shared<Settling>();
  settling->msg = msg;
  settling->id = d.id;
  settling->last = r.success || d.delivery >= d.max_deliveries;
  settling->retry_delay = retry_delay;
  natsMsg* record = nullptr;
  auto subject = result_subject(d.id);
  if (auto s = natslib().natsMsg_Create(&record, subject.c_str(), nullptr, r.record_json.data(),
                                        static_cast<int>(r.record_json.size()));
      s != NATS_OK) {
    spdlog::error("cluster: invocation={} result not stored: {} (it will be delivered again)", d.id,
                  natslib().natsStatus_GetText(s));
    return;
  }
  natsMsg* dead = nullptr;
  if (!r.success && settling->last) {
    auto entry = dead_letters.entry_message(d, r);
    if (!entry) {
      spdlog::error("cluster: invocation={} dead letter not stored: {} (it will be delivered again)", d.id,
                    entry.error().message());
      natslib().natsMsg_Destroy(record);
      return;
    }
    dead = *entry;
  }
  // Both writes are in flight before either can finish, so neither acks alone.
  settling->writes = dead ? 2 : 1;
  if (dead)
    publisher.publish_until(dead, nullptr, store_until, [settling](std::expected<Published, PublishError> w) {
      settling->written("dead letter", w);
    });
  publisher.publish_until(record, nullptr, store_until, [settling](std::expected<Published, PublishError> w) {
    settling->written("result", w);
  });
}

}  // namespace fnexec::cluster
