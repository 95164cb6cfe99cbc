// TLS for the daemon's TCP listener: the server context (certificate chain, key, TLS 1.2+), loaded
// once at start-up so a bad certificate or key stops `fnexec serve` with the file named.
#pragma once

#include <filesystem>
#include <memory>

#include "util/error.h"

namespace boost::asio::ssl {
class context;
}

namespace fnexec::server {

// cert: PEM certificate chain (leaf first); key: its PEM private key. Errors name the file and say
// whether it was unreadable, not PEM, or a key that does not belong to the certificate.
Result<std::shared_ptr<boost::asio::ssl::context>> make_tls_context(const std::filesystem::path& cert,
                                                                    const std::filesystem::path& key);

}  // namespace fnexec::server
