#include "net/netlink_socket.h"

#include <netlink/netlink.h>

#include <string>

namespace fnexec::net {

void NlSocketFree::operator()(nl_sock* s) const {
  nl_socket_free(s);
}

Result<NlSocket> connect_netlink(int protocol, std::string_view what) {
  NlSocket sock(nl_socket_alloc());
  if (!sock) return fail(ErrorKind::internal, "allocate " + std::string(what));
  if (int rc = nl_connect(sock.get(), protocol); rc < 0)
    return fail(ErrorKind::unavailable, "connect " + std::string(what), {}, nl_geterror(rc));
  return sock;
}

}  // namespace fnexec::net
