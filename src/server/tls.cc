#include "server/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <boost/asio/ssl/context.hpp>

#include "util/openssl_api.h"

namespace fnexec::server {

namespace {

// OpenSSL's most recent error (the queue is cleared): its reason code and text, e.g. "no start line".
struct OpensslError {
  int reason = 0;
  std::string text = "unknown OpenSSL error";
};
OpensslError last_openssl_error() {
  unsigned long last = 0;
  while (unsigned long e = ERR_get_error()) last = e;
  OpensslError out;
  if (!last) return out;
  out.reason = ERR_GET_REASON(last);
  const char* text = ERR_reason_error_string(last);
  out.text = text ? text : "OpenSSL error " + std::to_string(last);
  return out;
}
std::string openssl_reason() { return last_openssl_error().text; }

Result<> readable(const std::filesystem::path& path, const char* what) {
  if (path.empty())
    return fail(ErrorKind::invalid, std::string("use ") + what, {}, "tls_cert and tls_key go together: set both");
  if (::access(path.c_str(), R_OK) != 0) return fail_errno(std::string("read ") + what, path.string());
  return {};
}

}  // namespace

Result<std::shared_ptr<boost::asio::ssl::context>> make_tls_context(const std::filesystem::path& cert,
                                                                    const std::filesystem::path& key) {
  FNEXEC_TRY(readable(cert, "TLS certificate (tls_cert)"));
  FNEXEC_TRY(readable(key, "TLS private key (tls_key)"));
  // Before Asio's context, whose constructor calls OpenSSL: a missing library is an error here.
  FNEXEC_TRY(util::load_libssl());
  auto ctx = std::make_shared<boost::asio::ssl::context>(boost::asio::ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  ERR_clear_error();
  // TLS 1.0 and 1.1 are deprecated (RFC 8996); no compression (CRIME), no renegotiation (a
  // client-driven CPU cost), and the server's cipher order.
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_use_certificate_chain_file(native, cert.c_str()) != 1)
    return fail(ErrorKind::invalid, "load TLS certificate (tls_cert)", cert.string(),
                openssl_reason() + ": expected a PEM certificate chain, leaf first");
  if (SSL_CTX_use_PrivateKey_file(native, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    auto e = last_openssl_error();
    // OpenSSL compares the key with the certificate as it loads it.
    if (e.reason == X509_R_KEY_VALUES_MISMATCH)
      return fail(ErrorKind::invalid, "use TLS private key (tls_key)", key.string(),
                  "it does not belong to the certificate in " + cert.string() + " (" + e.text + ")");
    return fail(ErrorKind::invalid, "load TLS private key (tls_key)", key.string(),
                e.text + ": expected an unencrypted PEM private key");
  }
  if (SSL_CTX_check_private_key(native) != 1)
    return fail(ErrorKind::invalid, "use TLS private key (tls_key)", key.string(),
                "it does not belong to the certificate in " + cert.string() + " (" + openssl_reason() + ")");
  return ctx;
}

}  // namespace fnexec::server
