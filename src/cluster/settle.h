// How a delivery of an async event ends (docs/ARCHITECTURE.md "Cluster": delivery): its record and,
// after a failed last delivery, its dead letter are stored first, each sent again by the publisher
// until `store_until`; only when both are stored is the event acked (or nak'ed with the retry's
// delay). A write that fails until then leaves the event unacked, so JetStream delivers it again
// after AckWait and that delivery settles it: a lost write makes a redelivery, never a loss.
#pragma once

#include <nats/nats.h>

#include <chrono>

#include "cluster/dead_letters.h"
#include "cluster/local.h"

namespace fnexec::cluster {

class Publisher;

// Takes msg (the delivery's JetStream message). retry_delay: the nak's delay when r failed and d
// was not the last delivery.
void settle_delivery(Publisher& publisher, DeadLetters& dead_letters, natsMsg* msg, const Delivery& d,
                     const DeliveryResult& r, std::chrono::milliseconds retry_delay,
                     std::chrono::steady_clock::time_point store_until);

}  // namespace fnexec::cluster
