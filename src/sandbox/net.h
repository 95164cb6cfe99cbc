// The sandbox's network: a fresh network namespace whose only device is lo.
#pragma once

#include "util/error.h"

namespace fnexec::sandbox {

// Sets IFF_UP on lo in the network namespace of the process behind pidfd, using libnl-route.
// Runs in the parent so the child never allocates: the netlink socket is created while this
// thread is in the sandbox's namespace (a socket's namespace is fixed at creation), then we go back.
Result<> bring_up_loopback(int pidfd);

}  // namespace fnexec::sandbox
