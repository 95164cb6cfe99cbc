// Invocation records as the Service builds them (service.cc), shared with its cluster mode.
#pragma once

#include <string>

#include "pool/pool.h"
#include "server/api.h"
#include "server/state.h"

namespace fnexec::server {

// The JSON of GET /v1/invocations/{id}.
std::string record_json(const InvocationRow& row);
// One entry of GET /v1/dead-letters (with its event when it has one), local or from the cluster.
std::string dead_letter_json(const DeadLetter& d);

}  // namespace fnexec::server
