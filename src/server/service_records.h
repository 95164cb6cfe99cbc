// Invocation records as the Service builds them (service.cc), shared with its cluster mode.
#pragma once

#include <string>

#include "pool/pool.h"
#include "server/api.h"
#include "server/state.h"

namespace fnexec::server {

struct SyncRun;

// The JSON of GET /v1/invocations/{id}.
std::string record_json(const InvocationRow& row);
// record_json with the cluster's field: the node that ran it ("" leaves it out).
std::string cluster_record(const InvocationRow& row, const std::string& node);
// The finished record (status done) of what finish() stores.
InvocationRow finished_row(const InvocationEnd& end);
// A sync invocation's record as its node stores it, from its run.
InvocationRow sync_record(const SyncRun& run);
// One entry of GET /v1/dead-letters (with its event when it has one), local or from the cluster.
std::string dead_letter_json(const DeadLetter& d);

}  // namespace fnexec::server
