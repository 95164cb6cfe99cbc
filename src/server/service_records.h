// Invocation records as the Service builds them (service.cc), shared with its cluster mode.
#pragma once

#include <string>

#include "pool/pool.h"
#include "server/api.h"
#include "server/state.h"

namespace fnexec::server {

// The JSON of GET /v1/invocations/{id}.
std::string record_json(const InvocationRow& row);

}  // namespace fnexec::server
