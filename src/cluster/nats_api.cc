#include "cluster/nats_api.h"

#include <dlfcn.h>

#include <cstdlib>
#include <string>

#include "util/dynamic_library.h"

namespace fnexec::cluster {

namespace {

// The soname of Debian 12's libnats3.4; nats.c changes it with every minor version.
constexpr const char* kLibrary = "libnats.so.3.4";

struct Loaded {
  NatsApi api;
  std::string error;  // empty: every function resolved
};

Loaded load() {
  Loaded l;
  void* lib = util::open_private_library(kLibrary, &l.error);
  if (!lib) return l;
#define FNEXEC_NATS_RESOLVE(name)                                                       \
  if (l.error.empty() && !util::resolve_symbol(lib, #name, l.api.name))                 \
    l.error = std::string("the function " #name " is missing from ") + kLibrary + " (" + \
              ::dlerror() + ")";
  FNEXEC_NATS_FUNCTIONS(FNEXEC_NATS_RESOLVE)
#undef FNEXEC_NATS_RESOLVE
  return l;
}

const Loaded& loaded() {
  static const Loaded l = load();
  return l;
}

}  // namespace

Result<const NatsApi*> load_nats() {
  const Loaded& l = loaded();
  if (!l.error.empty())
    return fail(ErrorKind::unavailable, "load the NATS client library", kLibrary,
                l.error + "; a daemon with cluster_nats needs nats.c: apt-get install libnats3.4");
  return &l.api;
}

const NatsApi& natslib() {
  const Loaded& l = loaded();
  if (!l.error.empty()) std::abort();  // a caller without a Connection: a bug, not a user error
  return l.api;
}

}  // namespace fnexec::cluster
