#include "util/openssl_api.h"

#include <dlfcn.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "util/dynamic_library.h"

namespace fnexec::util {

namespace {

// X(return type, name, (parameters), (arguments)) for every OpenSSL function fnexec's objects
// reference: its own calls and the inline ones of Asio and Beast, i.e. the undefined symbols `ld`
// reports when fnexec is linked without OpenSSL (a new one is a link error until it is added here).
// Macros such as SSL_CTX_set_min_proto_version or SSL_set_mode expand to SSL_CTX_ctrl / SSL_ctrl.
// clang-format off
#define FNEXEC_LIBCRYPTO_FUNCTIONS(X)                                                               \
  X(long, BIO_ctrl, (BIO* bp, int cmd, long larg, void* parg), (bp, cmd, larg, parg))               \
  X(size_t, BIO_ctrl_pending, (BIO* b), (b))                                                        \
  X(int, BIO_free, (BIO* a), (a))                                                                   \
  X(int, BIO_new_bio_pair, (BIO** bio1, size_t writebuf1, BIO** bio2, size_t writebuf2),            \
    (bio1, writebuf1, bio2, writebuf2))                                                             \
  X(int, BIO_read, (BIO* b, void* data, int dlen), (b, data, dlen))                                 \
  X(int, BIO_write, (BIO* b, const void* data, int dlen), (b, data, dlen))                          \
  X(int, CRYPTO_memcmp, (const void* in_a, const void* in_b, size_t len), (in_a, in_b, len))        \
  X(void, ERR_clear_error, (void), ())                                                              \
  X(unsigned long, ERR_get_error, (void), ())                                                       \
  X(const char*, ERR_reason_error_string, (unsigned long e), (e))                                   \
  X(int, EVP_DigestFinal_ex, (EVP_MD_CTX* ctx, unsigned char* md, unsigned int* s), (ctx, md, s))   \
  X(int, EVP_DigestInit_ex, (EVP_MD_CTX* ctx, const EVP_MD* type, ENGINE* impl), (ctx, type, impl)) \
  X(int, EVP_DigestUpdate, (EVP_MD_CTX* ctx, const void* d, size_t cnt), (ctx, d, cnt))             \
  X(void, EVP_MD_CTX_free, (EVP_MD_CTX* ctx), (ctx))                                                \
  X(EVP_MD_CTX*, EVP_MD_CTX_new, (void), ())                                                        \
  X(const EVP_MD*, EVP_sha256, (void), ())                                                          \
  X(unsigned char*, HMAC,                                                                           \
    (const EVP_MD* evp_md, const void* key, int key_len, const unsigned char* data, size_t data_len, \
     unsigned char* md, unsigned int* md_len),                                                      \
    (evp_md, key, key_len, data, data_len, md, md_len))                                             \
  X(unsigned char*, SHA256, (const unsigned char* d, size_t n, unsigned char* md), (d, n, md))

#define FNEXEC_LIBSSL_FUNCTIONS(X)                                                                  \
  X(int, SSL_CTX_check_private_key, (const SSL_CTX* ctx), (ctx))                                    \
  X(long, SSL_CTX_ctrl, (SSL_CTX* ctx, int cmd, long larg, void* parg), (ctx, cmd, larg, parg))     \
  X(void, SSL_CTX_free, (SSL_CTX* ctx), (ctx))                                                      \
  X(void*, SSL_CTX_get_default_passwd_cb_userdata, (SSL_CTX* ctx), (ctx))                           \
  X(void*, SSL_CTX_get_ex_data, (const SSL_CTX* ctx, int idx), (ctx, idx))                          \
  X(SSL_CTX*, SSL_CTX_new, (const SSL_METHOD* meth), (meth))                                        \
  X(void, SSL_CTX_set_default_passwd_cb_userdata, (SSL_CTX* ctx, void* u), (ctx, u))                \
  X(int, SSL_CTX_set_ex_data, (SSL_CTX* ctx, int idx, void* data), (ctx, idx, data))                \
  X(uint64_t, SSL_CTX_set_options, (SSL_CTX* ctx, uint64_t op), (ctx, op))                          \
  X(int, SSL_CTX_use_PrivateKey_file, (SSL_CTX* ctx, const char* file, int type), (ctx, file, type)) \
  X(int, SSL_CTX_use_certificate_chain_file, (SSL_CTX* ctx, const char* file), (ctx, file))         \
  X(int, SSL_accept, (SSL* ssl), (ssl))                                                             \
  X(int, SSL_connect, (SSL* ssl), (ssl))                                                            \
  X(long, SSL_ctrl, (SSL* ssl, int cmd, long larg, void* parg), (ssl, cmd, larg, parg))             \
  X(void, SSL_free, (SSL* ssl), (ssl))                                                              \
  X(int, SSL_get_error, (const SSL* s, int ret_code), (s, ret_code))                                \
  X(void*, SSL_get_ex_data, (const SSL* ssl, int idx), (ssl, idx))                                  \
  X(int, SSL_get_shutdown, (const SSL* ssl), (ssl))                                                 \
  X(SSL*, SSL_new, (SSL_CTX* ctx), (ctx))                                                           \
  X(int, SSL_read, (SSL* ssl, void* buf, int num), (ssl, buf, num))                                 \
  X(void, SSL_set_bio, (SSL* s, BIO* rbio, BIO* wbio), (s, rbio, wbio))                             \
  X(int, SSL_set_ex_data, (SSL* ssl, int idx, void* data), (ssl, idx, data))                        \
  X(int, SSL_write, (SSL* ssl, const void* buf, int num), (ssl, buf, num))                          \
  X(const SSL_METHOD*, TLS_client_method, (void), ())                                               \
  X(const SSL_METHOD*, TLS_method, (void), ())                                                      \
  X(const SSL_METHOD*, TLS_server_method, (void), ())
// clang-format on

#define FNEXEC_OPENSSL_MEMBER(ret, name, params, args) decltype(&::name) name = nullptr;
struct CryptoApi {
  FNEXEC_LIBCRYPTO_FUNCTIONS(FNEXEC_OPENSSL_MEMBER)
};
struct SslApi {
  FNEXEC_LIBSSL_FUNCTIONS(FNEXEC_OPENSSL_MEMBER)
};
#undef FNEXEC_OPENSSL_MEMBER

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

}  // namespace

Result<> load_libcrypto() {
  const auto& l = crypto();
  if (!l.error.empty()) return std::unexpected(load_error(kLibcrypto, l.error));
  return {};
}

Result<> load_libssl() {
  // The forwarders of Asio's ERR_* and BIO_* calls use libcrypto's table.
  FNEXEC_TRY(load_libcrypto());
  const auto& l = ssl();
  if (!l.error.empty()) return std::unexpected(load_error(kLibssl, l.error));
  return {};
}

}  // namespace fnexec::util

// Every OpenSSL call in fnexec, its own and those Asio and Beast make inline: each function fnexec
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
