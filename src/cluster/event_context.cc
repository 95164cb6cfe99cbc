#include "cluster/event_context.h"

#include <string>

#include "cluster/connection.h"
#include "cluster/nats_api.h"

namespace fnexec::cluster {

namespace {

struct Field {
  const char* header;
  std::string invoke::EventContext::*member;
};
constexpr Field kFields[] = {{kClientContextHeader, &invoke::EventContext::client_context},
                             {kCognitoIdentityHeader, &invoke::EventContext::cognito_identity},
                             {kTraceIdHeader, &invoke::EventContext::trace_id}};

}  // namespace

void set_context_headers(natsMsg* msg, const invoke::EventContext& context) {
  for (const auto& f : kFields)
    if (const auto& value = context.*f.member; !value.empty()) natslib().natsMsgHeader_Set(msg, f.header, value.c_str());
}

invoke::EventContext context_from_headers(natsMsg* msg) {
  invoke::EventContext context;
  for (const auto& f : kFields) context.*f.member = msg_header(msg, f.header);
  return context;
}

size_t context_header_bytes(const invoke::EventContext& context) {
  size_t n = 0;
  for (const auto& f : kFields)
    if (const auto& value = context.*f.member; !value.empty()) n += std::string_view(f.header).size() + value.size() + 4;
  return n;
}

}  // namespace fnexec::cluster
