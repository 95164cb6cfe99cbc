// One owned libnl socket: the route links (net/link.h) and the nftables map elements
// (net/nft_elements.h) each talk to the kernel through one, differing only in protocol.
#pragma once

#include <memory>
#include <string_view>

#include "util/error.h"

struct nl_sock;

namespace fnexec::net {

struct NlSocketFree {
  void operator()(nl_sock* s) const;
};
using NlSocket = std::unique_ptr<nl_sock, NlSocketFree>;

// A socket of netlink PROTOCOL (NETLINK_ROUTE, NETLINK_NETFILTER) connected in the calling
// thread's network namespace; WHAT names it in errors.
Result<NlSocket> connect_netlink(int protocol, std::string_view what);

}  // namespace fnexec::net
