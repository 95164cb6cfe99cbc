#include "util/openssl_api.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "util/dynamic_library.h"

namespace fnexec::util {

namespace {

// Debian 12's libssl3 (OpenSSL 3.0); the soname changes only with an incompatible ABI. libcurl and
// libnats, dlopened as well, need the same sonames, so the loader maps one copy for all three.
constexpr const char* kLibcrypto = "libcrypto.so.3";
constexpr const char* kLibssl = "libssl.so.3";
constexpr const char* kPackage = "apt-get install libssl3";

template <class Api>
struct Loaded {
  Api api;
  std::string error;  // empty: every function resolved
};

#define FNEXEC_OPENSSL_RESOLVE(ret, name, params, args)           \
  if (l.error.empty() && !resolve_symbol(lib, #name, l.api.name)) \
    l.error = std::string("the function " #name " is missing from ") + soname + " (" + ::dlerror() + ")";

Loaded<CryptoApi> load_crypto() {
  Loaded<CryptoApi> l;
  const char* soname = kLibcrypto;
  void* lib = open_private_library(soname, &l.error);
  if (!lib) return l;
  FNEXEC_LIBCRYPTO_FUNCTIONS(FNEXEC_OPENSSL_RESOLVE)
  return l;
}

Loaded<SslApi> load_ssl() {
  Loaded<SslApi> l;
  const char* soname = kLibssl;
  void* lib = open_private_library(soname, &l.error);
  if (!lib) return l;
  FNEXEC_LIBSSL_FUNCTIONS(FNEXEC_OPENSSL_RESOLVE)
  return l;
}
#undef FNEXEC_OPENSSL_RESOLVE

// Function-local statics: the first caller loads, concurrent first callers wait for it.
const Loaded<CryptoApi>& crypto() {
  static const Loaded<CryptoApi> l = load_crypto();
  return l;
}
const Loaded<SslApi>& ssl() {
  static const Loaded<SslApi> l = load_ssl();
  return l;
}

Error load_error(const char* library, const std::string& why) {
  return Error{ErrorKind::unavailable, 0, "load OpenSSL", library, why + "; " + kPackage};
}

[[noreturn]] void die(const Error& e) {
  std::fprintf(stderr, "fnexec: %s\n", e.message().c_str());
  std::abort();
}

}  // namespace

Result<const CryptoApi*> load_libcrypto() {
  const auto& l = crypto();
  if (!l.error.empty()) return std::unexpected(load_error(kLibcrypto, l.error));
  return &l.api;
}

Result<const SslApi*> load_libssl() {
  // The forwarders of Asio's ERR_* and BIO_* calls use libcrypto's table.
  if (auto crypto = load_libcrypto(); !crypto) return std::unexpected(crypto.error());
  const auto& l = ssl();
  if (!l.error.empty()) return std::unexpected(load_error(kLibssl, l.error));
  return &l.api;
}

// On the path of every forwarded call (SSL_read, BIO_write...): one guard check once loaded.
const CryptoApi& cryptolib() {
  const auto& l = crypto();
  if (!l.error.empty()) die(load_error(kLibcrypto, l.error));
  return l.api;
}

const SslApi& ssllib() {
  const auto& l = ssl();
  if (!l.error.empty()) die(load_error(kLibssl, l.error));
  return l.api;
}

}  // namespace fnexec::util

// The calls Asio and Beast make inline (and any other object's): each OpenSSL function fnexec
// references, defined here and forwarded through the table. Declared in the OpenSSL headers included
// above, so a parameter or return type that differs from OpenSSL's is a compile error. fnexec links
// no shared OpenSSL, so the linker exports none of these and libcurl's and libnats's OpenSSL never
// binds to them.
#define FNEXEC_FORWARD_CRYPTO(ret, name, params, args) \
  extern "C" ret name params {                         \
    return fnexec::util::cryptolib().name args;        \
  }
#define FNEXEC_FORWARD_SSL(ret, name, params, args) \
  extern "C" ret name params {                      \
    return fnexec::util::ssllib().name args;        \
  }
FNEXEC_LIBCRYPTO_FUNCTIONS(FNEXEC_FORWARD_CRYPTO)
FNEXEC_LIBSSL_FUNCTIONS(FNEXEC_FORWARD_SSL)
#undef FNEXEC_FORWARD_CRYPTO
#undef FNEXEC_FORWARD_SSL
