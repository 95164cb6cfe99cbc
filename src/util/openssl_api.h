// OpenSSL (Debian 12's libssl3: libcrypto.so.3 for digests and SigV4's HMAC, libssl.so.3 for the
// daemon's TLS listener), loaded on first use instead of linked: linked statically, its pointer tables
// were relocated, so copied page by page, at every start of the PIE fnexec (RELRO 445 -> 76 KB, `fnexec
// --version` 292 -> 190 page faults, docs/ARCHITECTURE.md 9b). fnexec's own code calls through the
// tables below; the calls Asio's and Beast's headers make inline reach them through openssl_api.cc's
// extern "C" forwarders.
#pragma once

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#include "util/error.h"

namespace fnexec::util {

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

// Load libcrypto.so.3 (libssl.so.3 and its libcrypto) once per process, thread-safe; the error
// names the library and the package. Entry points that can report an error call these first.
Result<const CryptoApi*> load_libcrypto();
Result<const SslApi*> load_libssl();

// The loaded library, loading it on first use. Where no error can be returned (a digest, Asio's
// calls) a library that cannot be loaded is fatal: the message naming the package goes to stderr
// and the process aborts (libssl3 is installed wherever libcurl4 is).
const CryptoApi& cryptolib();
const SslApi& ssllib();

}  // namespace fnexec::util
