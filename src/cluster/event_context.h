// A Lambda caller's context (invoke::EventContext: client context, Cognito identity, trace id) in
// the headers of a NATS message, for the events that cross nodes: a forwarded sync invocation
// (forward.cc) and an async one in the invocation stream (async_queue.cc). The values are one line
// each (the Invoke API checked them), as NATS headers must be; an absent header is a field not given.
#pragma once

#include <nats/nats.h>

#include <cstddef>

#include "invoke/event_session.h"

namespace fnexec::cluster {

inline constexpr const char* kClientContextHeader = "Fnexec-Client-Context";
inline constexpr const char* kCognitoIdentityHeader = "Fnexec-Cognito-Identity";
inline constexpr const char* kTraceIdHeader = "Fnexec-Trace-Id";

// Sets a header per non-empty field.
void set_context_headers(natsMsg* msg, const invoke::EventContext& context);
invoke::EventContext context_from_headers(natsMsg* msg);
// What the headers add to the message, for the max_payload checks.
size_t context_header_bytes(const invoke::EventContext& context);

}  // namespace fnexec::cluster
