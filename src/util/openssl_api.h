// OpenSSL (Debian 12's libssl3: libcrypto.so.3 for digests and SigV4's HMAC, libssl.so.3 for the
// daemon's TLS listener), loaded on first use instead of linked: linked statically, its pointer tables
// were relocated, so copied page by page, at every start of the PIE fnexec (RELRO 445 -> 76 KB, `fnexec
// --version` 292 -> 190 page faults, docs/ARCHITECTURE.md 9b). Every OpenSSL call, fnexec's own and
// those Asio's and Beast's headers make inline, reaches the library through openssl_api.cc's extern
// "C" forwarders.
#pragma once

#include "util/error.h"

namespace fnexec::util {

// Load libcrypto.so.3 (libssl.so.3 and its libcrypto) once per process, thread-safe; the error
// names the library and the package. Entry points that can report an error call these first: an
// OpenSSL call made without it (a digest, Asio's calls) loads the library itself, and one that
// cannot be loaded is fatal there (the message naming the package goes to stderr, then abort).
Result<> load_libcrypto();
Result<> load_libssl();

}  // namespace fnexec::util
