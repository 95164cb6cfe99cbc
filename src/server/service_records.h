// Invocation records as the Service builds them (service.cc), shared with its cluster mode.
#pragma once

#include <string>

#include "pool/pool.h"
#include "server/api.h"
#include "server/state.h"

namespace fnexec::server {

// The JSON of GET /v1/invocations/{id}.
std::string record_json(const InvocationRow& row);
// The record of a finished invocation, from what the pool returned.
InvocationEnd record_end(const std::string& id, const pool::InvocationResult& res, Outcome outcome);
// The error a failed invocation's record and reply carry.
std::string record_failure(const pool::FunctionSpec& spec, const pool::InvocationResult& res, Outcome outcome);

}  // namespace fnexec::server
